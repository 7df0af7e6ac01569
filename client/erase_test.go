package client_test

import (
	"context"
	"fmt"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// TestErasureReachesNextRound: a subject erased from a partner's store while its client runs
// is in none of the client's later rounds, neither in training nor in evaluation.
func TestErasureReachesNextRound(t *testing.T) {
	dir := t.TempDir()
	fed, err := servertest.NewFederation(dir, "consortium")
	if err != nil {
		t.Fatal(err)
	}
	all := dataset.Synthetic(dataset.SyntheticConfig{N: 160, Seed: 5})
	srv, err := fed.StartServer(server.Config{Task: server.TaskConfig{
		Name: "triage", Rounds: 3, MinClients: 2, Secure: "none", LocalEpochs: 1, BatchSize: 32, Seed: 3,
		RoundTimeout: server.Duration{Duration: 30 * time.Second},
		Model:        models.DefaultSpec(all.Schema, fusion.Gated, true),
	}}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	mine, theirs := all.Subset(seq(0, 80)), all.Subset(seq(80, 160))
	for i := range mine.Records {
		mine.Records[i].ID = fmt.Sprintf("p%d#%d", i%8, i) // eight subjects of ten records each
	}
	st, err := client.OpenStore(client.StoreOptions{
		Dir: filepath.Join(dir, "a-store"), KeyDir: filepath.Join(dir, "a-keys"), NoSync: true,
		Subject: func(r *dataset.Record) string { s, _, _ := strings.Cut(r.ID, "#"); return s },
	})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var mu sync.Mutex
	seen := map[uint64]int{} // records in training and evaluation, by round
	var wg sync.WaitGroup
	for i, src := range []client.Source{client.DatasetSource(mine), client.DatasetSource(theirs)} {
		id, err := fed.Identity(fmt.Sprintf("org%d", i), pki.RoleClient, "node")
		if err != nil {
			t.Fatal(err)
		}
		cfg := client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: fed.Pool(), Source: src, Seed: uint64(i)}
		if i == 0 {
			cfg.Store = st
			cfg.OnRound = func(e client.RoundEvent) {
				if e.Stage != "trained" {
					return
				}
				mu.Lock()
				seen[e.Round] = e.Train.Samples + e.Eval.N
				mu.Unlock()
				if e.Round == 1 {
					if n, err := st.EraseSubject("p3"); err != nil || n != 10 {
						t.Errorf("erase: %d records, %v", n, err)
					}
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
			if err := c.Run(ctx); err != nil {
				t.Errorf("client %d: %v", i, err)
			}
		}()
	}
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	mu.Lock()
	defer mu.Unlock()
	if seen[1] != 80 || seen[2] != 70 || seen[3] != 70 {
		t.Errorf("records per round: %v, want 80 then 70", seen)
	}
}

func seq(from, to int) []int {
	out := make([]int, 0, to-from)
	for i := from; i < to; i++ {
		out = append(out, i)
	}
	return out
}
