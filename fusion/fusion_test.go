package fusion

import (
	"math"
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

func TestShapley(t *testing.T) {
	for _, tc := range []struct {
		name   string
		values []float64
		want   []float64
	}{
		{"one player", []float64{0.25, 0.75}, []float64{0.5}},
		// Additive game: each player gets its own contribution.
		{"additive", []float64{0, 1, 2, 3}, []float64{1, 2}},
		// Pure complementarity: only both together are worth anything; they share equally.
		{"and", []float64{0, 0, 0, 1}, []float64{0.5, 0.5}},
		// Glove game with three players: 0 holds a left glove, 1 and 2 right ones.
		{"glove", []float64{0, 0, 0, 1, 0, 1, 0, 1}, []float64{2.0 / 3, 1.0 / 6, 1.0 / 6}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got, err := Shapley(tc.values)
			if err != nil {
				t.Fatal(err)
			}
			if len(got) != len(tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
			for i := range got {
				if math.Abs(got[i]-tc.want[i]) > 1e-12 {
					t.Fatalf("got %v, want %v", got, tc.want)
				}
			}
		})
	}
	for _, bad := range [][]float64{nil, {1, 2, 3}, {0, math.NaN()}, make([]float64, 1<<17)} {
		if _, err := Shapley(bad); err == nil {
			t.Errorf("Shapley accepted %d values", len(bad))
		}
	}
}

// FuzzShapleyEfficiency: for any game, the values sum to v(all) - v(none), and a player whose
// marginal contribution is always zero gets zero (the dummy axiom).
func FuzzShapleyEfficiency(f *testing.F) {
	f.Add(uint8(3), int64(1))
	f.Add(uint8(1), int64(7))
	f.Fuzz(func(t *testing.T, m uint8, seed int64) {
		n := int(m%6) + 1
		rng := rand.New(rand.NewPCG(uint64(seed), 0))
		v := make([]float64, 1<<n)
		for i := range v {
			if i&1 == 0 { // player 0 is a dummy: v(S+0) = v(S)
				v[i] = rng.Float64()
			} else {
				v[i] = v[i&^1]
			}
		}
		phi, err := Shapley(v)
		if err != nil {
			t.Fatal(err)
		}
		sum := 0.0
		for _, p := range phi {
			sum += p
		}
		if d := sum - (v[len(v)-1] - v[0]); math.Abs(d) > 1e-9 {
			t.Fatalf("efficiency off by %g", d)
		}
		if math.Abs(phi[0]) > 1e-12 {
			t.Fatalf("dummy player got %g", phi[0])
		}
	})
}
