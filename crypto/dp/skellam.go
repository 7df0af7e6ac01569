package dp

import (
	crand "crypto/rand"
	"fmt"
	"math"
	"math/rand/v2"

	"github.com/fedweave/fedweave/crypto/quant"
)

// wrapBits is the per-coordinate probability, as a power of 2, that NoisyLayout allows for the
// noise of a cohort to exceed its headroom: 2^-64.
const wrapBits = 64

// Headroom returns T such that the sum of cohort clients' noises, each symmetric Skellam of
// the given variance (in quantization steps squared), exceeds T in absolute value with
// probability at most 2^-64. The sum is Skellam of variance V = cohort·variance, a limit of
// sums of independent centred Bernoulli variables and their negatives, each within 1 of its
// mean, so Bernstein's inequality gives P(|X| >= T) <= 2·exp(-T²/(2(V + T/3))); T solves
// T²/(2(V+T/3)) = c with c = 65·ln 2:
//
//	T = c/3 + sqrt(c²/9 + 2cV).
//
// For large V that is about 9.5 standard deviations.
func Headroom(cohort int, variance float64) float64 {
	c := (wrapBits + 1) * math.Ln2
	v := float64(cohort) * variance
	return c/3 + math.Sqrt(c*c/9+2*c*v)
}

// NoisyLayout is quant.NewLayout for a round whose clients each add Skellam noise of the
// given variance (in quantization steps squared) to every value word. The rule for the
// modulus: every value word of the cohort's sum lies within cohort·MaxWeight·S (the
// quantized values, S = 2^(Bits-1)-1) plus Headroom(cohort, variance) (the noise, exceeded
// with probability 2^-64 a word), and the layout takes 32-bit words if that fits a signed
// 32-bit word, 64-bit words if it fits a signed 64-bit one, and is refused otherwise.
func NoisyLayout(cfg quant.Config, groups []uint8, numGroups, cohort int, maxWeight uint64, variance float64) (quant.Layout, error) {
	if !(variance >= 0) || math.IsInf(variance, 0) {
		return quant.Layout{}, fmt.Errorf("dp: noise variance %v", variance)
	}
	l, err := quant.NewLayout(cfg, groups, numGroups, cohort, maxWeight)
	if err != nil {
		return quant.Layout{}, err
	}
	bound := float64(cohort)*float64(l.MaxWeight)*l.Steps() + Headroom(cohort, variance)
	switch {
	case bound < 1<<31:
	case bound < 1<<62: // float64 rounding of the bound: keep a bit spare
		l.Wide = true
	default:
		return quant.Layout{}, fmt.Errorf("dp: a cohort of %d with noise variance %v needs sums wider than 64 bits", cohort, variance)
	}
	return l, nil
}

// AddSkellam adds to each of the first n words of v an independent symmetric Skellam variable
// of the given variance: the difference of two Poisson variables of mean variance/2. A cohort
// of k clients doing so gives a sum with Skellam noise of variance k·variance, which SkellamRDP
// accounts for. rng nil means a ChaCha8 generator seeded from crypto/rand. The sampler works
// in float64 and its running time depends on the values drawn; it does not defend against an
// observer of the client's timing.
func AddSkellam(v quant.Vector, n int, variance float64, rng *rand.Rand) {
	if n > v.Len() {
		panic("dp: AddSkellam past the end of the vector")
	}
	if rng == nil {
		var seed [32]byte
		crand.Read(seed[:])
		rng = rand.New(rand.NewChaCha8(seed))
	}
	lam := variance / 2
	for i := range n {
		x := poisson(rng, lam) - poisson(rng, lam)
		if v.Wide() {
			v.U64[i] += uint64(x)
		} else {
			v.U32[i] += uint32(x)
		}
	}
}

// poisson draws a Poisson variable of mean lam: by multiplication of uniforms below 10 and by
// Hörmann's PTRS transformed rejection (1993, as numpy implements it) above.
func poisson(rng *rand.Rand, lam float64) int64 {
	if lam <= 0 {
		return 0
	}
	if lam < 10 {
		l, p := math.Exp(-lam), 1.0
		for k := int64(0); ; k++ {
			p *= rng.Float64()
			if p <= l {
				return k
			}
		}
	}
	slam, loglam := math.Sqrt(lam), math.Log(lam)
	b := 0.931 + 2.53*slam
	a := -0.059 + 0.02483*b
	invalpha := 1.1239 + 1.1328/(b-3.4)
	vr := 0.9277 - 3.6224/(b-2)
	for {
		u := rng.Float64() - 0.5
		v := rng.Float64()
		us := 0.5 - math.Abs(u)
		k := math.Floor((2*a/us+b)*u + lam + 0.43)
		if us >= 0.07 && v <= vr {
			return int64(k)
		}
		if k < 0 || (us < 0.013 && v > us) {
			continue
		}
		lg, _ := math.Lgamma(k + 1)
		if math.Log(v)+math.Log(invalpha)-math.Log(a/(us*us)+b) <= -lam+k*loglam-lg {
			return int64(k)
		}
	}
}
