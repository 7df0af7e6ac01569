package cli

import (
	"context"
	"flag"
	"fmt"
	"io"
	"log/slog"
	"os"
	"slices"
	"text/tabwriter"

	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/internal/demo"
	"github.com/fedweave/fedweave/internal/report"
	"github.com/fedweave/fedweave/server"
)

// The demo's --dp defaults: DP-SGD in every client, a guarantee per record. Each partner holds
// a few hundred records, so a step needs a large share of them for the signal to stand above
// the noise: Poisson samples of a quarter, noise multiplier 2, two local epochs (8 steps) a
// round. Chosen in a sweep on the synthetic data to reach an epsilon that means something
// (about 5 at delta 1e-5 after 5 rounds) while the model still learns; see the README.
const (
	DemoDPNoise      = 2.0  // noise multiplier of DP-SGD
	DemoDPClip       = 1.0  // per-record L2 clip
	DemoDPSampleRate = 0.25 // share of a partner's records in each step
	// Distributed noise (--dp-partner-noise) is off by default: with four partners, noise that
	// protects a whole partner swamps the mean (a multiplier of 0.5 reached epsilon 32 per
	// partner and chance accuracy); it needs cohorts of hundreds.
	DemoDPPartnerClip = 10.0
)

const demoUsage = `usage: fedweave demo [flags]

Demo runs a whole federation on one machine, with real parts: a federation CA, an aggregation
server with an encrypted store, and --clients partner clients talking gRPC with mutual TLS on
127.0.0.1. Each client holds its own share of the data, with skewed labels and only some of the
modalities, and trains locally; the server aggregates their updates for --rounds rounds. A test
set that no client sees measures the federated model after every round, and at the end the
model each client would get alone (local only) and the one that pooling all records would give
(centralized).

Keys, stores and checkpoints go under --dir (by default a temporary directory, removed at the
end). With --report FILE, the figures are written as JSON to FILE and the accuracy per round as
a PNG beside it.

Protection of updates (--secure):
  secagg   SecAgg+ pairwise masking with dropout recovery: the server learns the sum of the
           updates and nothing else (the default; --kem hybrid adds ML-KEM-768)
  none     plaintext updates; a baseline for debugging, never for real partners
  mhe      threshold BGV homomorphic encryption: one key set-up, then the server decrypts
           only the sum, with the help of a majority of the clients

Example:

	# four clients, five rounds, one client vanishing in the middle of round 2
	$ fedweave demo --clients 4 --rounds 5 --secure secagg --drop 1 --report demo.json
`

