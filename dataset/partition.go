package dataset

import (
	"cmp"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
)

// newRand returns a PCG-backed generator for a seed and a purpose, so that
// different partitioners given the same seed draw different streams.
func newRand(seed uint64, purpose uint64) *rand.Rand {
	return rand.New(rand.NewPCG(splitmix64(seed), splitmix64(seed^splitmix64(purpose))))
}

// minAlpha keeps logGamma's samples finite.
const minAlpha = 1e-6

// MaxClients bounds the number of clients DirichletPartition and
// StandardAvailabilities accept.
const MaxClients = 1 << 20

const (
	purposeSplit = iota + 0x5eed0000
	purposeDirichlet
)

// Split divides d into a training and a test set, stratified by label: the
// test set has round(testFrac * len(d.Records)) records, and each label
// (unknown, -1, being a label of its own) contributes floor or ceil of
// testFrac times its count, chosen at random among its records. Both sets
// keep d's schema and the records' original order. testFrac is clamped to
// [0, 1] (NaN counts as 0). The same seed gives the same split.
func Split(d *Dataset, testFrac float64, seed uint64) (train, test *Dataset) {
	if d == nil {
		return &Dataset{}, &Dataset{}
	}
	if math.IsNaN(testFrac) {
		testFrac = 0
	}
	testFrac = min(max(testFrac, 0), 1)
	strata := make(map[int][]int)
	for i := range d.Records {
		l := d.Records[i].Label
		strata[l] = append(strata[l], i)
	}
	labels := make([]int, 0, len(strata))
	for l := range strata {
		labels = append(labels, l)
	}
	slices.Sort(labels)
	// Each stratum gets floor(testFrac*count) test records; the strata with
	// the largest remainders get one more until the total is
	// round(testFrac*len(d.Records)).
	take := make(map[int]int, len(strata))
	remainder := func(l int) float64 { return testFrac*float64(len(strata[l])) - float64(take[l]) }
	total := 0
	for _, l := range labels {
		take[l] = int(math.Floor(testFrac * float64(len(strata[l]))))
		total += take[l]
	}
	byRemainder := slices.Clone(labels)
	slices.SortStableFunc(byRemainder, func(a, b int) int { return cmp.Compare(remainder(b), remainder(a)) })
	want := int(math.Round(testFrac * float64(len(d.Records))))
	for j := 0; total < want && j < len(byRemainder); j++ {
		take[byRemainder[j]]++
		total++
	}
	rng := newRand(seed, purposeSplit)
	isTest := make([]bool, len(d.Records))
	for _, l := range labels {
		idx := strata[l]
		rng.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
		for _, i := range idx[:take[l]] {
			isTest[i] = true
		}
	}
	var trainIdx, testIdx []int
	for i, t := range isTest {
		if t {
			testIdx = append(testIdx, i)
		} else {
			trainIdx = append(trainIdx, i)
		}
	}
	return d.Subset(trainIdx), d.Subset(testIdx)
}

// DirichletPartition splits the indices of labels among clients with label
// skew drawn from a Dirichlet distribution (Hsu et al. 2019, "Measuring the
// effects of non-identical data distribution"): for each class, proportions
// p ~ Dir(alpha, ..., alpha) over the clients decide how many of that
// class's indices (shuffled) each client gets, rounding by largest
// remainder. Small alpha (0.1) gives each client few classes; large alpha
// approaches an IID split, and alpha = +Inf, alpha <= 0 and NaN give exactly
// IID proportions; alpha below 1e-6 counts as 1e-6. Labels outside [0, numClasses) (unknown labels) are
// spread as one more class.
//
// The result has one ascending index list per client; every index of labels
// is in exactly one list. When len(labels) >= clients no list is empty: a
// client left empty by the draw gets one index, chosen at random, from the
// client that has the most. clients outside [1, MaxClients] gives nil. The
// same arguments give the same partition.
func DirichletPartition(labels []int, numClasses, clients int, alpha float64, seed uint64) [][]int {
	if clients <= 0 || clients > MaxClients {
		return nil
	}
	iid := alpha <= 0 || math.IsNaN(alpha) || math.IsInf(alpha, 1)
	alpha = max(alpha, minAlpha)
	rng := newRand(seed, purposeDirichlet)

	byClass := make(map[int][]int) // label -> indices; -1 holds unknown labels
	for i, l := range labels {
		if l < 0 || l >= numClasses {
			l = -1
		}
		byClass[l] = append(byClass[l], i)
	}
	classes := make([]int, 0, len(byClass))
	for l := range byClass {
		classes = append(classes, l)
	}
	slices.Sort(classes)
	parts := make([][]int, clients)
	logs := make([]float64, clients)
	props := make([]float64, clients)
	order := make([]int, clients)
	counts := make([]int, clients)
	for _, l := range classes {
		idx := byClass[l]
		rng.Shuffle(len(idx), func(a, b int) { idx[a], idx[b] = idx[b], idx[a] })
		if iid {
			for k := range props {
				props[k] = 1 / float64(clients)
			}
		} else {
			for k := range logs {
				logs[k] = logGamma(rng, alpha)
			}
			softmax(props, logs)
		}
		// Largest remainder, ties broken at random so that no client is
		// favoured class after class.
		assigned := 0
		for k, p := range props {
			counts[k] = int(math.Floor(p * float64(len(idx))))
			assigned += counts[k]
		}
		for k := range order {
			order[k] = k
		}
		rng.Shuffle(len(order), func(a, b int) { order[a], order[b] = order[b], order[a] })
		slices.SortStableFunc(order, func(a, b int) int {
			ra := props[a]*float64(len(idx)) - float64(counts[a])
			rb := props[b]*float64(len(idx)) - float64(counts[b])
			return cmp.Compare(rb, ra)
		})
		for j := 0; assigned < len(idx); j++ {
			counts[order[j%clients]]++
			assigned++
		}
		off := 0
		for k, c := range counts {
			parts[k] = append(parts[k], idx[off:off+c]...)
			off += c
		}
	}
	if len(labels) >= clients {
		for k := range parts {
			if len(parts[k]) > 0 {
				continue
			}
			big := 0
			for j := range parts {
				if len(parts[j]) > len(parts[big]) {
					big = j
				}
			}
			pick := rng.IntN(len(parts[big]))
			parts[k] = append(parts[k], parts[big][pick])
			parts[big] = slices.Delete(parts[big], pick, pick+1)
		}
	}
	for _, p := range parts {
		slices.Sort(p)
	}
	return parts
}

