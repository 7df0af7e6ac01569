package server_test

import (
	"context"
	"encoding/json"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// TestFederationMHE runs a key set-up and then rounds under threshold homomorphic aggregation
// (3 of 4) over the real transport, with one client vanishing in the middle of round 1 (after
// the set-up, once it received the parameters): every round commits with the other three,
// which decrypt together; the set-up is no round; and the model changes.
func TestFederationMHE(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	task := testTask(2, 3)
	task.Secure = "mhe"
	task.MHE = server.MHEConfig{Threshold: 3}
	var mu sync.Mutex
	updates := map[uint64]int{} // bytes of the updates of each round
	srv, err := f.StartServer(server.Config{Task: task}, server.Options{
		OnUpdate: func(_ string, round uint64, msg []byte) {
			mu.Lock()
			updates[round] = max(updates[round], len(msg))
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	var setups atomic.Int32 // set-ups the clients saw end well
	errs := make([]error, 4)
	for i, d := range partition(4, 80) {
		id, err := f.Identity("org"+string(rune('a'+i)), pki.RoleClient, "node")
		if err != nil {
			t.Fatal(err)
		}
		cctx, vanish := context.WithCancel(ctx)
		cfg := client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: f.Pool(), Source: client.DatasetSource(d), Seed: uint64(i)}
		cfg.OnRound = func(e client.RoundEvent) {
			if e.Round >= server.SetupRoundBase && e.Stage == "end" && e.Committed {
				setups.Add(1)
			}
			if i == 0 && e.Round == 1 && e.Stage == "start" {
				vanish()
			}
		}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer vanish()
			errs[i] = c.Run(cctx)
		}()
	}
	for srv.Connected() < 4 {
		time.Sleep(10 * time.Millisecond)
	}
	_, initial := srv.Params()
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs[1:] {
		if err != nil {
			t.Errorf("client %d: %v", i+1, err)
		}
	}
	if n := setups.Load(); n != 4 {
		t.Errorf("%d clients saw a key set-up end well, want 4 (one set-up, then no other)", n)
	}
	hist, err := srv.History()
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 2 {
		t.Fatalf("%d rounds, want 2 (the set-up is no round): %+v", len(hist), hist)
	}
	if !hist[0].Committed || hist[0].Round != 1 || len(hist[0].Participants) != 3 || hist[0].Dropped != 1 {
		t.Errorf("round 1: %+v, want 3 participants and 1 dropped", hist[0])
	}
	if !hist[1].Committed || hist[1].Round != 2 || len(hist[1].Participants) != 3 {
		t.Errorf("round 2: %+v", hist[1])
	}
	_, final := srv.Params()
	if slices.Equal(final, initial) {
		t.Error("the model did not change")
	}
	// A ciphertext carries 16 bytes a value (two words modulo q0 for each slot).
	mu.Lock()
	defer mu.Unlock()
	for r := uint64(1); r <= 2; r++ {
		if updates[r] < 16*len(initial) {
			t.Errorf("round %d: updates of %d bytes for %d values: not mhe ciphertexts", r, updates[r], len(initial))
		}
	}
}

// TestMHEConfig: the mhe section parses, and a threshold above min_clients is refused.
func TestMHEConfig(t *testing.T) {
	task := testTask(2, 3)
	dec := json.NewDecoder(strings.NewReader(`{"secure": "mhe", "mhe": {"threshold": 3, "max_weight": 1000, "quant": {"bits": 12}}}`))
	dec.DisallowUnknownFields()
	if err := dec.Decode(&task); err != nil {
		t.Fatal(err)
	}
	if task.MHE.Threshold != 3 || task.MHE.MaxWeight != 1000 || task.MHE.Quant.Bits != 12 {
		t.Fatalf("mhe section: %+v", task.MHE)
	}
	cfg := server.Config{Federation: "consortium", Dir: t.TempDir(), Task: task}
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		t.Fatal(err)
	}
	cfg.Task.MHE.Threshold = 4
	if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), "mhe.threshold: 4 exceeds min_clients 3") {
		t.Errorf("threshold 4 of min_clients 3: %v", err)
	}
}
