package dp

import (
	"errors"
	"math"
	"testing"
)

// TestAccountantComposes checks that charging one step at a time, per partner, gives the
// epsilon of all the steps at once, and that a budget refuses the step that would pass it.
func TestAccountantComposes(t *testing.T) {
	acc, err := NewAccountant(nil, 1e-5)
	if err != nil {
		t.Fatal(err)
	}
	q, sigma := 256.0/60000, 1.12
	step, _ := SampledGaussianRDP(q, sigma, 1000, acc.Orders())
	for range 14 {
		if _, err := acc.Charge("alice", step, 0); err != nil {
			t.Fatal(err)
		}
	}
	all, _ := SampledGaussianRDP(q, sigma, 14000, acc.Orders())
	want, _, _ := Epsilon(acc.Orders(), all, 1e-5)
	if got := acc.Epsilon("alice"); math.Abs(got-want) > 1e-9 {
		t.Errorf("composed %v, direct %v", got, want)
	}
	if got := acc.Epsilon("bob"); got != 0 {
		t.Errorf("bob spent %v", got)
	}
	limit := acc.Epsilon("alice") + 1e-6
	before := acc.Epsilon("alice")
	if _, err := acc.Charge("alice", step, limit); !errors.Is(err, ErrBudget) {
		t.Fatalf("over budget: %v", err)
	}
	if acc.Epsilon("alice") != before {
		t.Error("a refused charge was counted")
	}
}
