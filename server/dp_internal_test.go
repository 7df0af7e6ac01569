package server

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/fedweave/fedweave/crypto/dp"
)

// TestDPPartner checks the noise the task config derives for distributed DP, the sensitivity
// documented on PartnerDP, that epsilon grows over committed rounds and falls with more
// contributors, and that a round past max_epsilon is refused without being counted.
func TestDPPartner(t *testing.T) {
	task := &TaskConfig{Name: "t", MinClients: 4, Secure: "secagg", DP: &DPConfig{Partner: &PartnerDP{NoiseMultiplier: 1, Clip: 2}}}
	cfg, err := task.secaggConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Quant.Clip != 2 {
		t.Errorf("quant clip %v, want the dp clip", cfg.Quant.Clip)
	}
	const S = 32767
	if want := float64(S) * S / 3; math.Abs(cfg.Noise/want-1) > 1e-12 {
		t.Errorf("noise %v per client, want %v", cfg.Noise, want)
	}
	d, err := newDPState(task, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if d.l2 != S+100 || d.l1 != 100*(S+100) {
		t.Errorf("sensitivity l2 %v l1 %v", d.l2, d.l1)
	}
	if d.spent().PartnerEpsilon != 0 {
		t.Fatal("spent before any round")
	}
	c4 := d.charges(4, false)
	if c4.Record != nil || c4.Partner == nil || c4.Partner.Variance != 3*cfg.Noise {
		t.Fatalf("charges %+v", c4)
	}
	e4, err := d.would(c4)
	if err != nil {
		t.Fatal(err)
	}
	if e8, _ := d.would(d.charges(8, false)); !(e8.PartnerEpsilon < e4.PartnerEpsilon) {
		t.Errorf("8 contributors give epsilon %v, 4 give %v", e8.PartnerEpsilon, e4.PartnerEpsilon)
	}
	// One round at noise multiplier 1 is about a Gaussian mechanism of sigma 1: some 4 to 5 at 1e-5.
	if !(e4.PartnerEpsilon > 3 && e4.PartnerEpsilon < 6) {
		t.Errorf("one round: epsilon %v", e4.PartnerEpsilon)
	}
	r1, r2 := d.charges(4, false), d.charges(4, false)
	if err := d.charge(r1); err != nil {
		t.Fatal(err)
	}
	if err := d.charge(r2); err != nil {
		t.Fatal(err)
	}
	if !(r2.PartnerEpsilon > r1.PartnerEpsilon) || d.spent().PartnerEpsilon != r2.PartnerEpsilon || d.headline(r2) != r2.PartnerEpsilon {
		t.Errorf("rounds: %v then %v, spent %v", r1.PartnerEpsilon, r2.PartnerEpsilon, d.spent())
	}
	next, _ := d.would(d.charges(4, false))
	d.cfg.MaxEpsilon = (r2.PartnerEpsilon + next.PartnerEpsilon) / 2
	if _, err := d.would(d.charges(4, false)); !errors.Is(err, dp.ErrBudget) || !strings.Contains(err.Error(), "max_epsilon") {
		t.Fatalf("over budget: %v", err)
	}
	if d.spent().PartnerEpsilon != r2.PartnerEpsilon {
		t.Error("a refused round was counted")
	}
}

// TestDPRecord checks the accounting of DP-SGD: a round is local_epochs·ceil(1/q) steps of the
// subsampled Gaussian, the first round from a model without tabular statistics adds one
// Gaussian release, the headline epsilon is the per-record one, and max_epsilon stops the
// round that would pass it.
func TestDPRecord(t *testing.T) {
	task := &TaskConfig{Name: "t", MinClients: 2, Secure: "none", LocalEpochs: 2,
		DP: &DPConfig{Record: &RecordDP{NoiseMultiplier: 1.1, Clip: 1, SampleRate: 0.03}}}
	if err := task.validateDP(); err != nil {
		t.Fatal(err)
	}
	d, err := newDPState(task, 1000)
	if err != nil {
		t.Fatal(err)
	}
	c := d.charges(2, true)
	if c.Partner != nil || c.Record == nil || c.Record.Steps != 2*34 || c.Record.NormalizerNoise != 4 {
		t.Fatalf("charges %+v", c.Record)
	}
	if err := d.charge(c); err != nil {
		t.Fatal(err)
	}
	want, _ := dp.SampledGaussianRDP(0.03, 1.1, 68, dp.DefaultOrders)
	g, _ := dp.GaussianRDP(4, dp.DefaultOrders)
	for i := range want {
		want[i] += g[i]
	}
	e, _, _ := dp.Epsilon(dp.DefaultOrders, want, DefaultDelta)
	if math.Abs(c.RecordEpsilon-e) > 1e-12 || d.headline(c) != c.RecordEpsilon {
		t.Errorf("record epsilon %v, want %v", c.RecordEpsilon, e)
	}
	c2 := d.charges(2, false)
	if c2.Record.NormalizerNoise != 0 {
		t.Error("the statistics charged again once set")
	}
	d.cfg.MaxEpsilon = c.RecordEpsilon + 0.01
	if _, err := d.would(c2); !errors.Is(err, dp.ErrBudget) || !strings.Contains(err.Error(), "record epsilon") {
		t.Errorf("over budget: %v", err)
	}
}

func TestDPConfigRefused(t *testing.T) {
	rec := &RecordDP{NoiseMultiplier: 1, Clip: 1, SampleRate: 0.1}
	part := &PartnerDP{NoiseMultiplier: 1, Clip: 1}
	for _, c := range []struct {
		secure string
		dp     DPConfig
		want   string
	}{
		{"secagg", DPConfig{}, "set record"},
		{"secagg", DPConfig{Partner: &PartnerDP{NoiseMultiplier: 0, Clip: 1}}, "dp.partner.noise_multiplier"},
		{"secagg", DPConfig{Partner: &PartnerDP{NoiseMultiplier: 1, Clip: -1}}, "dp.partner.clip"},
		{"secagg", DPConfig{Partner: part, Delta: 1}, "dp.delta"},
		{"secagg", DPConfig{Partner: part, MaxEpsilon: -2}, "dp.max_epsilon"},
		{"none", DPConfig{Partner: part}, "needs secure: secagg"},
		{"mhe", DPConfig{Partner: part}, "needs secure: secagg"},
		{"secagg1", DPConfig{Partner: part}, "min_clients of at least 2"},
		{"none", DPConfig{Record: &RecordDP{NoiseMultiplier: 1, Clip: 1}}, "dp.record.sample_rate"},
		{"none", DPConfig{Record: &RecordDP{NoiseMultiplier: 1, Clip: 1, SampleRate: 1.5}}, "dp.record.sample_rate"},
		{"secagg", DPConfig{Record: &RecordDP{NoiseMultiplier: math.Inf(1), Clip: 1, SampleRate: 0.1}}, "dp.record.noise_multiplier"},
		{"none", DPConfig{Record: &RecordDP{NoiseMultiplier: 1, Clip: 0, SampleRate: 0.1}}, "dp.record.clip"},
		{"none", DPConfig{Record: &RecordDP{NoiseMultiplier: 1, Clip: 1, SampleRate: 0.1, NormalizerNoise: -1}}, "dp.record.normalizer_noise"},
	} {
		task := &TaskConfig{Name: "t", MinClients: 2, Secure: c.secure, DP: &c.dp, MHE: MHEConfig{Threshold: 2}}
		if c.secure == "secagg1" {
			task.Secure, task.MinClients = "secagg", 1
		}
		if _, _, err := ProtocolFor(task, nil, "f"); err == nil || !strings.Contains(err.Error(), c.want) {
			t.Errorf("%s %+v: %v, want an error naming %q", c.secure, c.dp, err, c.want)
		}
	}
	for _, secure := range []string{"none", "secagg"} {
		task := &TaskConfig{Name: "t", MinClients: 2, Secure: secure, DP: &DPConfig{Record: rec}}
		if _, _, err := ProtocolFor(task, nil, "f"); err != nil {
			t.Errorf("DP-SGD with %s: %v", secure, err)
		}
	}
}

// TestDPReplay: a restarted server's accountant, rebuilt from the round history, is where the
// first one was; aborted rounds are not counted.
func TestDPReplay(t *testing.T) {
	task := &TaskConfig{Name: "t", MinClients: 3, Secure: "secagg", LocalEpochs: 1,
		DP: &DPConfig{Partner: &PartnerDP{NoiseMultiplier: 1, Clip: 1}, Record: &RecordDP{NoiseMultiplier: 1, Clip: 1, SampleRate: 0.1}}}
	first, err := newDPState(task, 1000)
	if err != nil {
		t.Fatal(err)
	}
	var hist []RoundRecord
	for i, k := range []int{3, 2, 4} {
		c := first.charges(k, i == 0)
		committed := k >= 3
		if committed {
			if err := first.charge(c); err != nil {
				t.Fatal(err)
			}
		}
		hist = append(hist, RoundRecord{Round: uint64(i + 1), Committed: committed, DP: c})
	}
	restarted, err := newDPState(task, 1000)
	if err != nil {
		t.Fatal(err)
	}
	if err := restarted.replay(hist); err != nil {
		t.Fatal(err)
	}
	if got, want := restarted.spent(), first.spent(); got != want || want.RecordEpsilon == 0 || want.PartnerEpsilon == 0 {
		t.Fatalf("replayed %+v, want %+v", got, want)
	}
}
