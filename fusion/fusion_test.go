package fusion

import (
	"math/rand/v2"
	"testing"
)

func TestParseKind(t *testing.T) {
	for _, k := range Kinds {
		if got, err := ParseKind(string(k)); err != nil || got != k {
			t.Errorf("ParseKind(%q) = %q, %v", k, got, err)
		}
	}
	if _, err := ParseKind("sum"); err == nil {
		t.Error("unknown head accepted")
	}
}

func TestDropout(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 1))
	const trials = 20000
	const p = 0.3
	dropped := [3]int{}
	for range trials {
		present := []bool{true, true, true}
		Dropout(present, p, rng)
		kept := 0
		for i, ok := range present {
			if ok {
				kept++
			} else {
				dropped[i]++
			}
		}
		if kept == 0 {
			t.Fatal("dropout removed every modality")
		}
	}
	// One modality is always kept (chosen uniformly), each of the others is dropped with p:
	// each modality is dropped with probability 2/3 * p.
	for i, n := range dropped {
		got := float64(n) / trials
		if want := 2.0 / 3 * p; got < want-0.02 || got > want+0.02 {
			t.Errorf("modality %d dropped %.3f of the time, want about %.3f", i, got, want)
		}
	}
	for _, tc := range []struct {
		name    string
		present []bool
	}{
		{"single", []bool{false, true, false}},
		{"none", []bool{false, false, false}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			before := append([]bool(nil), tc.present...)
			for range 100 {
				Dropout(tc.present, 0.9, rng)
			}
			for i := range before {
				if before[i] != tc.present[i] {
					t.Fatalf("dropout changed %v to %v", before, tc.present)
				}
			}
		})
	}
}
