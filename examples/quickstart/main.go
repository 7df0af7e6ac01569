// Quickstart trains one multimodal model across three partner organisations that never pool
// their records, using the fedweave SDK the way a partner does:
//
//	go run ./examples/quickstart
//
// It plays every part in one process, on loopback, with nothing mocked: the operator's
// federation CA and aggregation server (mutual TLS, encrypted store), and three partners, each
// with its own share of the data, that join the task with package client. In a real federation
// each part runs in its own organisation: the operator runs `fedweave server --config
// server.yaml`, and each partner runs the client code below (or `fedweave client`) next to its
// own records, with the certificate the federation's CA issued it.
package main

import (
	"context"
	"fmt"
	"os"
	"os/signal"
	"path/filepath"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

const (
	partners = 3
	rounds   = 3
	task     = "triage"
)

func main() {
	if err := run(); err != nil {
		fmt.Fprintln(os.Stderr, "quickstart:", err)
		os.Exit(1)
	}
}

func run() error {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt)
	defer stop()
	dir, err := os.MkdirTemp("", "fedweave-quickstart-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	// The data: fedweave's synthetic records, whose label only the combination of text, image
	// and tabular fields reveals. A test set that no partner sees measures the final model; the
	// rest is split among the partners with skewed labels, and each partner holds only some of
	// the modalities (partner 1 has no images, partner 2 no text).
	all := dataset.Synthetic(dataset.SyntheticConfig{N: 2000, Seed: 1})
	train, test := dataset.Split(all, 0.2, 1)
	parts := dataset.DirichletPartition(train.Labels(), len(train.Schema.Classes), partners, 0.5, 1)
	avail := dataset.StandardAvailabilities(partners)

	// The operator: a federation CA, and the aggregation server with the task. The model has an
	// encoder per modality and a gated fusion head; every party builds it from this spec.
	fed, err := servertest.NewFederation(dir, "quickstart")
	if err != nil {
		return err
	}
	spec := models.DefaultSpec(train.Schema, fusion.Gated, true)
	// The partners' orgs are the federation's members: the server's policies deny every call
	// of anyone else.
	var members []string
	for i := range partners {
		members = append(members, fmt.Sprintf("hospital-%c", 'a'+i))
	}
	srv, err := fed.StartServer(server.Config{Task: server.TaskConfig{
		Name: task, Rounds: rounds, MinClients: partners, Secure: "none",
		LocalEpochs: 2, BatchSize: 32, Seed: 1, Model: spec,
	}, Policy: server.PolicyConfig{Members: members}}, server.Options{})
	if err != nil {
		return err
	}
	defer srv.Close()
	fmt.Printf("server on %s: task %q, %d rounds, %s fusion\n", srv.Addr, task, rounds, spec.Fusion)

	// The partners. Each gets a certificate from the federation's CA (in real life: `fedweave ca
	// issue` on the CA's machine), then configures a client with the server's address, the task,
	// its certificate, the CA, and its records, and runs it until the task is complete.
	errs := make(chan error, partners)
	for i := range partners {
		org := members[i]
		prefix := filepath.Join(dir, org)
		p := pki.Principal{Federation: fed.Name, Org: org, Role: pki.RoleClient, Name: "node1"}
		if err := fed.CA.IssueFiles(p, pki.IssueOptions{Validity: time.Hour}, prefix); err != nil {
			return err
		}
		records := dataset.ApplyAvailability(train.Subset(parts[i]), avail[i])
		fmt.Printf("partner %s: %d records with %v\n", org, len(records.Records), avail[i].Names())
		c, err := client.New(client.Config{
			Server:   srv.Addr,
			Task:     task,
			CertFile: prefix + ".crt", KeyFile: prefix + ".key",
			CAFile: filepath.Join(dir, "ca", pki.CACertFile),
			Source: client.DatasetSource(records), // or client.ManifestSource("records.jsonl", ...)
			Seed:   uint64(i + 1),
		})
		if err != nil {
			return err
		}
		go func() { errs <- c.Run(ctx) }()
	}

	// The operator runs the task: each round the server sends the global model, the partners
	// train on their own records and send back their updates, and the server aggregates them.
	// Run returns once every round is committed; the partners' Run returns when they hear so.
	if err := srv.Run(ctx); err != nil {
		return err
	}
	for range partners {
		if err := <-errs; err != nil {
			return err
		}
	}

	// What the server recorded of each round: who took part, and how the round's starting
	// model did on the partners' own test splits (they report only that figure).
	hist, err := srv.History()
	if err != nil {
		return err
	}
	fmt.Println("\nround  partners  accuracy  seconds   (accuracy: the round's starting model, on the partners' test splits)")
	for _, r := range hist {
		fmt.Printf("%5d  %8d  %8.3f  %7.1f\n", r.Round, len(r.Participants), r.EvalAccuracy, r.Seconds)
	}

	// The final global model, on the held-out test set that no partner trained on.
	_, params := srv.Params()
	m, err := models.New(srv.Spec(), 1)
	if err != nil {
		return err
	}
	if err := m.SetParams(params, m.LayoutHash()); err != nil {
		return err
	}
	enc, err := m.Encode(test)
	if err != nil {
		return err
	}
	met, err := m.Evaluate(enc, models.PredictOptions{})
	if err != nil {
		return err
	}
	fmt.Printf("\nfinal global model on %d held-out records: accuracy %.3f, macro-F1 %.3f (chance: 0.25)\n", met.N, met.Accuracy, met.MacroF1)
	return nil
}
