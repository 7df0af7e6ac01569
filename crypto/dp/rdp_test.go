package dp

import (
	"math"
	"testing"
)

// TestSampledGaussianReference checks epsilons published for DP-SGD on MNIST (N = 60000,
// batch 256 so q = 256/60000, delta = 1e-5, steps = ceil(epochs·N/256), classical conversion
// rdp - log(delta)/(alpha-1)):
//   - tensorflow/privacy, tutorials/README.md ("Expected Output" and "Select Parameters", the
//     RDP orders of mnist_dpsgd_tutorial.py, which are DefaultOrders): noise multiplier 1.12
//     gives 1.00 after 1 epoch, 1.04 after 2 and 2.92 after 60; 0.6 for 30 epochs 9.74; 1.2 for
//     10 epochs 1.20;
//   - pytorch/opacus, opacus/scripts/compute_dp_sgd_privacy.py, the module docstring's example
//     (--noise_multiplier=1.12 --epochs=60 --delta=1e-5 --a 10 20 100): 2.95 at orders 10, 20
//     and 100.
//
// Each must be met within 1 %.
func TestSampledGaussianReference(t *testing.T) {
	for _, tc := range []struct {
		name          string
		sigma, epochs float64
		orders        []float64
		want          float64
	}{
		{"tfp_sigma1.12_1epoch", 1.12, 1, nil, 1.00},
		{"tfp_sigma1.12_2epochs", 1.12, 2, nil, 1.04},
		{"tfp_sigma1.12_60epochs", 1.12, 60, nil, 2.92},
		{"tfp_sigma0.6_30epochs", 0.6, 30, nil, 9.74},
		{"tfp_sigma1.2_10epochs", 1.2, 10, nil, 1.20},
		{"opacus_sigma1.12_60epochs", 1.12, 60, []float64{10, 20, 100}, 2.95},
	} {
		t.Run(tc.name, func(t *testing.T) {
			orders := tc.orders
			if orders == nil {
				orders = DefaultOrders
			}
			q := 256.0 / 60000
			steps := int(math.Ceil(tc.epochs * 60000 / 256))
			rdp, err := SampledGaussianRDP(q, tc.sigma, steps, orders)
			if err != nil {
				t.Fatal(err)
			}
			eps, order, err := Epsilon(orders, rdp, 1e-5)
			if err != nil {
				t.Fatal(err)
			}
			t.Logf("epsilon %.4f at order %v", eps, order)
			if math.Abs(eps-tc.want)/tc.want > 0.01 {
				t.Errorf("epsilon %.4f, want %.2f within 1%%", eps, tc.want)
			}
		})
	}
}

// TestSampledGaussianLimits checks closed forms: with q = 1 the mechanism is the plain
// Gaussian, RDP alpha/(2 sigma^2) per step (Mironov 2017, Proposition 7); with q = 0 it
// releases nothing; and the fractional-order series agrees with the integer expansion next
// to an integer order.
func TestSampledGaussianLimits(t *testing.T) {
	orders := []float64{2, 3.5, 10}
	rdp, err := SampledGaussianRDP(1, 2, 3, orders)
	if err != nil {
		t.Fatal(err)
	}
	for i, a := range orders {
		if want := 3 * a / 8; math.Abs(rdp[i]-want) > 1e-12 {
			t.Errorf("q=1 order %v: %v, want %v", a, rdp[i], want)
		}
	}
	rdp, _ = SampledGaussianRDP(0, 2, 3, orders)
	for i := range rdp {
		if rdp[i] != 0 {
			t.Errorf("q=0: %v", rdp[i])
		}
	}
	near, _ := SampledGaussianRDP(0.01, 1.1, 1, []float64{7.999999, 8, 8.000001})
	if math.Abs(near[0]-near[1])/near[1] > 1e-4 || math.Abs(near[2]-near[1])/near[1] > 1e-4 {
		t.Errorf("fractional and integer orders disagree: %v", near)
	}
}

// TestSkellamApproachesGaussian checks Theorem 3.5 of Agarwal et al. 2021 against its own
// remark: as the variance grows the Skellam bound tends to the Gaussian's alpha·Δ²/(2·var).
func TestSkellamApproachesGaussian(t *testing.T) {
	orders := []float64{2, 8, 32}
	for _, v := range []float64{1e4, 1e6, 1e8} {
		rdp, err := SkellamRDP(100, 10, v, orders)
		if err != nil {
			t.Fatal(err)
		}
		for i, a := range orders {
			g := a * 100 / (2 * v)
			if rdp[i] < g {
				t.Errorf("var %v order %v: Skellam %v below Gaussian %v", v, a, rdp[i], g)
			}
			if v >= 1e6 && (rdp[i]-g)/g > 0.01 {
				t.Errorf("var %v order %v: Skellam %v, Gaussian %v", v, a, rdp[i], g)
			}
		}
	}
}

// TestSkellamTheorem checks SkellamRDP against Theorem 3.5 of Agarwal, Kairouz and Liu 2021
// evaluated by hand in the paper's own parametrisation Sk(mu, mu) (variance 2mu), where it
// reads alpha·Δ2²/(4mu) + min(((2alpha-1)·Δ2² + 6·Δ1)/(16mu²), 3·Δ1/(4mu)); the same closed
// form, in the variance, is the _skellam_rdp of google-research/federated's
// distributed_dp/accounting_utils.py at scale 1. Both branches of the min are exercised, and a
// fractional order takes the bound of the next integer.
func TestSkellamTheorem(t *testing.T) {
	for _, tc := range []struct{ l1, l2, mu, alpha float64 }{
		{100, 10, 50, 2},     // small mu: the 3·Δ1/(4mu) branch
		{300, 10, 5000, 8},   // large mu: the quadratic branch
		{1e4, 120, 1e6, 32},  // a realistic update: d = 10^4, clip 120 steps
		{1e4, 120, 1e6, 7.3}, // fractional: bounded by order 8
	} {
		a := math.Ceil(tc.alpha)
		want := a*tc.l2*tc.l2/(4*tc.mu) + math.Min(((2*a-1)*tc.l2*tc.l2+6*tc.l1)/(16*tc.mu*tc.mu), 3*tc.l1/(4*tc.mu))
		got, err := SkellamRDP(tc.l1, tc.l2, 2*tc.mu, []float64{tc.alpha})
		if err != nil {
			t.Fatal(err)
		}
		if math.Abs(got[0]-want) > 1e-12*want {
			t.Errorf("%+v: %v, want %v", tc, got[0], want)
		}
	}
	if _, err := SkellamRDP(1, 1, math.Inf(1), []float64{2}); err == nil {
		t.Error("infinite variance accepted")
	}
}
