package server_test

import (
	"context"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/crypto/secagg"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// TestFederationSecAgg runs rounds under SecAgg+ over the real transport, with one client
// vanishing in the middle of round 1 (after it received the parameters): every round commits
// with the others, and the committed model differs from round to round.
func TestFederationSecAgg(t *testing.T) {
	for _, kem := range []string{"x25519", "hybrid"} {
		t.Run(kem, func(t *testing.T) {
			f, err := servertest.NewFederation(t.TempDir(), "consortium")
			if err != nil {
				t.Fatal(err)
			}
			task := testTask(2, 3)
			task.Secure = "secagg"
			task.SecAgg = secagg.Config{KEM: kem}
			srv, err := f.StartServer(server.Config{Task: task}, server.Options{})
			if err != nil {
				t.Fatal(err)
			}
			defer srv.Close()
			ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
			defer cancel()
			var wg sync.WaitGroup
			errs := make([]error, 4)
			for i, d := range partition(4, 80) {
				id, err := f.Identity("org"+string(rune('a'+i)), pki.RoleClient, "node")
				if err != nil {
					t.Fatal(err)
				}
				cctx, vanish := context.WithCancel(ctx)
				cfg := client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: f.Pool(), Source: client.DatasetSource(d), Seed: uint64(i)}
				if i == 0 {
					cfg.OnRound = func(e client.RoundEvent) {
						if e.Round == 1 && e.Stage == "start" {
							vanish()
						}
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
			hist, err := srv.History()
			if err != nil {
				t.Fatal(err)
			}
			if len(hist) != 2 {
				t.Fatalf("%d rounds, want 2: %+v", len(hist), hist)
			}
			if !hist[0].Committed || len(hist[0].Participants) != 3 || hist[0].Dropped != 1 {
				t.Errorf("round 1: %+v, want 3 participants and 1 dropped", hist[0])
			}
			if !hist[1].Committed || len(hist[1].Participants) != 3 {
				t.Errorf("round 2: %+v", hist[1])
			}
			_, final := srv.Params()
			if slices.Equal(final, initial) {
				t.Error("the model did not change")
			}
		})
	}
}
