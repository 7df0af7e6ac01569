// Package demo runs a whole fedweave federation in one process, with real parts: a federation
// CA, the aggregation server with its encrypted store, and N partner clients that each hold their
// own share of the data, talking gRPC with mutual TLS over 127.0.0.1. It is what
// `fedweave demo` runs.
//
// The clients' data differ the way partners' data do: labels are skewed across clients by a
// Dirichlet partition, and each client has only some modalities (dataset.StandardAvailabilities).
// A held-out test set that no client trains on measures the federated model after every round,
// and, at the end, the two baselines a partner compares against: a model trained on its own
// records alone (local only) and one trained on everybody's records pooled (centralized, what
// federation approximates without pooling).
//
// Each client keeps its records in its own encrypted record store under Dir/clients/NAME
// (client.OpenStore: badger encryption, records sealed per data subject, pseudonymous keys),
// imports its share into it and trains from it, as a partner with a store does. Nothing the
// demo writes under Dir holds a record's text or id in the clear, and nothing it prints does.
package demo

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/dp"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/crypto/secagg"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/internal/progress"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// Options configure a demo run.
type Options struct {
	Clients     int
	Rounds      int
	LocalEpochs int // per round; default 1
	Secure      string
	KEM         string // SecAgg+ key agreement: x25519 or hybrid
	Strategy    string // default fedavg
	Fusion      fusion.Kind
	Data        *dataset.Dataset // all records; the demo holds out a test set and partitions the rest
	DataName    string
	Alpha       float64 // Dirichlet label skew; default 0.5
	Drop        int     // clients that vanish in the middle of a round
	// DP, if not nil, turns on distributed differential privacy (secure must be secagg).
	DP     *server.DPConfig
	Dir    string // keys, stores and checkpoints; must exist
	Seed   uint64
	Stderr io.Writer // progress bar and one line per round
	Logger *slog.Logger
}

// Report is what a demo run measured. Its JSON is the demo's --report.
type Report struct {
	Secure      string        `json:"secure"`
	Fusion      string        `json:"fusion"`
	Data        string        `json:"data"`
	Clients     int           `json:"clients"`
	Rounds      []RoundReport `json:"rounds"`
	Final       Final         `json:"final"`
	LocalOnly   []LocalOnly   `json:"local_only"`
	Centralized Final         `json:"centralized"`
	TestRecords int           `json:"test_records"`
	Served      *Served       `json:"served,omitempty"`
	ServeError  string        `json:"serve_error,omitempty"` // why the served prediction failed, if it did
	DP          *DPReport     `json:"dp,omitempty"`
	Seconds     float64       `json:"seconds"`
}

// DPReport is the differential privacy of a run with Options.DP: the settings and the
// guarantee reached.
type DPReport struct {
	// Unit is what Epsilon protects: "record" (DP-SGD in every client) or "partner"
	// (distributed noise alone).
	Unit    string  `json:"unit"`
	Epsilon float64 `json:"epsilon"` // after the last committed round, at Delta
	Delta   float64 `json:"delta"`
	// PartnerEpsilon is the guarantee per partner when distributed noise runs beside DP-SGD.
	PartnerEpsilon float64          `json:"partner_epsilon,omitempty"`
	Config         *server.DPConfig `json:"config"`
	// Stopped says why the task ended before its rounds, if its privacy budget did that.
	Stopped string `json:"stopped,omitempty"`
}

// RoundReport is one round: the global model after it, on the held-out test set.
type RoundReport struct {
	Round        uint64  `json:"round"`
	Committed    bool    `json:"committed"`
	Participants int     `json:"participants"`
	Dropped      int     `json:"dropped"`
	Accuracy     float64 `json:"accuracy"`
	Loss         float64 `json:"loss"`
	Seconds      float64 `json:"seconds"`
	// Epsilon is the task's cumulative privacy loss after the round, at Delta, in the unit of
	// Report.DP; both 0 without DP. PartnerEpsilon is the per-partner figure when distributed
	// noise runs beside DP-SGD.
	Epsilon        float64 `json:"epsilon"`
	Delta          float64 `json:"delta"`
	PartnerEpsilon float64 `json:"partner_epsilon,omitempty"`
}

// Final is a model's figures on the held-out test set.
type Final struct {
	Accuracy float64            `json:"accuracy"`
	MacroF1  float64            `json:"macro_f1"`
	Loss     float64            `json:"loss"`
	Ablation map[string]float64 `json:"ablation"`
}

