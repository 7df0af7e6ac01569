package models

import (
	"context"
	"errors"
	"math"
	"slices"
	"testing"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
)

func syntheticSpec(head fusion.Kind) Spec {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 10, Seed: 1})
	return DefaultSpec(d.Schema, head, true)
}

func TestLayoutRoundTrip(t *testing.T) {
	for _, head := range fusion.Kinds {
		t.Run(string(head), func(t *testing.T) {
			a, err := New(syntheticSpec(head), 1)
			if err != nil {
				t.Fatal(err)
			}
			b, err := New(syntheticSpec(head), 2)
			if err != nil {
				t.Fatal(err)
			}
			if a.LayoutHash() != b.LayoutHash() {
				t.Fatal("equal specs gave different layout hashes")
			}
			if slices.Equal(a.Params(), b.Params()) {
				t.Fatal("different seeds gave equal parameters")
			}
			if err := b.SetParams(a.Params(), a.LayoutHash()); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(a.Params(), b.Params()) {
				t.Fatal("parameters did not round-trip")
			}
			// Every value belongs to exactly one segment, in order, with the expected prefixes.
			off := 0
			for _, s := range a.Layout().Segments {
				if s.Offset != off {
					t.Fatalf("%s starts at %d, want %d", s.Name, s.Offset, off)
				}
				if !slices.ContainsFunc([]string{"enc.text.", "enc.image.", "enc.tabular.", "fusion."}, func(p string) bool { return len(s.Name) > len(p) && s.Name[:len(p)] == p }) {
					t.Errorf("segment %s has no known prefix", s.Name)
				}
				off += s.Size()
			}
			if off != a.NumParams() {
				t.Fatalf("segments cover %d values, vector has %d", off, a.NumParams())
			}
		})
	}
}

func TestLayoutHashDiffers(t *testing.T) {
	base := syntheticSpec(fusion.Gated)
	hashOf := func(s Spec) string {
		m, err := New(s, 1)
		if err != nil {
			t.Fatal(err)
		}
		return m.LayoutHash()
	}
	h := hashOf(base)
	variants := map[string]func(*Spec){
		"fusion":     func(s *Spec) { s.Fusion = fusion.Concat },
		"dim":        func(s *Spec) { s.Dim = 16 },
		"no-text":    func(s *Spec) { s.Text = nil },
		"buckets":    func(s *Spec) { t := *s.Text; t.Buckets = 1024; s.Text = &t },
		"image-size": func(s *Spec) { im := *s.Image; im.H, im.W = 20, 20; s.Image = &im },
	}
	for name, change := range variants {
		t.Run(name, func(t *testing.T) {
			s := syntheticSpec(fusion.Gated)
			change(&s)
			if hashOf(s) == h {
				t.Fatal("a different model has the same layout hash")
			}
		})
	}
}

func TestSetParamsRefuses(t *testing.T) {
	m, err := New(syntheticSpec(fusion.Concat), 1)
	if err != nil {
		t.Fatal(err)
	}
	other, err := New(syntheticSpec(fusion.Late), 1)
	if err != nil {
		t.Fatal(err)
	}
	before := m.Params()
	nan := m.Params()
	nan[5] = float32(math.NaN())
	inf := m.Params()
	inf[len(inf)-1] = float32(math.Inf(-1))
	cases := []struct {
		name string
		p    []float32
		hash string
		is   error
	}{
		{"other-layout", other.Params(), other.LayoutHash(), ErrLayoutMismatch},
		{"right-values-wrong-hash", m.Params(), other.LayoutHash(), ErrLayoutMismatch},
		{"short", m.Params()[1:], m.LayoutHash(), nil},
		{"nan", nan, m.LayoutHash(), nil},
		{"inf", inf, m.LayoutHash(), nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			err := m.SetParams(c.p, c.hash)
			if err == nil {
				t.Fatal("accepted")
			}
			if c.is != nil && !errors.Is(err, c.is) {
				t.Fatalf("error %v is not %v", err, c.is)
			}
			if !slices.Equal(m.Params(), before) {
				t.Fatal("a refused vector changed the model")
			}
		})
	}
}

// TestMissingModalitiesFinite predicts every presence pattern, including no modality at all,
// with every head, before and after a training step, and requires finite probabilities that
// sum to one.
func TestMissingModalitiesFinite(t *testing.T) {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 64, Seed: 3})
	for _, head := range fusion.Kinds {
		t.Run(string(head), func(t *testing.T) {
			m, err := New(DefaultSpec(d.Schema, head, true), 1)
			if err != nil {
				t.Fatal(err)
			}
			enc, err := m.Encode(d)
			if err != nil {
				t.Fatal(err)
			}
			check := func(stage string) {
				for mask := range 1 << dataset.NumModalities {
					var only [dataset.NumModalities]bool
					for i := range only {
						only[i] = mask&(1<<i) != 0
					}
					preds, err := m.Predict(enc, PredictOptions{Only: &only, BatchSize: 48})
					if err != nil {
						t.Fatal(err)
					}
					for _, p := range preds {
						var sum float64
						for _, v := range p.Probabilities {
							if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
								t.Fatalf("%s, modalities %v: probability %v", stage, only, v)
							}
							sum += float64(v)
						}
						if math.Abs(sum-1) > 1e-4 {
							t.Fatalf("%s, modalities %v: probabilities sum to %v", stage, only, sum)
						}
						for _, w := range p.Weights {
							if math.IsNaN(float64(w)) {
								t.Fatalf("%s, modalities %v: fusion weight NaN", stage, only)
							}
						}
					}
				}
			}
			check("initial")
			if _, err := m.Train(context.Background(), enc, TrainConfig{Epochs: 1, BatchSize: 16, ModalityDropout: 0.5}); err != nil {
				t.Fatal(err)
			}
			check("trained")
		})
	}
}

