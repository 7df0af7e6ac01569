package server_test

import (
	"context"
	"errors"
	"math"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/dp"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// runDP runs a DP task with one client per data set, the one at index budgeted (if >= 0)
// holding a sharing policy of max_epsilon budget, each with the privacy ledger in ledgers[i];
// it returns the server's history, Run's error and the clients' errors.
func runDP(t *testing.T, task server.TaskConfig, n, budgeted int, budget float64, ledgers []*client.Ledger) ([]server.RoundRecord, error, []error) {
	t.Helper()
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.StartServer(server.Config{Task: task}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make([]error, n)
	for i, d := range partition(n, 60) {
		id, err := f.Identity("org"+string(rune('a'+i)), pki.RoleClient, "node")
		if err != nil {
			t.Fatal(err)
		}
		cfg := client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: f.Pool(), Source: client.DatasetSource(d), Seed: uint64(i)}
		if ledgers != nil {
			cfg.Ledger = ledgers[i]
		}
		if i == budgeted {
			cfg.Sharing = &client.SharingPolicy{MaxEpsilon: budget}
		}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Run(ctx)
		}()
	}
	for srv.Connected() < n {
		time.Sleep(10 * time.Millisecond)
	}
	runErr := srv.Run(ctx)
	cancel()
	wg.Wait()
	hist, err := srv.History()
	if err != nil {
		t.Fatal(err)
	}
	return hist, runErr, errs
}

// TestFederationDP runs rounds with distributed DP over the real transport: each committed
// round records the cumulative epsilon per partner, growing, at the task's delta.
func TestFederationDP(t *testing.T) {
	task := testTask(2, 3)
	task.Secure = "secagg"
	task.DP = &server.DPConfig{Partner: &server.PartnerDP{NoiseMultiplier: 1, Clip: 1}}
	hist, err, errs := runDP(t, task, 3, -1, 0, nil)
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("client %d: %v", i, err)
		}
	}
	prev := 0.0
	for _, r := range hist {
		if !r.Committed {
			t.Fatalf("round %d aborted: %s", r.Round, r.Reason)
		}
		if r.Delta != server.DefaultDelta || !(r.Epsilon > prev) || r.DP == nil || r.DP.PartnerEpsilon != r.Epsilon || r.DP.Partner == nil {
			t.Errorf("round %d: epsilon %v (before %v), delta %v, dp %+v", r.Round, r.Epsilon, prev, r.Delta, r.DP)
		}
		prev = r.Epsilon
	}
	if len(hist) != 2 {
		t.Fatalf("%d rounds", len(hist))
	}
	t.Logf("epsilon after 2 rounds of 3 at noise multiplier 1: %.3g", prev)
}

// TestFederationDPSGD runs DP-SGD in every client over the real transport, with secure
// aggregation: every round records the cumulative epsilon per record, and each partner's
// own ledger, computed from the rounds' parameters on its side, agrees with the server's
// figure (every partner took part in every round; the first round fitted the tabular
// statistics with noise).
func TestFederationDPSGD(t *testing.T) {
	task := testTask(2, 3)
	task.Secure = "secagg"
	task.DP = &server.DPConfig{Record: &server.RecordDP{NoiseMultiplier: 1, Clip: 1, SampleRate: 0.25}}
	ledgers := []*client.Ledger{client.NewLedger(), client.NewLedger(), client.NewLedger()}
	hist, err, errs := runDP(t, task, 3, -1, 0, ledgers)
	if err != nil {
		t.Fatal(err)
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("client %d: %v", i, err)
		}
	}
	if len(hist) != 2 {
		t.Fatalf("%d rounds", len(hist))
	}
	prev := 0.0
	for _, r := range hist {
		if !r.Committed || r.DP == nil || r.DP.Record == nil || r.DP.Record.Steps != 4 || !(r.Epsilon > prev) || r.Epsilon != r.DP.RecordEpsilon {
			t.Fatalf("round %d: committed %v (%s), epsilon %v, dp %+v", r.Round, r.Committed, r.Reason, r.Epsilon, r.DP)
		}
		if (r.Round == 1) != (r.DP.Record.NormalizerNoise > 0) {
			t.Errorf("round %d: normalizer noise %v", r.Round, r.DP.Record.NormalizerNoise)
		}
		prev = r.Epsilon
	}
	for i, l := range ledgers {
		got := l.Epsilon(client.UnitRecord, server.DefaultDelta)
		if math.Abs(got-prev) > 1e-9*prev {
			t.Errorf("client %d's ledger: epsilon %v, the server's %v", i, got, prev)
		}
	}
	t.Logf("epsilon per record after 2 rounds: %.3g", prev)
}

// TestFederationDPBudgets: a task whose max_epsilon is below what one round spends starts no
// round: Run stops with dp.ErrBudget and the clients are told the task is done. A partner
// whose own max_epsilon is below what a round would bring its ledger to stops contributing
// with ErrNotShared, and the others go on without it.
func TestFederationDPBudgets(t *testing.T) {
	task := testTask(1, 2)
	task.DP = &server.DPConfig{Record: &server.RecordDP{NoiseMultiplier: 1, Clip: 1, SampleRate: 0.5}, MaxEpsilon: 0.01}
	hist, err, errs := runDP(t, task, 2, -1, 0, nil)
	if !errors.Is(err, dp.ErrBudget) || !strings.Contains(err.Error(), "max_epsilon") {
		t.Errorf("Run: %v", err)
	}
	if len(hist) != 0 {
		t.Errorf("%d rounds attempted over budget", len(hist))
	}
	for i, err := range errs {
		if err != nil && !errors.Is(err, context.Canceled) {
			t.Errorf("client %d: %v", i, err)
		}
	}

	task = testTask(1, 2)
	task.DP = &server.DPConfig{Record: &server.RecordDP{NoiseMultiplier: 1, Clip: 1, SampleRate: 0.5}}
	hist, err, errs = runDP(t, task, 3, 2, 0.5, nil)
	if err != nil {
		t.Fatal(err)
	}
	if !errors.Is(errs[2], client.ErrNotShared) || !strings.Contains(errs[2].Error(), "max_epsilon") {
		t.Errorf("budgeted client: %v", errs[2])
	}
	if len(hist) != 1 || !hist[0].Committed || len(hist[0].Participants) != 2 {
		t.Errorf("history %+v", hist)
	}
}
