package server_test

import (
	"context"
	"errors"
	"slices"
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

// testTask is a small synthetic task: quick enough for a test, big enough to learn.
func testTask(rounds, minClients int) server.TaskConfig {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 4, Seed: 1})
	return server.TaskConfig{
		Name: "triage", Rounds: rounds, MinClients: minClients, Secure: "none", Strategy: "fedavg",
		LocalEpochs: 1, BatchSize: 32, Seed: 7,
		RoundTimeout: server.Duration{Duration: 20 * time.Second},
		Model:        models.DefaultSpec(d.Schema, fusion.Gated, true),
	}
}

// partition gives each of n clients its own synthetic records.
func partition(n, perClient int) []*dataset.Dataset {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: n * perClient, Seed: 3})
	parts := dataset.DirichletPartition(d.Labels(), len(d.Schema.Classes), n, 1, 3)
	out := make([]*dataset.Dataset, n)
	for i, idx := range parts {
		out[i] = d.Subset(idx)
	}
	return out
}

// startClients runs one SDK client per data set until ctx ends; errs receives each Run's result.
func startClients(t *testing.T, ctx context.Context, f *servertest.Federation, addr string, data []*dataset.Dataset) (*sync.WaitGroup, chan error) {
	t.Helper()
	var wg sync.WaitGroup
	errs := make(chan error, len(data))
	for i, d := range data {
		id, err := f.Identity("org"+string(rune('a'+i)), pki.RoleClient, "node")
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(client.Config{Server: addr, Task: "triage", Identity: id, CAPool: f.Pool(), Source: client.DatasetSource(d), Seed: uint64(i)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Run(ctx)
		}()
	}
	return &wg, errs
}

func TestFederationRounds(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.StartServer(server.Config{Task: testTask(3, 3)}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	_, initial := srv.Params()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wg, errs := startClients(t, ctx, f, srv.Addr, partition(3, 150))
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("client: %v", err)
		}
	}
	hist, err := srv.History()
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 3 {
		t.Fatalf("%d rounds recorded, want 3", len(hist))
	}
	for i, r := range hist {
		if !r.Committed || r.Round != uint64(i+1) || len(r.Participants) != 3 || r.Dropped != 0 {
			t.Errorf("round record %+v", r)
		}
		if r.EvalRecords == 0 || r.EvalAccuracy <= 0 {
			t.Errorf("round %d has no client evaluation", r.Round)
		}
	}
	if hist[2].EvalAccuracy <= hist[0].EvalAccuracy {
		t.Errorf("evaluation did not improve: %.3f then %.3f", hist[0].EvalAccuracy, hist[2].EvalAccuracy)
	}
	round, final := srv.Params()
	if round != 3 || slices.Equal(final, initial) {
		t.Fatalf("after the task the server holds round %d, changed: %v", round, !slices.Equal(final, initial))
	}
}

// TestClientRefused: a certificate of another federation's CA never gets a round channel.
func TestClientRefused(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.StartServer(server.Config{Task: testTask(1, 1)}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	other, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	id, err := other.Identity("orga", pki.RoleClient, "node")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: f.Pool(), Source: client.DatasetSource(partition(1, 20)[0])})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
	defer cancel()
	if err := c.Run(ctx); !errors.Is(err, context.DeadlineExceeded) && !errors.Is(err, client.ErrRefused) {
		t.Fatalf("a client of another CA got %v", err)
	}
	hist, _ := srv.History()
	if len(hist) != 0 {
		t.Fatalf("a round ran: %+v", hist)
	}
}
