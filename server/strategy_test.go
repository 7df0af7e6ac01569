package server

import (
	"math"
	"testing"

	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/models"
)

func tinyLayout(t *testing.T) (*models.Layout, []float32) {
	t.Helper()
	m, err := models.New(models.Spec{Classes: 2, Dim: 2, Hidden: 2, Fusion: fusion.Late,
		Image:   &models.ImageSpec{C: 1, H: 4, W: 4, Conv1: 1, Conv2: 1},
		Tabular: &models.TabularSpec{Fields: 2, Hidden: 2}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	return m.Layout(), m.Params()
}

// TestFedAvgModalityAware: two clients, one without images. The image encoder moves by the
// image-holder's delta alone; tabular and fusion by the weighted mean of both.
func TestFedAvgModalityAware(t *testing.T) {
	l, global := tinyLayout(t)
	n := len(global)
	// Client A: 30 records with images and tabular fields; delta +1 everywhere.
	// Client B: 10 records, tabular only; delta -1 everywhere it trained, 0 on the image encoder.
	wA := []float64{0, 30, 30, 30}
	wB := []float64{0, 0, 10, 10}
	sum := make([]float64, n)
	for _, s := range l.Segments {
		g := models.GroupOf(s.Name)
		for i := s.Offset; i < s.Offset+s.Size(); i++ {
			sum[i] = wA[g]*1 + wB[g]*-1
		}
	}
	weights := []float64{0, 30, 40, 40}
	next := append([]float32(nil), global...)
	if err := (Update{Strategy: FedAvg}).Apply(l, next, sum, weights, &OptState{}); err != nil {
		t.Fatal(err)
	}
	for _, s := range l.Segments {
		want := map[int]float64{models.GroupImage: 1, models.GroupTabular: 0.5, models.GroupFusion: 0.5}[models.GroupOf(s.Name)]
		for i := s.Offset; i < s.Offset+s.Size(); i++ {
			if got := float64(next[i] - global[i]); math.Abs(got-want) > 1e-6 {
				t.Fatalf("%s moved by %v, want %v", s.Name, got, want)
			}
		}
	}
}

// TestNobodyTrainedKeepsParams: a group with zero total weight is left as it was, by every
// strategy.
func TestNobodyTrainedKeepsParams(t *testing.T) {
	for _, st := range []Strategy{FedAvg, FedProx, FedAdam, FedYogi} {
		t.Run(string(st), func(t *testing.T) {
			l, global := tinyLayout(t)
			sum := make([]float64, len(global))
			for i := range sum {
				sum[i] = 5
			}
			next := append([]float32(nil), global...)
			if err := (Update{Strategy: st}).Apply(l, next, sum, []float64{0, 0, 2, 2}, &OptState{}); err != nil {
				t.Fatal(err)
			}
			for _, s := range l.Prefixed("enc.image.") {
				for i := s.Offset; i < s.Offset+s.Size(); i++ {
					if next[i] != global[i] {
						t.Fatalf("%s changed though nobody trained it", s.Name)
					}
				}
			}
			changed := false
			for _, s := range l.Prefixed("enc.tabular.") {
				changed = changed || next[s.Offset] != global[s.Offset]
			}
			if !changed {
				t.Fatal("the trained group did not move")
			}
		})
	}
}

// TestAdaptiveStrategies: FedAdam and FedYogi move each parameter by about the server learning
// rate in the direction of the mean delta on their first step (m/sqrt(v) is about sign(delta)),
// keep their state, and average the normalisation buffers plainly.
func TestAdaptiveStrategies(t *testing.T) {
	for _, st := range []Strategy{FedAdam, FedYogi} {
		t.Run(string(st), func(t *testing.T) {
			l, global := tinyLayout(t)
			sum := make([]float64, len(global))
			for i := range sum {
				sum[i] = 4 // mean delta 2 with weight 2
			}
			next := append([]float32(nil), global...)
			var state OptState
			u := Update{Strategy: st, LR: 0.1}
			if err := u.Apply(l, next, sum, []float64{2, 2, 2, 2}, &state); err != nil {
				t.Fatal(err)
			}
			if len(state.M) != len(global) || len(state.V) != len(global) {
				t.Fatal("no optimizer state kept")
			}
			for _, s := range l.Segments {
				got := float64(next[s.Offset] - global[s.Offset])
				if !s.Trainable {
					if math.Abs(got-2) > 1e-6 {
						t.Fatalf("buffer %s moved by %v, want the plain mean 2", s.Name, got)
					}
					continue
				}
				// First step: m = 0.1*2, v = 0.01*4 (Adam) -> step 0.1 * 0.2/(0.2+tau).
				if got < 0.05 || got > 0.11 {
					t.Fatalf("%s moved by %v, want about the server learning rate 0.1", s.Name, got)
				}
			}
		})
	}
}

func TestApplyRefuses(t *testing.T) {
	l, global := tinyLayout(t)
	if err := (Update{Strategy: FedAvg}).Apply(l, global, make([]float64, 3), []float64{1, 1, 1, 1}, &OptState{}); err == nil {
		t.Error("a short aggregate was accepted")
	}
	huge := make([]float64, len(global))
	for i := range huge {
		huge[i] = math.MaxFloat64
	}
	before := append([]float32(nil), global...)
	if err := (Update{Strategy: FedAvg}).Apply(l, global, huge, []float64{1e-300, 1e-300, 1e-300, 1e-300}, &OptState{}); err == nil {
		t.Error("an update to infinity was accepted")
	}
	for i := range global {
		if global[i] != before[i] {
			t.Fatal("a refused update changed the parameters")
		}
	}
}