var demoCmd = &Command{
	Name:    "demo",
	Summary: "run a whole federation on one machine",
	Usage:   demoUsage,
	Flags: func(fs *flag.FlagSet) RunFunc {
		clients := fs.Int("clients", 4, "`number` of partner clients")
		rounds := fs.Int("rounds", 5, "`number` of federated rounds")
		localEpochs := fs.Int("local-epochs", 2, "`number` of local epochs per round")
		secure := fs.String("secure", "secagg", "`protocol` that protects updates: none, secagg or mhe")
		kem := fs.String("kem", "x25519", "SecAgg+ key agreement: x25519, or hybrid (X25519 with ML-KEM-768)")
		strategy := fs.String("strategy", "fedavg", "server `strategy`: fedavg, fedprox, fedadam or fedyogi")
		head := fs.String("fusion", "gated", "fusion `head`: concat, gated, attention or late")
		data := fs.String("data", "synthetic", "`dataset` the clients split among themselves: synthetic or a JSONL manifest")
		n := fs.Int("n", 4000, "`number` of synthetic records")
		alpha := fs.Float64("alpha", 0.5, "Dirichlet label skew across clients (smaller: more skewed)")
		drop := fs.Int("drop", 0, "`number` of clients that vanish in the middle of round 2")
		dir := fs.String("dir", "", "`directory` for keys, stores and checkpoints (default: a temporary one, removed at the end)")
		reportPath := fs.String("report", "", "write the figures as JSON to `file`, and a PNG of accuracy per round beside it")
		seed := fs.Uint64("seed", 1, "`seed` for data, partitions, initialisation and training")
		verbose := fs.Bool("v", false, "log the server's and clients' events to stderr")
		dpOn := fs.Bool("dp", false, "differential privacy per record: every client trains with DP-SGD; epsilon is reported per round")
		dpNoise := fs.Float64("dp-noise", DemoDPNoise, "with --dp, DP-SGD's noise `multiplier` (noise standard deviation over the clip)")
		dpClip := fs.Float64("dp-clip", DemoDPClip, "with --dp, the L2 `norm` each record's gradient is clipped to")
		dpRate := fs.Float64("dp-sample-rate", DemoDPSampleRate, "with --dp, the `share` of a client's records in each DP-SGD step")
		dpEps := fs.Float64("dp-epsilon", 0, "with --dp, the task's max `epsilon` (at delta 1e-5): the task stops before a round would pass it; 0: no limit")
		dpPartner := fs.Float64("dp-partner-noise", 0, "with --dp and --secure secagg, also distributed Skellam noise of this `multiplier` for a guarantee per partner; 0: off")
		dpPartnerClip := fs.Float64("dp-partner-clip", DemoDPPartnerClip, "with --dp-partner-noise, the L2 `norm` each partner's update is clipped to")
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *clients < 1 || *clients > 64:
				return Usagef("--clients must be from 1 to 64, got %d", *clients)
			case *rounds < 1:
				return Usagef("--rounds must be at least 1, got %d", *rounds)
			case *localEpochs < 1:
				return Usagef("--local-epochs must be at least 1, got %d", *localEpochs)
			case !slices.Contains([]string{"none", "secagg", "mhe"}, *secure):
				return Usagef("unknown --secure %q: use none, secagg or mhe", *secure)
			case !slices.Contains([]string{"fedavg", "fedprox", "fedadam", "fedyogi"}, *strategy):
				return Usagef("unknown --strategy %q: use fedavg, fedprox, fedadam or fedyogi", *strategy)
			case *drop < 0 || *drop >= *clients:
				return Usagef("--drop must be from 0 to %d (fewer than --clients), got %d", *clients-1, *drop)
			case !(*alpha > 0):
				return Usagef("--alpha must be positive, got %g", *alpha)
			case *n < 50:
				return Usagef("--n must be at least 50, got %d", *n)
			case !(*dpNoise > 0) || !(*dpClip > 0) || !(*dpPartnerClip > 0):
				return Usagef("--dp-noise, --dp-clip and --dp-partner-clip must be positive")
			case !(*dpRate > 0 && *dpRate <= 1):
				return Usagef("--dp-sample-rate must be above 0 and at most 1, got %g", *dpRate)
			case !(*dpEps >= 0) || !(*dpPartner >= 0):
				return Usagef("--dp-epsilon and --dp-partner-noise must be 0 (off) or positive")
			}
			if *kem != "x25519" && *kem != "hybrid" {
				return Usagef("unknown --kem %q: use x25519 or hybrid", *kem)
			}
			kind, err := fusion.ParseKind(*head)
			if err != nil {
				return Usagef("unknown --fusion %q: use concat, gated, attention or late", *head)
			}
			if *data != "synthetic" && len(*data) >= 13 && (*data)[:13] == "fashion-mnist" {
				return Hint(fmt.Errorf("--data %s: the demo needs multimodal records", *data), "use synthetic or a JSONL manifest; fedweave train takes fashion-mnist")
			}
			ld, err := loadData(*data, dataOptions{N: *n, Seed: *seed, TestFrac: 0.2})
			if err != nil {
				return err
			}
			all := ld.Train
			all.Records = append(slices.Clone(all.Records), ld.Test.Records...)
			workDir := *dir
			if workDir == "" {
				if workDir, err = demo.TempDir(); err != nil {
					return err
				}
				defer os.RemoveAll(workDir)
			} else if err := os.MkdirAll(workDir, 0o700); err != nil {
				return Hint(err, "pass a --dir you can write to")
			}
			logger := slog.New(slog.DiscardHandler)
			if *verbose {
				logger = slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
			}
			var dpc *server.DPConfig
			if *dpOn {
				set := map[string]bool{}
				fs.Visit(func(f *flag.Flag) { set[f.Name] = true })
				if !set["fusion"] {
					// Under DP-SGD's noise the gated head settles on the cleanest modality
					// (tabular) and starves the other encoders; concatenation keeps all three
					// learning (README).
					kind = fusion.Concat
				}
				dpc = &server.DPConfig{MaxEpsilon: *dpEps, Record: &server.RecordDP{NoiseMultiplier: *dpNoise, Clip: *dpClip, SampleRate: *dpRate}}
				if *dpPartner > 0 {
					if *secure != "secagg" {
						return Usagef("--dp-partner-noise needs --secure secagg (distributed noise is added under its masks)")
					}
					dpc.Partner = &server.PartnerDP{NoiseMultiplier: *dpPartner, Clip: *dpPartnerClip}
				}
			}
			rep, err := demo.Run(ctx, demo.Options{
				Clients: *clients, Rounds: *rounds, LocalEpochs: *localEpochs, Secure: *secure, KEM: *kem, Strategy: *strategy,
				Fusion: kind, Data: all, DataName: ld.Name, Alpha: *alpha, Drop: *drop, Dir: workDir, Seed: *seed,
				Stderr: env.Stderr, Logger: logger, DP: dpc,
			})
			if err != nil {
				if *dir != "" {
					return Hint(err, "a --dir from an earlier run holds its own CA and task: use a new --dir")
				}
				return err
			}
			printDemo(env.Stdout, rep)
			if *reportPath == "" {
				return nil
			}
			return writeDemoReport(*reportPath, rep, env)
		}
	},
}

