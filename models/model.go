package models

import (
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/nn"
)

// Layout, Segment and ErrLayoutMismatch are the parameter layout types of package nn, the
// layer kit the models are built with.
type (
	Layout  = nn.Layout
	Segment = nn.Segment
)

// ErrLayoutMismatch is returned when parameters made for another model are offered.
var ErrLayoutMismatch = nn.ErrLayoutMismatch

// Model is a multimodal classifier: one encoder per modality, a fusion head, and its parameters
// as one flat []float32 with a named, versioned layout.
//
// A Model is not safe for concurrent use: its graphs hold per-batch state.
type Model struct {
	Spec   Spec
	layout *Layout
	hash   string
	params []float32

	tok   dataset.Tokenizer
	train map[int]*net
	eval  map[int]*net
}

// New builds a model from spec with parameters initialised from seed.
func New(spec Spec, seed uint64) (*Model, error) {
	if err := spec.Validate(); err != nil {
		return nil, err
	}
	probe, err := buildNet(&spec, []float32(nil), 1, false)
	if err != nil {
		return nil, err
	}
	m := &Model{Spec: spec, layout: probe.b.Layout(), train: map[int]*net{}, eval: map[int]*net{}}
	m.hash = m.layout.Hash()
	m.params = make([]float32, m.layout.Size())
	m.layout.Initialize(m.params, seed)
	if spec.Text != nil {
		m.tok = dataset.NewTokenizer(spec.Text.Buckets, spec.Text.MaxLen)
	}
	return m, nil
}

// Layout returns the model's parameter layout. The caller must not change it.
func (m *Model) Layout() *Layout { return m.layout }

// LayoutHash is the hash that travels with the model's parameter vectors.
func (m *Model) LayoutHash() string { return m.hash }

// NumParams is the length of the parameter vector.
func (m *Model) NumParams() int { return len(m.params) }

// Params returns a copy of the parameter vector.
func (m *Model) Params() []float32 { return append([]float32(nil), m.params...) }

// ParamsView returns the model's own parameter vector. Writes to it change the model; it stays
// valid for the model's life.
func (m *Model) ParamsView() []float32 { return m.params }

// SetParams replaces the parameters with a copy of p, which must have been made for a model whose
// layout hashes to hash. A mismatched layout, a wrong length or a non-finite value is refused and
// leaves the model unchanged.
func (m *Model) SetParams(p []float32, hash string) error {
	if err := m.layout.Check(hash); err != nil {
		return fmt.Errorf("models: %w", err)
	}
	if len(p) != len(m.params) {
		return fmt.Errorf("models: parameter vector has %d values, layout wants %d", len(p), len(m.params))
	}
	for i, v := range p {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("models: parameter %d (%s) is not finite", i, m.segmentAt(i))
		}
	}
	copy(m.params, p)
	return nil
}

// segmentAt names the segment holding index i.
func (m *Model) segmentAt(i int) string {
	for _, s := range m.layout.Segments {
		if i >= s.Offset && i < s.Offset+s.Size() {
			return s.Name
		}
	}
	return "?"
}

// trainNet and evalNet return the cached graph for the batch size, building it on first use.
func (m *Model) trainNet(batch int) (*net, error) {
	if n, ok := m.train[batch]; ok {
		return n, nil
	}
	n, err := buildNet(&m.Spec, m.params, batch, true)
	if err != nil {
		return nil, err
	}
	m.train[batch] = n
	return n, nil
}

func (m *Model) evalNet(batch int) (*net, error) {
	if n, ok := m.eval[batch]; ok {
		return n, nil
	}
	n, err := buildNet(&m.Spec, m.params, batch, false)
	if err != nil {
		return nil, err
	}
	m.eval[batch] = n
	return n, nil
}

// normalizerUnset reports whether the tabular statistics still hold their initial values (mean 0,
// standard deviation 1), which no real data set produces exactly.
func (m *Model) normalizerUnset() bool { return NormalizerUnset(m.layout, m.params) }

// FitNormalizer sets the tabular standardisation statistics (the enc.tabular.norm buffers, in
// the compressed form described at tabularEncoder) from
// the records of d that carry tabular fields. It does nothing for a model without a tabular
// encoder or data without tabular records.
func (m *Model) FitNormalizer(d *Encoded) {
	if m.Spec.Tabular == nil {
		return
	}
	F := m.Spec.Tabular.Fields
	sum, sq := make([]float64, F), make([]float64, F)
	cnt := 0
	for i := range d.n {
		if !d.present[i][dataset.Tabular] {
			continue
		}
		cnt++
		for j, v := range d.tab[i*F : (i+1)*F] {
			sum[j] += float64(v)
			sq[j] += float64(v) * float64(v)
		}
	}
	if cnt == 0 {
		return
	}
	mean, _ := m.layout.Find("enc.tabular.norm.mean")
	logStd, _ := m.layout.Find("enc.tabular.norm.logstd")
	for j := range F {
		mu := sum[j] / float64(cnt)
		v := sq[j]/float64(cnt) - mu*mu
		m.params[mean.Offset+j] = float32(math.Asinh(mu) / NormScale)
		m.params[logStd.Offset+j] = float32(math.Log(math.Max(math.Sqrt(math.Max(v, 0)), 1e-6)) / NormScale)
	}
}

// dpNormBound is B of FitNormalizerDP's first stage: magnitudes are clamped to asinh 16, raw
// values of about 4.4e6.
const dpNormBound = 16

// dpNormHeadroom widens FitNormalizerDP's range beyond a field's typical magnitude: R =
// sinh(m + 1.5), about 4.5 times it for large values.
const dpNormHeadroom = 1.5

