package dataset

import (
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
)

// SyntheticClasses names the four classes of [Synthetic]. Do not modify it;
// datasets get their own copy.
var SyntheticClasses = []string{"amber", "birch", "cedar", "dune"}

// SyntheticTabularFields names the tabular fields of [Synthetic], in schema
// order. Do not modify it.
var SyntheticTabularFields = []string{"age", "income", "score_a", "score_b", "visits", "ratio"}

// Synthetic defaults and bounds.
const (
	DefaultSyntheticImageSize = 16
	DefaultSyntheticFlip      = 0.02
	minSyntheticImageSize     = 10 // the longest bar is 10 px
	maxSyntheticImageSize     = 256
	maxSyntheticN             = 1 << 24
)

// tabularShift moves the latent pair (z1, z2) by (+s, -s) for shown bit 1
// and (-s, +s) for bit 0. z1-z2 then has mean ±2s and variance 2, so the
// best linear rule on the standardised features recovers the shown bit with
// probability Phi(sqrt(2)*s) ~= 0.98.
const tabularShift = 1.45

// SyntheticConfig configures [Synthetic].
type SyntheticConfig struct {
	// N is the number of records; N <= 0 gives a dataset with none, and N
	// is capped at 1<<24.
	N int
	// Seed makes the data: the same config gives the same dataset. Record i
	// depends only on Seed and i, so a smaller N gives a prefix.
	Seed uint64
	// ImageSize is the side of the square images: 0 means
	// DefaultSyntheticImageSize (16); other values are clamped to
	// [10, 256].
	ImageSize int
	// Flip is the probability that a modality shows the wrong bit,
	// independently per modality and record: 0 (or NaN) means
	// DefaultSyntheticFlip (0.02), a negative value means no flips, and
	// values above 0.5 are clamped to 0.5.
	Flip float64
}

func (c SyntheticConfig) normalized() SyntheticConfig {
	c.N = min(max(c.N, 0), maxSyntheticN)
	if c.ImageSize == 0 {
		c.ImageSize = DefaultSyntheticImageSize
	}
	c.ImageSize = min(max(c.ImageSize, minSyntheticImageSize), maxSyntheticImageSize)
	switch {
	case c.Flip == 0 || math.IsNaN(c.Flip):
		c.Flip = DefaultSyntheticFlip
	case c.Flip < 0:
		c.Flip = 0
	case c.Flip > 0.5:
		c.Flip = 0.5
	}
	return c
}

// SyntheticBits returns the bit each modality of a [Synthetic] record with
// the given label carries before flipping. With label = 2*b1 + b2, text
// carries b1, image b2 and tabular b1 XOR b2. Each bit alone leaves two
// labels equally likely; any two determine the label, and the third is a
// parity check. Only the low two bits of label are used.
func SyntheticBits(label int) (text, image, tabular int) {
	b1, b2 := (label>>1)&1, label&1
	return b1, b2, b1 ^ b2
}

// Synthetic generates a deterministic multimodal classification task in
// which no modality alone can beat 50% accuracy but the three together reach
// about 96% (an oracle that decodes every modality perfectly and resolves
// disagreements by parity; with Flip 0.02).
//
// Every record has all three modalities and a label y uniform in {0..3}
// (classes [SyntheticClasses]). Each modality shows its bit from
// [SyntheticBits], flipped with probability Flip:
//
//   - Text: 6 to 14 lower-case words: filler words, 2 or 3 words from the
//     shown bit's signal group and, with probability 0.3, one word of the
//     other group as a distractor, all at random positions.
//   - Image: 1 x ImageSize x ImageSize gray. A bright bar 2 px thick and 6
//     to 10 px long, horizontal for bit 0 and vertical for bit 1, at a random
//     position, a 2x2 blob of brightness 0.6 elsewhere at random, then
//     Gaussian noise (sigma 0.25), clipped to [0, 1].
//   - Tabular: [SyntheticTabularFields], on deliberately different scales.
//     Latent z1, z2 ~ N(0, 1) shifted by ±1.45 in opposite directions by the
//     shown bit; income = 42000 + 15000*z1, score_a = 10 + 3*z2 and
//     ratio = 0.5 + 0.05*(z1-z2) + 0.02*N(0,1) carry the bit; age
//     (50 + 12*N), score_b (5 + 2*N) and visits (round(max(0, 4 + 2*N)))
//     are nuisance. A linear model on standardised features recovers the
//     shown bit about 98% of the time.
//
// Ids are "syn-000001", "syn-000002", .... The generator uses math/rand/v2's
// PCG, so a given config yields the same data for a given Go release.
func Synthetic(cfg SyntheticConfig) *Dataset {
	d, _ := synthetic(cfg, false)
	return d
}

