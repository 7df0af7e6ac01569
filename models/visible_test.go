package models

import (
	"math"
	"testing"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
)

// TestPredictVisible: a per-record visibility mask gives what Only gives for the whole set,
// row by row, and a mask of the wrong length is refused.
func TestPredictVisible(t *testing.T) {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 8, Seed: 2})
	m, err := New(DefaultSpec(d.Schema, fusion.Gated, true), 3)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := m.Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	masks := make([][dataset.NumModalities]bool, enc.Len())
	for i := range masks {
		for j := range masks[i] {
			masks[i][j] = i&(1<<j) != 0
		}
	}
	got, err := m.Predict(enc, PredictOptions{Visible: masks, BatchSize: 3})
	if err != nil {
		t.Fatal(err)
	}
	for i, mask := range masks {
		want, err := m.Predict(enc, PredictOptions{Only: &mask})
		if err != nil {
			t.Fatal(err)
		}
		for k, p := range want[i].Probabilities {
			if math.Abs(float64(got[i].Probabilities[k]-p)) > 1e-5 { // other batch sizes round differently
				t.Fatalf("record %d, mask %v: %v, with Only %v", i, mask, got[i].Probabilities, want[i].Probabilities)
			}
		}
	}
	if _, err := m.Predict(enc, PredictOptions{Visible: masks[:2]}); err == nil {
		t.Error("two masks for eight records accepted")
	}
}
