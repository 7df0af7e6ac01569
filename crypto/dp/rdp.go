// Package dp implements the differential-privacy pieces of fedweave: a Rényi-DP accountant
// for the subsampled Gaussian mechanism (Mironov, Talwar, Zhang, "Rényi Differential Privacy
// of the Sampled Gaussian Mechanism", 2019) and for the Skellam mechanism (Agarwal, Kairouz,
// Liu, "The Skellam Mechanism for Differentially Private Federated Learning", NeurIPS 2021),
// and the distributed Skellam noise that clients add to their quantized updates before secure
// aggregation, so that the cohort's sum carries the noise of all of them.
//
// Where to start: [SampledGaussianRDP] and [SkellamRDP] give the RDP curve of one step at the
// orders [DefaultOrders]; an [Accountant] adds curves up (RDP composes by addition, order by
// order) per partner, and [Epsilon] converts a curve to (epsilon, delta)-DP. [NoisyLayout] and
// [AddSkellam] put the noise into a quant.Vector.
//
// The conversion is the classical one of Mironov (2017, Proposition 3), which TensorFlow
// Privacy's compute_rdp / get_privacy_spent and Opacus up to 1.1 use:
//
//	epsilon = min over alpha of  rdp(alpha) - log(delta)/(alpha-1).
//
// (Opacus from 1.2 and TF-Privacy's newer releases use the tighter conversion of Balle et al.
// 2020, which gives slightly smaller epsilons; ours is the conservative one.)
//
// What it does not do: the discrete Gaussian mechanism, privacy amplification by shuffling,
// or PLD accounting.
package dp

import (
	"errors"
	"fmt"
	"math"
)

// DefaultDelta is the delta fedweave reports epsilon at unless told otherwise: below one over
// the records of any partner it is meant for.
const DefaultDelta = 1e-5

// DefaultOrders are the Rényi orders TF-Privacy and Opacus use by default:
// 1.1, 1.2, ..., 10.9 and 12, 13, ..., 63.
var DefaultOrders = func() []float64 {
	var o []float64
	for x := 1; x < 100; x++ {
		o = append(o, 1+float64(x)/10)
	}
	for a := 12; a < 64; a++ {
		o = append(o, float64(a))
	}
	return o
}()

// SampledGaussianRDP returns the RDP, at each of orders, of `steps` compositions of the
// Gaussian mechanism with noise multiplier sigma (noise standard deviation over L2
// sensitivity) applied to a Poisson subsample of rate q. It follows TF-Privacy's
// rdp_accountant: the exact binomial expansion for integer orders and the series of Mironov
// et al. 2019 (Section 3.3) for fractional ones.
func SampledGaussianRDP(q, sigma float64, steps int, orders []float64) ([]float64, error) {
	if !(q >= 0 && q <= 1) {
		return nil, fmt.Errorf("dp: sampling rate %v, want 0 to 1", q)
	}
	if !(sigma > 0) || math.IsInf(sigma, 0) {
		return nil, fmt.Errorf("dp: noise multiplier %v, want a positive finite number", sigma)
	}
	if steps < 0 {
		return nil, fmt.Errorf("dp: %d steps", steps)
	}
	rdp := make([]float64, len(orders))
	for i, a := range orders {
		if !(a > 1) {
			return nil, fmt.Errorf("dp: order %v, want more than 1", a)
		}
		var r float64
		switch {
		case q == 0:
			r = 0
		case q == 1:
			r = a / (2 * sigma * sigma)
		case math.IsInf(a, 1):
			r = math.Inf(1)
		case a == math.Floor(a):
			r = logAInt(q, sigma, int(a)) / (a - 1)
		default:
			r = logAFrac(q, sigma, a) / (a - 1)
		}
		rdp[i] = r * float64(steps)
	}
	return rdp, nil
}

// logAInt is log A_alpha for integer alpha: the exact binomial expansion.
func logAInt(q, sigma float64, alpha int) float64 {
	logA := math.Inf(-1)
	for i := 0; i <= alpha; i++ {
		fi := float64(i)
		c := logBinom(float64(alpha), fi) + fi*math.Log(q) + float64(alpha-i)*math.Log1p(-q)
		logA = logAdd(logA, c+(fi*fi-fi)/(2*sigma*sigma))
	}
	return logA
}

// logAFrac is log A_alpha for fractional alpha, as the two series of Mironov et al. 2019.
func logAFrac(q, sigma, alpha float64) float64 {
	a0, a1 := math.Inf(-1), math.Inf(-1)
	z0 := sigma*sigma*math.Log(1/q-1) + 0.5
	for i := 0; ; i++ {
		fi := float64(i)
		coef, sign := binom(alpha, fi)
		logCoef := math.Log(coef)
		j := alpha - fi
		t0 := logCoef + fi*math.Log(q) + j*math.Log1p(-q)
		t1 := logCoef + j*math.Log(q) + fi*math.Log1p(-q)
		e0 := math.Log(0.5) + logErfc((fi-z0)/(math.Sqrt2*sigma))
		e1 := math.Log(0.5) + logErfc((z0-j)/(math.Sqrt2*sigma))
		s0 := t0 + (fi*fi-fi)/(2*sigma*sigma) + e0
		s1 := t1 + (j*j-j)/(2*sigma*sigma) + e1
		if sign > 0 {
			a0, a1 = logAdd(a0, s0), logAdd(a1, s1)
		} else {
			a0, a1 = logSub(a0, s0), logSub(a1, s1)
		}
		if math.Max(s0, s1) < -30 || i > 10000 {
			break
		}
	}
	return logAdd(a0, a1)
}

