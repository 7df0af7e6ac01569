package dp

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fedweave/fedweave/crypto/quant"
)

// TestNoisySumExact encodes each client's values, adds its Skellam noise, sums the vectors
// modulo the word size the layout chose, and checks that the sum is exactly the plain sum of
// the encodings plus the sum of the noises (computed in int64, without wrap-around), across
// cohort sizes and noise levels, including ones that force 64-bit words.
func TestNoisySumExact(t *testing.T) {
	const n = 500
	groups := make([]uint8, n)
	for _, tc := range []struct {
		name     string
		cohort   int
		bits     int
		maxW     uint64
		variance float64
		wide     bool
	}{
		{"cohort2_16bit", 2, 16, 1, 1e4, false},
		{"cohort10_16bit", 10, 16, 1, 1e6, false},
		{"cohort100_16bit", 100, 16, 1, 1e6, false},
		{"cohort100_20bit_wide", 100, 20, 100, 1e8, true},
		{"cohort10_24bit_wide", 10, 24, 1, 1e16, true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			l, err := NoisyLayout(quant.Config{Bits: tc.bits, Clip: 1}, groups, 1, tc.cohort, tc.maxW, tc.variance)
			if err != nil {
				t.Fatal(err)
			}
			if l.Wide != tc.wide {
				t.Fatalf("wide %v, want %v", l.Wide, tc.wide)
			}
			rng := rand.New(rand.NewPCG(1, uint64(tc.cohort)))
			sum := l.NewVector()
			want := make([]int64, n)
			wantF := make([]float64, n) // exact enough to see a wrap of 2^64 in the wide case
			vals := make([]float32, n)
			for k := range tc.cohort {
				for i := range vals {
					vals[i] = float32(1 - 2*((i+k)%2)) // ±1: the extremes, so the plain sum is largest
				}
				w := float64(tc.maxW)
				v, err := l.Encode(vals, []float64{w}, nil)
				if err != nil {
					t.Fatal(err)
				}
				clean := v.Clone()
				AddSkellam(v, n, tc.variance, rng)
				for i := range n {
					if l.Wide {
						want[i] += int64(v.U64[i])
						wantF[i] += float64(int64(v.U64[i]))
					} else {
						want[i] += int64(int32(clean.U32[i])) + int64(int32(v.U32[i]-clean.U32[i]))
					}
				}
				sum.Add(v)
			}
			for i := range n {
				var got int64
				if l.Wide {
					got = int64(sum.U64[i])
				} else {
					got = int64(int32(sum.U32[i]))
				}
				if l.Wide && math.Abs(float64(got)-wantF[i]) > 1e-9*math.Abs(wantF[i])+1 {
					t.Fatalf("word %d: modular sum %d, exact %v", i, got, wantF[i])
				}
				if got != want[i] {
					t.Fatalf("word %d: modular sum %d, exact %d", i, got, want[i])
				}
			}
			vals2, _, err := l.Decode(sum)
			if err != nil {
				t.Fatal(err)
			}
			if want0 := float64(want[0]) * l.Clip / l.Steps(); vals2[0] != want0 {
				t.Errorf("decoded %v, want %v", vals2[0], want0)
			}
		})
	}
}

// TestSkellamVariance checks the mean and variance of the noise at small and large variances
// (both samplers), to within 5 standard errors.
func TestSkellamVariance(t *testing.T) {
	for _, variance := range []float64{0.5, 4, 19, 1000, 1e6} {
		const n = 200000
		v := quant.Vector{U64: make([]uint64, n)}
		AddSkellam(v, n, variance, rand.New(rand.NewPCG(7, 9)))
		var s, s2 float64
		for _, x := range v.U64 {
			f := float64(int64(x))
			s += f
			s2 += f * f
		}
		mean, vr := s/n, s2/n-(s/n)*(s/n)
		// Var of the sample variance of Skellam: (kurtosis excess 1/variance) ≈ (2+1/variance)·variance²/n.
		se := math.Sqrt((2 + 1/variance) * variance * variance / n)
		if math.Abs(vr-variance) > 5*se || math.Abs(mean) > 5*math.Sqrt(variance/n) {
			t.Errorf("variance %v: sample mean %v, variance %v (se %v)", variance, mean, vr, se)
		}
	}
}
