package client_test

import (
	"context"
	"fmt"
	"log"
	"os"
	"sync"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// Two partners train one model for two rounds. Each runs the SDK with its own certificate and
// its own records; the operator's side (the CA and the server) is started with servertest.
func Example() {
	dir, err := os.MkdirTemp("", "fedweave-example-")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	fed, err := servertest.NewFederation(dir, "consortium")
	if err != nil {
		log.Fatal(err)
	}
	records := dataset.Synthetic(dataset.SyntheticConfig{N: 240, Seed: 1})
	srv, err := fed.StartServer(server.Config{Task: server.TaskConfig{
		Name: "triage", Rounds: 2, MinClients: 2, Seed: 1,
		Model: models.DefaultSpec(records.Schema, fusion.Gated, true),
	}}, server.Options{})
	if err != nil {
		log.Fatal(err)
	}
	defer srv.Close()

	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	for i, idx := range dataset.DirichletPartition(records.Labels(), 4, 2, 1, 1) {
		// Each partner: its certificate, its records, and Run until the task is complete.
		id, err := fed.Identity(fmt.Sprintf("hospital-%d", i+1), pki.RoleClient, "node")
		if err != nil {
			log.Fatal(err)
		}
		c, err := client.New(client.Config{
			Server: srv.Addr, Task: "triage", Identity: id, CAPool: fed.Pool(),
			Source: client.DatasetSource(records.Subset(idx)),
		})
		if err != nil {
			log.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := c.Run(ctx); err != nil {
				log.Fatal(err)
			}
		}()
	}
	if err := srv.Run(ctx); err != nil {
		log.Fatal(err)
	}
	wg.Wait()
	history, err := srv.History()
	if err != nil {
		log.Fatal(err)
	}
	for _, r := range history {
		fmt.Printf("round %d: committed %v, %d participants\n", r.Round, r.Committed, len(r.Participants))
	}
	// Output:
	// round 1: committed true, 2 participants
	// round 2: committed true, 2 participants
}