// dpNormMinSD is the smallest standard deviation, as a share of the range, that
// FitNormalizerDP reports: the noisy variance can come out negative or tiny on few records,
// and a standard deviation of zero would blow the standardised values up.
const dpNormMinSD = 0.02

// FitNormalizerDP sets the tabular standardisation statistics, like FitNormalizer, from a
// differentially private release instead of the exact means and standard deviations: those
// are functions of every record that DP-SGD's guarantee does not cover. It does nothing for a
// model without a tabular encoder. Only records that carry tabular fields are read (which of
// them do is taken as known, as the modality mask is), but the release itself never depends
// on them: with none, the sums are zero, the noise is added as usual, and the result (pure
// noise, kept finite by the floor of 1 on the noisy count) is set all the same, so that whether
// one record has tabular fields does not change what is released.
//
// The fields' scales are unknown (an income in the tens of thousands beside a score near 1),
// and clipping needs a range, so the release has two stages, each a Gaussian mechanism of
// noise multiplier noiseMultiplier·√2: together they cost exactly one Gaussian mechanism of
// noiseMultiplier, RDP alpha/(2·noiseMultiplier²) at order alpha, which is what callers charge.
//
//  1. Magnitude. For each record and field j, u_j = min(asinh|x_j|, B)/B in [0, 1] (B = 16; NaN
//     counts as 0, ±Inf as the largest float32 of its sign, clamped like any large value); the
//     vector (u_1..u_F, 1) has L2 norm at most sqrt(F+1), the sensitivity of its sum. From the
//     noisy sums, m_j = B·clamp(S_j/Ñ, 0, 1) is a typical |x_j| in asinh units, and the field's
//     range is R_j = sinh(m_j + 1.5), about 4.5 times that magnitude.
//  2. Moments. v_j = clamp(x_j/R_j, -1, 1); the vector (v_1..v_F, v_1²..v_F², 1) has L2 norm at
//     most sqrt(2F+1). From the noisy sums, mean_j = R_j·clamp(S1_j/Ñ, -1, 1) and
//     std_j = R_j·sqrt(max(S2_j/Ñ - (S1_j/Ñ)², 0.02²)).
//
// Ñ is the stage's noisy count, at least 1, so the result is finite, with positive standard
// deviations, whatever the input. The noise on mean_j is about
// R_j·noiseMultiplier·√2·sqrt(2F+1)/n, a few percent of the field's magnitude for a few
// hundred records at the default noise; a spread much narrower than the magnitude (8000 around
// 42000) is resolved only from thousands of records, and below that the floor, 2 % of the
// range, holds: standardised values then come out a few times smaller than unit scale, which
// training absorbs.
//
// noiseMultiplier must be positive and finite. rng draws the noise; nil means a ChaCha8
// generator seeded from crypto/rand.
func (m *Model) FitNormalizerDP(d *Encoded, noiseMultiplier float64, rng *rand.Rand) error {
	if !(noiseMultiplier > 0) || math.IsInf(noiseMultiplier, 0) {
		return fmt.Errorf("models: normalizer noise multiplier %v, want a positive finite number", noiseMultiplier)
	}
	if m.Spec.Tabular == nil {
		return nil
	}
	if rng == nil {
		rng = secretRand()
	}
	const B = dpNormBound
	F := m.Spec.Tabular.Fields
	sigma := noiseMultiplier * math.Sqrt2 // per stage
	// value makes a raw value finite: NaN counts as 0 and ±Inf as ±MaxFloat32, which both
	// stages then clamp like any other large value.
	value := func(v float32) float64 {
		x := float64(v)
		if math.IsNaN(x) {
			return 0
		}
		return math.Max(-math.MaxFloat32, math.Min(math.MaxFloat32, x))
	}
	release := func(sums []float64) float64 {
		sd := sigma * math.Sqrt(float64(len(sums)))
		for k := range sums {
			sums[k] += sd * rng.NormFloat64()
		}
		return math.Max(sums[len(sums)-1], 1)
	}
	// Stage 1: magnitudes.
	mag := make([]float64, F+1)
	for i := range d.n {
		if !d.present[i][dataset.Tabular] {
			continue
		}
		for j, v := range d.tab[i*F : (i+1)*F] {
			mag[j] += math.Min(math.Asinh(math.Abs(value(v))), B) / B
		}
		mag[F]++
	}
	cnt := release(mag)
	rng1 := make([]float64, F)
	for j := range F {
		rng1[j] = math.Sinh(B*math.Max(0, math.Min(1, mag[j]/cnt)) + dpNormHeadroom)
	}
	// Stage 2: moments within the ranges.
	sums := make([]float64, 2*F+1) // v_j, then v_j², then the count
	for i := range d.n {
		if !d.present[i][dataset.Tabular] {
			continue
		}
		for j, v := range d.tab[i*F : (i+1)*F] {
			u := math.Max(-1, math.Min(1, value(v)/rng1[j]))
			sums[j] += u
			sums[F+j] += u * u
		}
		sums[2*F]++
	}
	cnt = release(sums)
	mean, _ := m.layout.Find("enc.tabular.norm.mean")
	logStd, _ := m.layout.Find("enc.tabular.norm.logstd")
	for j := range F {
		mu := math.Max(-1, math.Min(1, sums[j]/cnt))
		v := math.Max(sums[F+j]/cnt-mu*mu, dpNormMinSD*dpNormMinSD)
		m.params[mean.Offset+j] = float32(math.Asinh(rng1[j]*mu) / NormScale)
		m.params[logStd.Offset+j] = float32(math.Log(math.Max(rng1[j]*math.Sqrt(v), 1e-6)) / NormScale)
	}
	return nil
}
