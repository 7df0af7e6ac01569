package models

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
)

// tinySpec is a model small enough to check every gradient by finite differences.
func tinySpec(head fusion.Kind, text, image, tab bool) Spec {
	s := Spec{Classes: 3, Dim: 4, Hidden: 5, Fusion: head}
	if text {
		s.Text = &TextSpec{Buckets: 23, MaxLen: 6, EmbedDim: 4, Filters: 5, Kernel: 3, Attention: 3}
	}
	if image {
		s.Image = &ImageSpec{C: 1, H: 8, W: 8, Conv1: 2, Conv2: 3}
	}
	if tab {
		s.Tabular = &TabularSpec{Fields: 3, Hidden: 4}
	}
	return s
}

// randomEncoded makes n records of random inputs for spec; record i lacks modality i%4 (none
// when i%4 == 3), so every check covers missing modalities too.
func randomEncoded(spec *Spec, n int, rng *rand.Rand) *Encoded {
	e := &Encoded{n: n}
	if spec.Text != nil {
		e.tLen = spec.Text.MaxLen
	}
	if spec.Image != nil {
		e.pLen = spec.Image.C * spec.Image.H * spec.Image.W
	}
	if spec.Tabular != nil {
		e.fLen = spec.Tabular.Fields
	}
	mods := spec.Modalities()
	for i := range n {
		e.labels = append(e.labels, rng.IntN(spec.Classes))
		var p [dataset.NumModalities]bool
		for _, m := range mods {
			p[m] = int(m) != i%4 || len(mods) == 1
		}
		e.present = append(e.present, p)
		for t := range e.tLen {
			id := 1 + rng.IntN(spec.Text.Buckets-1)
			if t >= e.tLen-i%3 { // some padding at the end
				id = 0
			}
			e.tokens = append(e.tokens, id)
		}
		for range e.pLen {
			e.pix = append(e.pix, rng.Float32())
		}
		for range e.fLen {
			e.tab = append(e.tab, float32(rng.NormFloat64()*3+1))
		}
	}
	return e
}

// TestGradients checks the gradient of the loss with respect to every parameter of each encoder
// and each fusion head against central finite differences, in float64.
func TestGradients(t *testing.T) {
	type tc struct {
		name             string
		head             fusion.Kind
		text, image, tab bool
	}
	cases := []tc{
		{"text-encoder", fusion.Concat, true, false, false},
		{"image-encoder", fusion.Concat, false, true, false},
		{"tabular-encoder", fusion.Concat, false, false, true},
	}
	for _, h := range fusion.Kinds {
		cases = append(cases, tc{"fusion-" + string(h), h, true, true, true})
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			spec := tinySpec(c.head, c.text, c.image, c.tab)
			m, err := New(spec, 7)
			if err != nil {
				t.Fatal(err)
			}
			rng := rand.New(rand.NewPCG(1, 2))
			// Non-trivial normalisation statistics, so their use is checked too.
			if s, ok := m.layout.Find("enc.tabular.norm.mean"); ok {
				for i := range s.Size() {
					m.params[s.Offset+i] = float32(math.Asinh(0.5) / NormScale)
					m.params[s.Offset+s.Size()+i] = float32(math.Log(2) / NormScale)
				}
			}
			p64 := make([]float64, len(m.params))
			for i, v := range m.params {
				p64[i] = float64(v)
			}
			const batch = 4
			n, err := buildNet(&m.Spec, p64, batch, true)
			if err != nil {
				t.Fatal(err)
			}
			d := randomEncoded(&spec, batch, rng)
			rows := make([]batchRow, batch)
			for i := range rows {
				rows[i] = batchRow{rec: i, weight: float32(1 + i), present: d.present[i]}
			}
			var sc scratch
			n.fill(d, rows, spec.Classes, &sc)
			if err := n.run(); err != nil {
				t.Fatal(err)
			}
			grad := make([]float64, len(p64))
			for i, s := range n.b.Layout().Segments {
				if !s.Trainable {
					continue
				}
				g, err := n.b.Params()[i].Grad()
				if err != nil {
					t.Fatalf("%s: %v", s.Name, err)
				}
				copy(grad[s.Offset:], g.Data().([]float64))
			}
			loss := func() float64 {
				if err := n.run(); err != nil {
					t.Fatal(err)
				}
				return scalar(n.loss)
			}
			const eps = 1e-6
			worst := 0.0
			checked := 0
			for _, s := range n.b.Layout().Segments {
				if !s.Trainable {
					continue
				}
				segNonZero := false
				for i := s.Offset; i < s.Offset+s.Size(); i++ {
					orig := p64[i]
					p64[i] = orig + eps
					up := loss()
					p64[i] = orig - eps
					down := loss()
					p64[i] = orig
					num := (up - down) / (2 * eps)
					diff := math.Abs(num - grad[i])
					if diff > 1e-5+1e-3*math.Max(math.Abs(num), math.Abs(grad[i])) {
						t.Errorf("%s[%d]: analytic %.8g, numeric %.8g", s.Name, i-s.Offset, grad[i], num)
					}
					worst = math.Max(worst, diff)
					segNonZero = segNonZero || math.Abs(num) > 1e-9
					checked++
				}
				// Every parameter segment must influence the loss; a segment with an
				// all-zero gradient would mean a disconnected layer.
				if !segNonZero {
					t.Errorf("%s: loss does not depend on it", s.Name)
				}
			}
			t.Logf("%d parameters checked, largest absolute difference %.2g", checked, worst)
		})
	}
}