// logGamma returns the logarithm of a Gamma(a, 1) sample (Marsaglia and
// Tsang 2000, with the a < 1 boost). Working in logs keeps tiny alphas,
// whose samples underflow float64, usable.
func logGamma(rng *rand.Rand, a float64) float64 {
	if a < 1 {
		u := 1 - rng.Float64() // (0, 1]
		return logGamma(rng, a+1) + math.Log(u)/a
	}
	d := a - 1.0/3
	c := 1 / math.Sqrt(9*d)
	for {
		x := rng.NormFloat64()
		v := 1 + c*x
		if v <= 0 {
			continue
		}
		v = v * v * v
		u := 1 - rng.Float64()
		if math.Log(u) < 0.5*x*x+d-d*v+d*math.Log(v) {
			return math.Log(d) + math.Log(v)
		}
	}
}

// softmax sets dst to exp(x) normalised to sum 1.
func softmax(dst, x []float64) {
	top := slices.Max(x)
	sum := 0.0
	for i, v := range x {
		dst[i] = math.Exp(v - top)
		sum += dst[i]
	}
	for i := range dst {
		dst[i] /= sum
	}
}

// Availability says which modalities a client holds, indexed by [Modality].
type Availability [NumModalities]bool

// AllModalities is the availability of a client that holds every modality.
var AllModalities = Availability{true, true, true}

// String lists the available modalities joined by "+", e.g. "text+tabular",
// or "none".
func (a Availability) String() string {
	names := a.Names()
	if names == nil {
		return "none"
	}
	return strings.Join(names, "+")
}

// Names lists the available modalities, in canonical order.
func (a Availability) Names() []string {
	var names []string
	for _, m := range Modalities {
		if a[m] {
			names = append(names, m.String())
		}
	}
	return names
}

// ApplyAvailability returns d with every unavailable modality removed from
// every record; records left with no modality are dropped. The schema is
// unchanged (a client without images still knows their dimensions), so that
// every client's data fits the same model. Payloads are shared with d.
func ApplyAvailability(d *Dataset, a Availability) *Dataset {
	if d == nil {
		return &Dataset{}
	}
	out := &Dataset{Schema: d.Schema, Records: make([]Record, 0, len(d.Records))}
	for i := range d.Records {
		r := d.Records[i]
		for _, m := range Modalities {
			if !a[m] {
				r = r.Without(m)
			}
		}
		if r.Has(Text) || r.Has(Image) || r.Has(Tabular) {
			out.Records = append(out.Records, r)
		}
	}
	return out
}

// standardPattern is the cycle StandardAvailabilities repeats.
var standardPattern = [4]Availability{
	{Text: true, Image: true, Tabular: true},
	{Text: true, Tabular: true},
	{Image: true, Tabular: true},
	{Text: true, Image: true},
}

// StandardAvailabilities returns the modality availability of each of
// clients demo clients, a fixed pattern that gives every modality to at
// least two clients out of four and every pair of modalities to someone:
// client 0 has all three, client 1 text and tabular, client 2 image and
// tabular, client 3 text and image, then the pattern repeats (client 4 has
// all three, ...). A single client has everything; clients outside
// [1, MaxClients] gives nil.
func StandardAvailabilities(clients int) []Availability {
	if clients <= 0 || clients > MaxClients {
		return nil
	}
	out := make([]Availability, clients)
	for i := range out {
		out[i] = standardPattern[i%len(standardPattern)]
	}
	return out
}