func printDemo(w io.Writer, r *demo.Report) {
	tw := tabwriter.NewWriter(w, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "\nmodel (%d held-out test records)\taccuracy\tmacro-F1\n", r.TestRecords)
	fmt.Fprintf(tw, "federated, %s aggregation, %s fusion\t%.4f\t%.4f\n", r.Secure, r.Fusion, r.Final.Accuracy, r.Final.MacroF1)
	fmt.Fprintf(tw, "centralized (all records pooled)\t%.4f\t%.4f\n", r.Centralized.Accuracy, r.Centralized.MacroF1)
	for _, l := range r.LocalOnly {
		fmt.Fprintf(tw, "local only, client %s (%d records, %v)\t%.4f\t%.4f\n", l.Client, l.Records, l.Modalities, l.Accuracy, l.MacroF1)
	}
	tw.Flush()
	fmt.Fprintf(w, "\nfederated model with one modality: ")
	for i, m := range []string{"text", "image", "tabular"} {
		if acc, ok := r.Final.Ablation[m]; ok {
			if i > 0 {
				fmt.Fprint(w, ", ")
			}
			fmt.Fprintf(w, "%s %.4f", m, acc)
		}
	}
	if d := r.DP; d != nil {
		fmt.Fprintf(w, "\n\ndifferential privacy: epsilon %.3g per %s at delta %g", d.Epsilon, d.Unit, d.Delta)
		if rd := d.Config.Record; rd != nil {
			fmt.Fprintf(w, " (DP-SGD in every client: noise multiplier %g, clip %g, sample rate %g)", rd.NoiseMultiplier, rd.Clip, rd.SampleRate)
		}
		if p := d.Config.Partner; p != nil {
			if d.Config.Record != nil {
				fmt.Fprintf(w, "\n  and epsilon %.3g per partner", d.PartnerEpsilon)
			}
			fmt.Fprintf(w, " (distributed Skellam noise under secure aggregation: noise multiplier %g, clip %g)", p.NoiseMultiplier, p.Clip)
		}
		fmt.Fprint(w, "\n  the centralized and local-only models above train without DP")
		if d.Stopped != "" {
			fmt.Fprintf(w, "\n  the task stopped early: %s", d.Stopped)
		}
	}
	printServed(w, r.Served)
	fmt.Fprintf(w, "\ntotal time %.1f s\n", r.Seconds)
}

func writeDemoReport(path string, r *demo.Report, env *Env) error {
	if err := report.WriteJSON(path, r); err != nil {
		return Hint(err, "check that the directory of --report exists and is writable")
	}
	var x, acc, central, bestLocal []float64
	best := 0.0
	for _, l := range r.LocalOnly {
		best = max(best, l.Accuracy)
	}
	for _, rd := range r.Rounds {
		if !rd.Committed {
			continue
		}
		x = append(x, float64(rd.Round))
		acc = append(acc, rd.Accuracy)
		central = append(central, r.Centralized.Accuracy)
		bestLocal = append(bestLocal, best)
	}
	png := report.PlotPath(path)
	if err := report.Lines(png, fmt.Sprintf("fedweave demo: %d clients, %s aggregation", r.Clients, r.Secure), "round", "test accuracy",
		report.Series{Name: "federated", X: x, Y: acc},
		report.Series{Name: "centralized (pooled)", X: x, Y: central, Reference: true},
		report.Series{Name: "best local-only", X: x, Y: bestLocal, Reference: true}); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "fedweave demo: wrote %s and %s\n", path, png)
	return nil
}