// LocalOnly is a client's model trained on its own records alone.
type LocalOnly struct {
	Client     string   `json:"client"`
	Modalities []string `json:"modalities"`
	Records    int      `json:"records"`
	Accuracy   float64  `json:"accuracy"`
	MacroF1    float64  `json:"macro_f1"`
}

// Run runs the federation and the baselines.
func Run(ctx context.Context, opt Options) (*Report, error) {
	start := time.Now()
	if opt.LocalEpochs <= 0 {
		opt.LocalEpochs = 1
	}
	if opt.Alpha == 0 {
		opt.Alpha = 0.5
	}
	if opt.Strategy == "" {
		opt.Strategy = "fedavg"
	}
	if opt.Stderr == nil {
		opt.Stderr = io.Discard
	}
	if opt.Drop >= opt.Clients {
		return nil, fmt.Errorf("demo: --drop %d leaves no client of %d", opt.Drop, opt.Clients)
	}
	trainAll, test := dataset.Split(opt.Data, 0.2, opt.Seed)
	parts := dataset.DirichletPartition(trainAll.Labels(), len(trainAll.Schema.Classes), opt.Clients, opt.Alpha, opt.Seed)
	avail := dataset.StandardAvailabilities(opt.Clients)
	shares := make([]*dataset.Dataset, opt.Clients)
	var pooled []dataset.Record
	for i, idx := range parts {
		shares[i] = dataset.ApplyAvailability(trainAll.Subset(idx), avail[i])
		pooled = append(pooled, shares[i].Records...)
	}
	hasText := false
	for _, r := range trainAll.Records {
		hasText = hasText || r.Has(dataset.Text)
	}
	spec := models.DefaultSpec(trainAll.Schema, opt.Fusion, hasText)

	f, err := servertest.NewFederation(opt.Dir, "demo")
	if err != nil {
		return nil, err
	}
	eval, err := newEvaluator(spec, opt.Seed, test)
	if err != nil {
		return nil, err
	}
	rep := &Report{Secure: opt.Secure, Fusion: string(opt.Fusion), Data: opt.DataName, Clients: opt.Clients, TestRecords: len(test.Records)}
	fmt.Fprintf(opt.Stderr, "fedweave demo: %s; %d clients, %d rounds, %s aggregation, %s fusion; stores under %s\n",
		opt.DataName, opt.Clients, opt.Rounds, opt.Secure, opt.Fusion, opt.Dir)
	// One partner shares no images, by its own sharing policy: the last one that has them.
	restricted := -1
	for i, a := range avail {
		if a[dataset.Image] {
			restricted = i
		}
	}
	noImages := &client.SharingPolicy{Modalities: []string{"text", "tabular"}}
	for i, s := range shares {
		sharing := ""
		if i == restricted {
			sharing = "; sharing policy: no images leave it"
		}
		fmt.Fprintf(opt.Stderr, "  client %s: %4d records, %s, labels %v%s\n", clientName(i), len(s.Records), avail[i], labelCounts(s), sharing)
	}

	bar := progress.New(progress.OnlyTerminal(opt.Stderr), opt.Rounds, "federated rounds")
	var mu sync.Mutex
	var roundErr error
	task := server.TaskConfig{
		Name: "demo", Rounds: opt.Rounds, MinClients: opt.Clients - opt.Drop, Secure: opt.Secure, SecAgg: secagg.Config{KEM: opt.KEM}, Strategy: opt.Strategy,
		LocalEpochs: opt.LocalEpochs, BatchSize: 64, Seed: opt.Seed, ModalityDropout: 0.2,
		RoundTimeout: server.Duration{Duration: 2 * time.Minute}, Model: spec,
		Classes: trainAll.Schema.Classes, TabularFields: trainAll.Schema.TabularFields,
	}
	if opt.Strategy == "fedprox" {
		task.ProxMu = 0.01
	}
	task.DP = opt.DP
	if opt.DP != nil && opt.DP.Record != nil {
		// Under DP-SGD's noise Adam needs a larger step than its default 0.003 to get anywhere
		// in the few steps a budget allows (a sweep on the synthetic data: see the README).
		task.Optimizer, task.LR = "adam", 0.03
	}
	var srv *servertest.Running
	srv, err = f.StartServer(server.Config{Task: task}, server.Options{
		Logger: opt.Logger,
		OnRound: func(r server.RoundRecord) {
			rr := RoundReport{Round: r.Round, Committed: r.Committed, Participants: len(r.Participants), Dropped: r.Dropped, Seconds: r.Seconds, Epsilon: r.Epsilon, Delta: r.Delta}
			privacy := ""
			if r.DP != nil {
				if opt.DP.Record != nil {
					rr.PartnerEpsilon = r.DP.PartnerEpsilon
				}
				privacy = fmt.Sprintf("  epsilon %.3g", r.Epsilon)
			}
			if r.Committed {
				_, params := srv.Params()
				m, err := eval.score(params)
				if err != nil {
					mu.Lock()
					roundErr = err
					mu.Unlock()
				}
				rr.Accuracy, rr.Loss = m.Accuracy, m.Loss
				bar.Add(1)
			}
			mu.Lock()
			rep.Rounds = append(rep.Rounds, rr)
			mu.Unlock()
			state := "committed"
			if !r.Committed {
				state = "aborted: " + r.Reason
			}
			bar.Describe(fmt.Sprintf("round %d: accuracy %.3f", r.Round, rr.Accuracy))
			fmt.Fprintf(opt.Stderr, "round %d  %d of %d clients, %d dropped  accuracy %.4f  loss %.4f%s  %.1fs  %s\n",
				r.Round, len(r.Participants), r.Cohort, r.Dropped, rr.Accuracy, rr.Loss, privacy, r.Seconds, state)
		},
	})
	if err != nil {
		return nil, err
	}
	defer srv.Close()

	// The clients; the first opt.Drop of them vanish in the middle of round dropRound.
	dropRound := uint64(min(2, opt.Rounds))
	cctx, cancelAll := context.WithCancel(ctx)
	defer cancelAll()
	var wg sync.WaitGroup
	errs := make([]error, opt.Clients)
	for i := range opt.Clients {
		id, err := f.Identity("org-"+clientName(i), pki.RoleClient, "node-1")
		if err != nil {
			return nil, err
		}
		st, err := client.OpenStore(client.StoreOptions{
			Dir:    filepath.Join(opt.Dir, "clients", clientName(i), "store"),
			KeyDir: filepath.Join(opt.Dir, "clients", clientName(i), "keys"), NoSync: true,
		})
		if err != nil {
			return nil, err
		}
		ictx, vanish := context.WithCancel(cctx)
		cfg := client.Config{
			Server: srv.Addr, Task: "demo", Identity: id, CAPool: f.Pool(),
			Source: client.DatasetSource(shares[i]), Store: st, Seed: opt.Seed + uint64(i), Logger: opt.Logger,
		}
		if i == restricted {
			cfg.Sharing = noImages
		}
		if i < opt.Drop {
			cfg.OnRound = func(e client.RoundEvent) {
				if e.Round == dropRound && e.Stage == "start" {
					fmt.Fprintf(opt.Stderr, "client %s vanishes in the middle of round %d\n", clientName(i), e.Round)
					vanish()
				}
			}
		}
		c, err := client.New(cfg)
		if err != nil {
			vanish()
			st.Close()
			return nil, err
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			defer st.Close()
			defer vanish()
			errs[i] = c.Run(ictx)
		}()
	}
	// Round 1 waits for every client, so that all of them start from the same model; later
	// rounds go on with whoever is left (at least MinClients).
	for srv.Connected() < opt.Clients {
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-time.After(20 * time.Millisecond):
		}
	}
	stopped := ""
	if err := srv.Run(ctx); errors.Is(err, dp.ErrBudget) {
		stopped = err.Error() // the privacy budget ended the task: its last model is the release
		fmt.Fprintf(opt.Stderr, "%v\n", err)
	} else if err != nil {
		cancelAll()
		wg.Wait()
		return nil, fmt.Errorf("demo: federation: %w", err)
	}
	wg.Wait()
	bar.Finish()
	if opt.DP != nil {
		rep.DP = &DPReport{Unit: "partner", Config: opt.DP, Stopped: stopped, Delta: server.DefaultDelta}
		if opt.DP.Record != nil {
			rep.DP.Unit = "record"
		}
		if opt.DP.Delta != 0 {
			rep.DP.Delta = opt.DP.Delta
		}
		for _, r := range rep.Rounds {
			if r.Committed {
				rep.DP.Epsilon, rep.DP.PartnerEpsilon = r.Epsilon, r.PartnerEpsilon
			}
		}
	}
	for i, err := range errs {
		if err != nil && i >= opt.Drop {
			return nil, fmt.Errorf("demo: client %s: %w", clientName(i), err)
		}
	}
	if roundErr != nil {
		return nil, roundErr
	}

	// The federated model, then the baselines, on the same held-out test set.
	_, params := srv.Params()
	if rep.Final, err = eval.final(params); err != nil {
		return nil, err
	}
	epochs := opt.Rounds * opt.LocalEpochs
	fmt.Fprintf(opt.Stderr, "baselines: each client alone, and all records pooled (%d epochs each)\n", epochs)
	// The baselines are independent: train them side by side, one goroutine each, so that both
	// cores work as they did for the federation's clients.
	pool := &dataset.Dataset{Schema: trainAll.Schema, Records: pooled}
	sets := append(slices.Clone(shares), pool)
	trained := make([]*models.Model, len(sets))
	berrs := make([]error, len(sets))
	var bwg sync.WaitGroup
	for i, d := range sets {
		bwg.Add(1)
		go func() {
			defer bwg.Done()
			trained[i], berrs[i] = trainOn(ctx, spec, opt.Seed, d, epochs)
		}()
	}
	bwg.Wait()
	for i, err := range berrs {
		if err != nil {
			return nil, fmt.Errorf("demo: baseline %d: %w", i, err)
		}
	}
	for i, s := range shares {
		met, err := eval.score(trained[i].Params())
		if err != nil {
			return nil, err
		}
		rep.LocalOnly = append(rep.LocalOnly, LocalOnly{
			Client: clientName(i), Modalities: avail[i].Names(), Records: len(s.Records), Accuracy: met.Accuracy, MacroF1: met.MacroF1,
		})
	}
	if rep.Centralized, err = eval.final(trained[len(sets)-1].Params()); err != nil {
		return nil, err
	}
	// The federated model, served: one held-out record explained through the inference service.
	// A model that cannot be evaluated (heavy DP noise can drive its activations to infinity)
	// is refused by the service; the demo reports that instead of failing.
	if rep.Served, err = serve(ctx, f, srv, test, opt.Seed); err != nil {
		if ctx.Err() != nil {
			return nil, err
		}
		rep.ServeError = err.Error()
		fmt.Fprintf(opt.Stderr, "serving the federated model failed: %v\n", err)
	}
	rep.Seconds = time.Since(start).Seconds()
	return rep, nil
}