// TestTrainSynthetic is the claim of the synthetic data: fused, the model learns the label;
// from any one modality, it cannot.
func TestTrainSynthetic(t *testing.T) {
	if testing.Short() {
		t.Skip("trains a model")
	}
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 2000, Seed: 11})
	train, test := dataset.Split(d, 0.25, 11)
	m, err := New(DefaultSpec(d.Schema, fusion.Gated, true), 11)
	if err != nil {
		t.Fatal(err)
	}
	tr, _ := m.Encode(train)
	te, _ := m.Encode(test)
	res, err := m.Fit(context.Background(), tr, te, TrainConfig{Epochs: 4, Seed: 11, ModalityDropout: 0.2}, nil)
	if err != nil {
		t.Fatal(err)
	}
	t.Logf("accuracy %.3f, macro-F1 %.3f, ablation %v", res.Final.Accuracy, res.Final.MacroF1, res.Ablation)
	if res.Final.Accuracy < 0.9 {
		t.Errorf("fused accuracy %.3f, want >= 0.90", res.Final.Accuracy)
	}
	for mod, acc := range res.Ablation {
		if acc > 0.7 {
			t.Errorf("accuracy with only %s is %.3f, want <= 0.70", mod, acc)
		}
	}
	if len(res.Ablation) != 3 {
		t.Errorf("ablation covers %d modalities, want 3", len(res.Ablation))
	}
}

func TestTrainDeterministic(t *testing.T) {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 100, Seed: 5})
	run := func() []float32 {
		m, err := New(DefaultSpec(d.Schema, fusion.Attention, true), 9)
		if err != nil {
			t.Fatal(err)
		}
		enc, _ := m.Encode(d)
		if _, err := m.Train(context.Background(), enc, TrainConfig{Epochs: 2, BatchSize: 32, Seed: 4, ModalityDropout: 0.3}); err != nil {
			t.Fatal(err)
		}
		return m.Params()
	}
	if !slices.Equal(run(), run()) {
		t.Fatal("same seeds, different parameters")
	}
}

// TestProx checks that the FedProx term pulls training towards the anchor.
func TestProx(t *testing.T) {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 128, Seed: 5})
	dist := func(prox float64) float64 {
		m, err := New(DefaultSpec(d.Schema, fusion.Concat, true), 1)
		if err != nil {
			t.Fatal(err)
		}
		enc, _ := m.Encode(d)
		anchor := m.Params()
		if _, err := m.Train(context.Background(), enc, TrainConfig{Epochs: 2, BatchSize: 32, Optimizer: "sgd", LR: 0.05, Prox: prox, Anchor: anchor}); err != nil {
			t.Fatal(err)
		}
		var s float64
		p := m.Params()
		for _, seg := range m.Layout().Segments {
			if !seg.Trainable {
				continue // the tabular statistics are fitted, not trained
			}
			for i := seg.Offset; i < seg.Offset+seg.Size(); i++ {
				s += float64(p[i]-anchor[i]) * float64(p[i]-anchor[i])
			}
		}
		return math.Sqrt(s)
	}
	free, held := dist(0), dist(10)
	t.Logf("distance from anchor: %.4f without prox, %.4f with", free, held)
	if !(held < 0.8*free) {
		t.Fatalf("prox did not hold the parameters near the anchor: %.4f vs %.4f", held, free)
	}
}

func TestEncodeRejects(t *testing.T) {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 4, Seed: 1})
	m, err := New(DefaultSpec(d.Schema, fusion.Gated, true), 1)
	if err != nil {
		t.Fatal(err)
	}
	bad := func(change func(r *dataset.Record)) *dataset.Dataset {
		c := &dataset.Dataset{Schema: d.Schema, Records: slices.Clone(d.Records)}
		change(&c.Records[1])
		return c
	}
	cases := map[string]*dataset.Dataset{
		"label":   bad(func(r *dataset.Record) { r.Label = 9 }),
		"tabular": bad(func(r *dataset.Record) { r.Tabular = r.Tabular[:2] }),
		"image":   bad(func(r *dataset.Record) { im := *r.Image; im.W, im.H = 8, 32; r.Image = &im }),
		"empty":   bad(func(r *dataset.Record) { *r = dataset.Record{ID: r.ID, Label: 0} }),
	}
	for name, ds := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := m.Encode(ds); err == nil {
				t.Fatal("accepted")
			}
		})
	}
}
