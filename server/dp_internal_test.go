package server

import (
	"errors"
	"math"
	"strings"
	"testing"

	"github.com/fedweave/fedweave/crypto/dp"
)

// TestDPState checks the noise the task config derives, the sensitivity documented on
// DPConfig, that epsilon grows over committed rounds and falls with more contributors, and
// that a round past max_epsilon is refused without being counted.
func TestDPState(t *testing.T) {
	task := &TaskConfig{Name: "t", MinClients: 4, Secure: "secagg", DP: &DPConfig{NoiseMultiplier: 1, Clip: 2}}
	cfg, err := task.secaggConfig()
	if err != nil {
		t.Fatal(err)
	}
	if cfg.Quant.Clip != 2 {
		t.Errorf("quant clip %v, want the dp clip", cfg.Quant.Clip)
	}
	const S = 32767
	if want := float64(S) * S / 4; math.Abs(cfg.Noise/want-1) > 1e-12 {
		t.Errorf("noise %v per client, want %v", cfg.Noise, want)
	}
	d, err := newDPState(task, 10000)
	if err != nil {
		t.Fatal(err)
	}
	if d.l2 != S+100 || d.l1 != 100*(S+100) {
		t.Errorf("sensitivity l2 %v l1 %v", d.l2, d.l1)
	}
	if d.spent() != 0 {
		t.Fatal("spent before any round")
	}
	ann := d.announce()
	e4, err := d.check(4)
	if err != nil || e4 != ann {
		t.Fatalf("check(4) = %v, %v; announced %v", e4, err, ann)
	}
	if e8, _ := d.check(8); !(e8 < e4) {
		t.Errorf("8 contributors give epsilon %v, 4 give %v", e8, e4)
	}
	// One round at noise multiplier 1 is about a Gaussian mechanism of sigma 1: some 4 to 5 at 1e-5.
	if !(e4 > 3 && e4 < 6) {
		t.Errorf("one round: epsilon %v", e4)
	}
	e1 := d.charge(4)
	e2 := d.charge(4)
	if !(e2 > e1) || d.spent() != e2 {
		t.Errorf("rounds: %v then %v, spent %v", e1, e2, d.spent())
	}
	d.cfg.MaxEpsilon = (e2 + d.announce()) / 2
	if _, err := d.check(4); !errors.Is(err, dp.ErrBudget) || !strings.Contains(err.Error(), "max_epsilon") {
		t.Fatalf("over budget: %v", err)
	}
	if d.spent() != e2 {
		t.Error("a refused round was counted")
	}
}

func TestDPConfigRefused(t *testing.T) {
	for _, c := range []struct {
		secure string
		dp     DPConfig
	}{
		{"secagg", DPConfig{NoiseMultiplier: 0, Clip: 1}},
		{"secagg", DPConfig{NoiseMultiplier: 1, Clip: -1}},
		{"secagg", DPConfig{NoiseMultiplier: 1, Clip: 1, Delta: 1}},
		{"secagg", DPConfig{NoiseMultiplier: 1, Clip: 1, MaxEpsilon: -2}},
		{"none", DPConfig{NoiseMultiplier: 1, Clip: 1}},
		{"mhe", DPConfig{NoiseMultiplier: 1, Clip: 1}},
	} {
		task := &TaskConfig{Name: "t", MinClients: 2, Secure: c.secure, DP: &c.dp}
		if _, _, err := ProtocolFor(task, nil, "f"); err == nil {
			t.Errorf("%s %+v accepted", c.secure, c.dp)
		}
	}
}

// TestDPReplay: a restarted server's accountant, rebuilt from the round history, is where the
// first one was.
func TestDPReplay(t *testing.T) {
	task := &TaskConfig{Name: "t", MinClients: 3, Secure: "secagg", DP: &DPConfig{NoiseMultiplier: 1, Clip: 1}}
	first, err := newDPState(task, 1000)
	if err != nil {
		t.Fatal(err)
	}
	hist := []RoundRecord{
		{Round: 1, Committed: true, Participants: []string{"a", "b", "c"}},
		{Round: 2, Committed: false, Participants: []string{"a"}},
		{Round: 3, Committed: true, Participants: []string{"a", "b", "c", "d"}},
	}
	first.charge(3)
	first.charge(4)
	restarted, err := newDPState(task, 1000)
	if err != nil {
		t.Fatal(err)
	}
	restarted.replay(hist)
	if got, want := restarted.spent(), first.spent(); got != want || want == 0 {
		t.Fatalf("replayed epsilon %v, want %v", got, want)
	}
}