// synthetic generates the dataset and, when wantShown, the bit each
// modality shows for each record (for tests).
func synthetic(cfg SyntheticConfig, wantShown bool) (*Dataset, [][NumModalities]int) {
	cfg = cfg.normalized()
	s := cfg.ImageSize
	d := &Dataset{
		Schema: Schema{
			Classes:       slices.Clone(SyntheticClasses),
			TabularFields: slices.Clone(SyntheticTabularFields),
			ImageC:        1, ImageH: s, ImageW: s,
		},
		Records: make([]Record, cfg.N),
	}
	var shown [][NumModalities]int
	if wantShown {
		shown = make([][NumModalities]int, cfg.N)
	}
	pix := make([]float32, cfg.N*s*s)
	tab := make([]float32, cfg.N*len(SyntheticTabularFields))
	imgs := make([]ImageData, cfg.N)
	src := rand.NewPCG(0, 0)
	rng := rand.New(src)
	nf := len(SyntheticTabularFields)
	for i := range d.Records {
		src.Seed(splitmix64(cfg.Seed), splitmix64(cfg.Seed^splitmix64(uint64(i)+1)))
		y := rng.IntN(len(SyntheticClasses))
		var bits [NumModalities]int
		bits[Text], bits[Image], bits[Tabular] = SyntheticBits(y)
		for m := range bits {
			if rng.Float64() < cfg.Flip {
				bits[m] ^= 1
			}
		}
		img := &imgs[i]
		*img = ImageData{C: 1, H: s, W: s, Pix: pix[i*s*s : (i+1)*s*s : (i+1)*s*s]}
		text := syntheticText(rng, bits[Text])
		syntheticImage(rng, img, bits[Image])
		row := tab[i*nf : (i+1)*nf : (i+1)*nf]
		syntheticTabular(rng, row, bits[Tabular])
		d.Records[i] = Record{
			ID:      fmt.Sprintf("syn-%06d", i+1),
			Label:   y,
			Text:    text,
			Image:   img,
			Tabular: row,
		}
		if wantShown {
			shown[i] = bits
		}
	}
	return d, shown
}

// splitmix64 is the SplitMix64 finaliser: it spreads seeds that differ in a
// few bits over the whole PCG state.
func splitmix64(x uint64) uint64 {
	x += 0x9e3779b97f4a7c15
	x = (x ^ (x >> 30)) * 0xbf58476d1ce4e5b9
	x = (x ^ (x >> 27)) * 0x94d049bb133111eb
	return x ^ (x >> 31)
}

// Signal words of the text modality: group 0 for shown bit 0, group 1 for
// shown bit 1. No filler word is in either group.
var syntheticSignal = [2][]string{
	{"stable", "steady", "calm", "mild", "routine", "normal", "gentle", "settled"},
	{"acute", "sharp", "severe", "sudden", "intense", "urgent", "critical", "unstable"},
}

// syntheticFiller holds neutral words (120 of them).
var syntheticFiller = []string{
	"the", "and", "with", "for", "was", "were", "has", "had", "after", "before",
	"during", "over", "under", "into", "from", "this", "that", "then", "also", "again",
	"patient", "visit", "reported", "noted", "review", "follow", "up", "clinic", "record", "note",
	"morning", "evening", "week", "month", "day", "year", "today", "recent", "previous", "next",
	"family", "history", "home", "work", "travel", "diet", "sleep", "walk", "exercise", "water",
	"left", "right", "upper", "lower", "side", "back", "arm", "leg", "hand", "knee",
	"check", "exam", "test", "sample", "scan", "result", "report", "plan", "call", "letter",
	"doctor", "nurse", "staff", "team", "desk", "room", "ward", "office", "phone", "form",
	"some", "several", "few", "many", "each", "other", "same", "new", "old", "small",
	"large", "long", "short", "high", "low", "early", "late", "first", "second", "third",
	"asked", "said", "told", "seen", "given", "taken", "made", "found", "kept", "sent",
	"about", "around", "near", "between", "across", "along", "without", "within", "towards", "beside",
}

func syntheticText(rng *rand.Rand, bit int) string {
	n := 6 + rng.IntN(9)
	words := make([]string, n)
	for j := range words {
		words[j] = syntheticFiller[rng.IntN(len(syntheticFiller))]
	}
	pos := rng.Perm(n)
	k := 2 + rng.IntN(2)
	group := syntheticSignal[bit]
	for _, p := range pos[:k] {
		words[p] = group[rng.IntN(len(group))]
	}
	if rng.Float64() < 0.3 {
		other := syntheticSignal[1-bit]
		words[pos[k]] = other[rng.IntN(len(other))]
	}
	return joinWords(words)
}

func joinWords(words []string) string {
	n := len(words) - 1
	for _, w := range words {
		n += len(w)
	}
	b := make([]byte, 0, n)
	for j, w := range words {
		if j > 0 {
			b = append(b, ' ')
		}
		b = append(b, w...)
	}
	return string(b)
}

func syntheticImage(rng *rand.Rand, img *ImageData, bit int) {
	s := img.W
	length := 6 + rng.IntN(5)
	w, h := length, 2 // bit 0: horizontal
	if bit == 1 {
		w, h = 2, length
	}
	x0, y0 := rng.IntN(s-w+1), rng.IntN(s-h+1)
	for y := y0; y < y0+h; y++ {
		for x := x0; x < x0+w; x++ {
			img.Pix[y*s+x] = 1
		}
	}
	bx, by := rng.IntN(s-1), rng.IntN(s-1)
	for y := by; y < by+2; y++ {
		for x := bx; x < bx+2; x++ {
			img.Pix[y*s+x] = max(img.Pix[y*s+x], 0.6)
		}
	}
	for j, v := range img.Pix {
		img.Pix[j] = float32(min(max(float64(v)+0.25*rng.NormFloat64(), 0), 1))
	}
}

func syntheticTabular(rng *rand.Rand, row []float32, bit int) {
	shift := tabularShift
	if bit == 0 {
		shift = -shift
	}
	z1 := rng.NormFloat64() + shift
	z2 := rng.NormFloat64() - shift
	row[0] = float32(50 + 12*rng.NormFloat64())                    // age
	row[1] = float32(42000 + 15000*z1)                             // income
	row[2] = float32(10 + 3*z2)                                    // score_a
	row[3] = float32(5 + 2*rng.NormFloat64())                      // score_b
	row[4] = float32(math.Round(max(0, 4+2*rng.NormFloat64())))    // visits
	row[5] = float32(0.5 + 0.1*(z1-z2)/2 + 0.02*rng.NormFloat64()) // ratio
}
