package secagg

import (
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fedweave/fedweave/crypto/dp"
	"github.com/fedweave/fedweave/crypto/quant"
)

// word returns word i of v as a signed integer.
func word(v quant.Vector, i int) int64 {
	if v.Wide() {
		return int64(v.U64[i])
	}
	return int64(int32(v.U32[i]))
}

// TestNoisyExactSum plays rounds with distributed Skellam noise across cohort sizes and bit
// widths: the unmasked sum must be exactly the sum of the contributors' noisy encodings, and,
// value by value and read as signed integers without any modulus, the plain sum plus the sum
// of the clients' noises — so the modular sum never wrapped. Weight words carry no noise, and
// the noise has about the variance the cohort adds.
func TestNoisyExactSum(t *testing.T) {
	cases := []struct {
		name  string
		cfg   Config
		n     int
		maxW  uint64
		check func(l quant.Layout) bool // the layout it must pick
	}{
		{"n=3/16 bits", Config{Noise: 100, Quant: quant.Config{Bits: 16}}, 3, 1, func(l quant.Layout) bool { return !l.Wide }},
		{"n=8/8 bits", Config{Noise: 1e4, Quant: quant.Config{Bits: 8}}, 8, 100, func(l quant.Layout) bool { return !l.Wide }},
		{"n=20/k=6", Config{K: 6, Noise: 1e6, Quant: quant.Config{Bits: 12}}, 20, 10, func(quant.Layout) bool { return true }},
		// 16-bit values of 12 clients, weights up to 2^12: quant alone would fit 32 bits, the noise does not.
		{"n=12/widened by noise", Config{Noise: 1e15, Quant: quant.Config{Bits: 16}}, 12, 1 << 12, func(l quant.Layout) bool { return l.Wide }},
		{"n=40/k=8/wide", Config{K: 8, Noise: 1e15, Quant: quant.Config{Bits: 16}}, 40, 1000, func(l quant.Layout) bool { return l.Wide }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			proto := newCohort(c.cfg)
			p := testParams(500, 2)
			p.MaxWeight = c.maxW
			var noise []float64
			for seed := range uint64(3) {
				rng := rand.New(rand.NewPCG(seed, uint64(c.n)))
				p.Round = seed
				inputs := randomInputs(rng, p, c.n)
				for _, in := range inputs {
					for g := range in.Weights {
						in.Weights[g] = float64(rng.IntN(int(c.maxW) + 1))
					}
				}
				tr := play(t, proto, p, inputs, nil, nil)
				if !checkRound(t, tr, c.n, nil) {
					t.Fatalf("round %d failed: %v", seed, tr.err)
				}
				l := tr.srv.layout
				if !c.check(l) {
					t.Fatalf("layout wide=%v", l.Wide)
				}
				bound := float64(c.n)*float64(l.MaxWeight)*l.Steps() + dp.Headroom(c.n, c.cfg.Noise)
				limit := math.Ldexp(1, 8*l.WordSize()-1)
				if bound >= limit {
					t.Fatalf("bound %g does not fit %d-byte words", bound, l.WordSize())
				}
				for i := range l.Len() {
					var plain, noisy, sum int64
					for _, m := range tr.sum.Contributors {
						cl := tr.all[m]
						plain += word(cl.plain, i)
						noisy += word(cl.encoding, i)
					}
					sum = word(tr.srv.raw, i)
					if sum != noisy {
						t.Fatalf("word %d: sum %d, the clients' noisy encodings sum to %d without modulus: wrapped", i, sum, noisy)
					}
					d := noisy - plain
					if i >= l.N {
						if d != 0 {
							t.Fatalf("weight word %d carries noise %d", i-l.N, d)
						}
						continue
					}
					if math.Abs(float64(d)) > dp.Headroom(c.n, c.cfg.Noise) {
						t.Fatalf("value %d: noise %d beyond the headroom", i, d)
					}
					noise = append(noise, float64(d))
				}
			}
			var ss float64
			for _, x := range noise {
				ss += x * x
			}
			v, want := ss/float64(len(noise)), float64(c.n)*c.cfg.Noise
			if math.Abs(v/want-1) > 0.25 { // loose: at means of 1e14 and more the sampler strays by up to some 20 %
				t.Errorf("noise variance %g, want about %g", v, want)
			}
		})
	}
}

func TestNoiseRefused(t *testing.T) {
	for _, v := range []float64{-1, math.NaN(), math.Inf(1)} {
		if _, _, err := (Config{Noise: v}).Shape(5); err == nil {
			t.Errorf("noise %v accepted", v)
		}
	}
	// So much noise that even 64-bit sums cannot hold it: both sides refuse.
	proto := newCohort(Config{Noise: 1e36})
	p := testParams(10, 1)
	p.MaxWeight = 1
	if _, err := proto.NewServer(p, 5); err == nil {
		t.Error("server accepted a layout that would wrap")
	}
}
