package models

import (
	"fmt"
	"math"

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
func (m *Model) normalizerUnset() bool {
	mean, ok := m.layout.Find("enc.tabular.norm.mean")
	if !ok {
		return false
	}
	logStd, _ := m.layout.Find("enc.tabular.norm.logstd")
	for j := range mean.Size() {
		if m.params[mean.Offset+j] != 0 || m.params[logStd.Offset+j] != 0 {
			return false
		}
	}
	return true
}

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