func clientName(i int) string { return string(rune('a'+i%26)) + strings.Repeat("'", i/26) }

func labelCounts(d *dataset.Dataset) []int {
	n := make([]int, len(d.Schema.Classes))
	for _, r := range d.Records {
		if r.Label >= 0 {
			n[r.Label]++
		}
	}
	return n
}

// evaluator scores parameter vectors on the held-out test set.
type evaluator struct {
	m    *models.Model
	test *models.Encoded
}

func newEvaluator(spec models.Spec, seed uint64, test *dataset.Dataset) (*evaluator, error) {
	m, err := models.New(spec, seed)
	if err != nil {
		return nil, err
	}
	enc, err := m.Encode(test)
	if err != nil {
		return nil, err
	}
	return &evaluator{m: m, test: enc}, nil
}

func (e *evaluator) score(params []float32) (models.Metrics, error) {
	if err := e.m.SetParams(params, e.m.LayoutHash()); err != nil {
		return models.Metrics{}, err
	}
	return e.m.Evaluate(e.test, models.PredictOptions{})
}

func (e *evaluator) final(params []float32) (Final, error) {
	met, err := e.score(params)
	if err != nil {
		return Final{}, err
	}
	abl, err := e.m.Ablation(e.test)
	if err != nil {
		return Final{}, err
	}
	return Final{Accuracy: met.Accuracy, MacroF1: met.MacroF1, Loss: met.Loss, Ablation: abl}, nil
}

// trainOn trains a fresh model of spec, from the federation's initial parameters, on d.
func trainOn(ctx context.Context, spec models.Spec, seed uint64, d *dataset.Dataset, epochs int) (*models.Model, error) {
	m, err := models.New(spec, seed)
	if err != nil {
		return nil, err
	}
	enc, err := m.Encode(d)
	if err != nil {
		return nil, err
	}
	_, err = m.Train(ctx, enc, models.TrainConfig{Epochs: epochs, BatchSize: 64, Seed: seed, ModalityDropout: 0.2})
	return m, err
}

// TempDir makes the directory a demo runs in when the user names none; the caller removes it.
func TempDir() (string, error) { return os.MkdirTemp("", "fedweave-demo-") }