// binom returns |C(alpha, k)| and its sign for real alpha and whole k.
func binom(alpha, k float64) (float64, int) {
	v := 1.0
	for i := 0.0; i < k; i++ {
		v *= (alpha - i) / (i + 1)
	}
	if v < 0 {
		return -v, -1
	}
	return v, 1
}

func logBinom(n, k float64) float64 {
	a, _ := math.Lgamma(n + 1)
	b, _ := math.Lgamma(k + 1)
	c, _ := math.Lgamma(n - k + 1)
	return a - b - c
}

func logAdd(x, y float64) float64 {
	a, b := math.Min(x, y), math.Max(x, y)
	if math.IsInf(a, -1) {
		return b
	}
	return math.Log1p(math.Exp(a-b)) + b
}

// logSub is log(exp(x) - exp(y)) for x >= y.
func logSub(x, y float64) float64 {
	if math.IsInf(y, -1) {
		return x
	}
	if x <= y {
		return math.Inf(-1) // numerically equal: the difference vanishes
	}
	return math.Log(math.Expm1(x-y)) + y
}

// logErfc is log(erfc(x)), with an asymptotic expansion where erfc underflows.
func logErfc(x float64) float64 {
	if x < 26 {
		return math.Log(math.Erfc(x))
	}
	r := 1 / (x * x)
	return -math.Log(math.Pi)/2 - math.Log(x) - x*x - 0.5*r + 0.625*r*r - 37.0/24*r*r*r + 353.0/64*r*r*r*r
}

// SkellamRDP returns the RDP at each of orders of releasing a sum whose L1 and L2
// sensitivities are l1 and l2 (in quantization steps) with symmetric Skellam noise of
// variance variance (in steps squared) on every coordinate. It is Theorem 3.5 of Agarwal,
// Kairouz and Liu 2021 (the multi-dimensional Skellam mechanism), written with the variance
// V = 2mu of their Sk(mu, mu):
//
//	eps(alpha) = alpha·l2²/(2V) + min( ((2alpha-1)·l2² + 6·l1)/(4V²), 3·l1/(2V) ).
//
// The theorem holds for integer alpha; at a fractional order the bound of the next integer
// order is returned, which is valid because RDP does not decrease with the order.
func SkellamRDP(l1, l2, variance float64, orders []float64) ([]float64, error) {
	if !(variance > 0) || !(l1 >= 0) || !(l2 >= 0) || math.IsInf(variance, 0) || math.IsInf(l1, 0) || math.IsInf(l2, 0) {
		return nil, errors.New("dp: Skellam needs a positive variance and finite sensitivities")
	}
	v := variance
	rdp := make([]float64, len(orders))
	for i, a := range orders {
		if !(a > 1) {
			return nil, fmt.Errorf("dp: order %v, want more than 1", a)
		}
		a = math.Ceil(a)
		rdp[i] = a*l2*l2/(2*v) + math.Min(((2*a-1)*l2*l2+6*l1)/(4*v*v), 3*l1/(2*v))
	}
	return rdp, nil
}

// Epsilon converts an RDP curve at orders to (epsilon, delta)-DP by the classical
// conversion, and returns epsilon and the order that attains it.
func Epsilon(orders, rdp []float64, delta float64) (eps, order float64, err error) {
	if len(orders) != len(rdp) || len(orders) == 0 {
		return 0, 0, errors.New("dp: orders and RDP differ in length")
	}
	if !(delta > 0 && delta < 1) {
		return 0, 0, fmt.Errorf("dp: delta %v, want between 0 and 1", delta)
	}
	eps = math.Inf(1)
	for i, a := range orders {
		if e := rdp[i] - math.Log(delta)/(a-1); e < eps {
			eps, order = e, a
		}
	}
	return max(eps, 0), order, nil
}

// GaussianRDP returns the RDP at orders of one Gaussian mechanism of noise multiplier sigma
// (noise standard deviation over L2 sensitivity): alpha/(2 sigma²) (Mironov 2017,
// Proposition 7).
func GaussianRDP(sigma float64, orders []float64) ([]float64, error) {
	return SampledGaussianRDP(1, sigma, 1, orders)
}

// DPSGDRDP returns the RDP at orders of one round of DP-SGD with Poisson sampling: steps
// compositions of the subsampled Gaussian of rate q and noise multiplier sigma, plus, when
// extraNoise is not 0, one Gaussian mechanism of that noise multiplier (a release beside the
// steps, such as noisy input statistics).
func DPSGDRDP(q, sigma float64, steps int, extraNoise float64, orders []float64) ([]float64, error) {
	r, err := SampledGaussianRDP(q, sigma, steps, orders)
	if err != nil || extraNoise == 0 {
		return r, err
	}
	g, err := GaussianRDP(extraNoise, orders)
	if err != nil {
		return nil, err
	}
	for i := range r {
		r[i] += g[i]
	}
	return r, nil
}

// QuantizedSensitivity returns the L1 and L2 sensitivities, in quantization steps, of adding
// or removing one update of d values clipped to an L2 norm of clipSteps steps and then
// stochastically rounded: rounding moves each value by less than one step, so
// l2 = clipSteps + sqrt(d); an integer vector's L1 norm is at most its squared L2 norm and at
// most sqrt(d) times its L2 norm, so l1 = min(l2², sqrt(d)·l2).
func QuantizedSensitivity(clipSteps float64, d int) (l1, l2 float64) {
	sd := math.Sqrt(float64(d))
	l2 = clipSteps + sd
	return math.Min(l2*l2, sd*l2), l2
}
