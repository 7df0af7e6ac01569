package server_test

import (
	"context"
	"errors"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// runDP runs a DP task with one client per data set, the one at index budgeted (if >= 0)
// holding a sharing policy of max_epsilon budget; it returns the server's history, Run's
// error and the clients' errors.
func runDP(t *testing.T, task server.TaskConfig, n, budgeted int, budget float64) ([]server.RoundRecord, error, []error) {
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
// round records the cumulative epsilon, growing, at the task's delta.
func TestFederationDP(t *testing.T) {
	task := testTask(2, 3)
	task.Secure = "secagg"
	task.DP = &server.DPConfig{NoiseMultiplier: 1, Clip: 1}
	hist, err, errs := runDP(t, task, 3, -1, 0)
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
		if r.Delta != server.DefaultDelta || !(r.Epsilon > prev) {
			t.Errorf("round %d: epsilon %v (before %v), delta %v", r.Round, r.Epsilon, prev, r.Delta)
		}
		prev = r.Epsilon
	}
	if len(hist) != 2 {
		t.Fatalf("%d rounds", len(hist))
	}
	t.Logf("epsilon after 2 rounds of 3 at noise multiplier 1: %.3g", prev)
}

// TestFederationDPBudgets: a task whose max_epsilon is below what one round spends commits
// nothing, each round aborted with the reason; a partner whose own max_epsilon is below the
// announced epsilon stops contributing with ErrNotShared.
func TestFederationDPBudgets(t *testing.T) {
	task := testTask(1, 2)
	task.Secure = "secagg"
	task.DP = &server.DPConfig{NoiseMultiplier: 1, Clip: 1, MaxEpsilon: 0.01}
	hist, err, errs := runDP(t, task, 3, 2, 0.5)
	if err == nil || !strings.Contains(err.Error(), "giving up") {
		t.Errorf("Run: %v", err)
	}
	if !errors.Is(errs[2], client.ErrNotShared) || !strings.Contains(errs[2].Error(), "max_epsilon") {
		t.Errorf("budgeted client: %v", errs[2])
	}
	if len(hist) == 0 {
		t.Fatal("no round attempted")
	}
	for _, r := range hist {
		if r.Committed || !strings.Contains(r.Reason, "max_epsilon") || r.Epsilon != 0 {
			t.Errorf("round %d: committed %v, reason %q, epsilon %v", r.Round, r.Committed, r.Reason, r.Epsilon)
		}
	}
}
