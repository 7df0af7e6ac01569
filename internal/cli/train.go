package cli

import (
	"context"
	"flag"
	"fmt"
	"slices"
	"text/tabwriter"

	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/internal/progress"
	"github.com/fedweave/fedweave/internal/report"
	"github.com/fedweave/fedweave/models"
)

const trainUsage = `usage: fedweave train [flags]

Train trains one multimodal model on this machine, without federation: the baseline that a
federation is measured against, and the quickest way to see the encoders and fusion heads work.
It holds out a test split, prints one line per epoch, and ends with the test accuracy, macro-F1
and an ablation: the accuracy when the model sees only one modality of each test record.

--data takes:
  synthetic          the embedded generator: text, image and tabular fields whose label can
                     only be recovered by combining modalities (--n records, --seed)
  fashion-mnist      Fashion-MNIST from Debian's dataset-fashion-mnist package (images only)
  fashion-mnist:DIR  the same IDX files from DIR
  FILE.jsonl         a manifest, one record a line (see the dataset package documentation)

With --report FILE, the figures are written as JSON to FILE and the learning curve as a PNG
beside it (FILE with .png).

Example:

	$ fedweave train --data synthetic --fusion gated --report report.json
	$ fedweave train --data fashion-mnist --epochs 3
`

var trainCmd = &Command{
	Name:    "train",
	Summary: "train a multimodal model on one machine (centralized baseline)",
	Usage:   trainUsage,
	Flags: func(fs *flag.FlagSet) RunFunc {
		data := fs.String("data", "synthetic", "`dataset`: synthetic, fashion-mnist[:DIR] or a JSONL manifest")
		head := fs.String("fusion", "gated", "fusion `head`: concat, gated, attention or late")
		epochs := fs.Int("epochs", 8, "`number` of passes over the training split")
		batch := fs.Int("batch", 64, "mini-batch `size`")
		lr := fs.Float64("lr", 0, "learning `rate` (default 0.003 for adam, 0.05 for sgd)")
		opt := fs.String("optimizer", "adam", "`optimizer`: adam or sgd")
		seed := fs.Uint64("seed", 1, "`seed` for data generation, the split, initialisation and shuffling")
		n := fs.Int("n", 4000, "`number` of synthetic records")
		testFrac := fs.Float64("test-frac", 0.2, "`fraction` of records held out for testing (manifest and synthetic data)")
		mdrop := fs.Float64("modality-dropout", 0.2, "`probability` of hiding each modality of a training sample (one is always kept)")
		csv := fs.String("tabular-csv", "", "CSV `file` of tabular fields joined to a manifest by id")
		reportPath := fs.String("report", "", "write the results as JSON to `file`, and a PNG learning curve beside it")
		device := DeviceFlag(fs)
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *epochs < 1:
				return Usagef("--epochs must be at least 1, got %d", *epochs)
			case *batch < 1:
				return Usagef("--batch must be at least 1, got %d", *batch)
			case *n < 10:
				return Usagef("--n must be at least 10, got %d", *n)
			case !(*testFrac > 0 && *testFrac < 1):
				return Usagef("--test-frac must be between 0 and 1, got %g", *testFrac)
			case !(*mdrop >= 0 && *mdrop < 1):
				return Usagef("--modality-dropout must be from 0 to below 1, got %g", *mdrop)
			case !slices.Contains([]string{"adam", "sgd"}, *opt):
				return Usagef("unknown --optimizer %q: use adam or sgd", *opt)
			}
			if err := CheckDevice(*device); err != nil {
				return err
			}
			kind, err := fusion.ParseKind(*head)
			if err != nil {
				return Usagef("unknown --fusion %q: use concat, gated, attention or late", *head)
			}
			ld, err := loadData(*data, dataOptions{N: *n, Seed: *seed, TestFrac: *testFrac, TabularCSV: *csv})
			if err != nil {
				return err
			}
			spec := models.DefaultSpec(ld.Train.Schema, kind, ld.HasText)
			m, err := models.New(spec, *seed)
			if err != nil {
				return err
			}
			train, err := m.Encode(ld.Train)
			if err != nil {
				return err
			}
			test, err := m.Encode(ld.Test)
			if err != nil {
				return err
			}
			mods := spec.Modalities()
			names := make([]string, len(mods))
			for i, md := range mods {
				names[i] = md.String()
			}
			fmt.Fprintf(env.Stderr, "fedweave train: %s: %d train, %d test records; %v encoders, %s fusion, %d parameters\n",
				ld.Name, train.Len(), test.Len(), names, kind, m.NumParams())

			bar := progress.New(progress.OnlyTerminal(env.Stderr), 0, "training")
			started := false
			cfg := models.TrainConfig{
				Epochs: *epochs, BatchSize: *batch, Optimizer: *opt, LR: *lr, Seed: *seed, ModalityDropout: *mdrop,
				OnStep: func(done, total int) {
					if !started {
						bar = progress.New(progress.OnlyTerminal(env.Stderr), total, "training")
						started = true
					}
					bar.Add(1)
				},
			}
			res, err := m.Fit(ctx, train, test, cfg, func(e models.EpochStats) {
				bar.Describe(fmt.Sprintf("epoch %d/%d: test accuracy %.3f", e.Epoch, *epochs, e.Test.Accuracy))
				fmt.Fprintf(env.Stderr, "epoch %2d/%d  train loss %.4f  test loss %.4f  accuracy %.4f  macro-F1 %.4f  %6.0f samples/s\n",
					e.Epoch, *epochs, e.TrainLoss, e.Test.Loss, e.Test.Accuracy, e.Test.MacroF1, e.SamplesPerSec)
			})
			bar.Finish()
			if err != nil {
				return err
			}
			tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
			fmt.Fprintf(tw, "\ntest accuracy\t%.4f\n", res.Final.Accuracy)
			fmt.Fprintf(tw, "test macro-F1\t%.4f\n", res.Final.MacroF1)
			for _, name := range names {
				if acc, ok := res.Ablation[name]; ok {
					fmt.Fprintf(tw, "only %s\t%.4f\n", name, acc)
				}
			}
			fmt.Fprintf(tw, "training speed\t%.0f samples/s\n", res.SamplesPerSec)
			fmt.Fprintf(tw, "time\t%.1f s\n", res.Seconds)
			tw.Flush()
			if *reportPath == "" {
				return nil
			}
			return writeTrainReport(*reportPath, trainReport{
				Data: ld.Name, Fusion: string(kind), Epochs: *epochs, Seed: *seed, Optimizer: *opt,
				TrainRecords: train.Len(), TestRecords: test.Len(), Parameters: m.NumParams(), LayoutHash: m.LayoutHash(),
				Accuracy: res.Final.Accuracy, MacroF1: res.Final.MacroF1, Loss: res.Final.Loss,
				SamplesPerSec: res.SamplesPerSec, Seconds: res.Seconds, Ablation: res.Ablation, History: res.Epochs,
			}, env)
		}
	},
}

// trainReport is the JSON that --report writes.
type trainReport struct {
	Data          string              `json:"data"`
	Fusion        string              `json:"fusion"`
	Epochs        int                 `json:"epochs"`
	Seed          uint64              `json:"seed"`
	Optimizer     string              `json:"optimizer"`
	TrainRecords  int                 `json:"train_records"`
	TestRecords   int                 `json:"test_records"`
	Parameters    int                 `json:"parameters"`
	LayoutHash    string              `json:"layout_hash"`
	Accuracy      float64             `json:"accuracy"`
	MacroF1       float64             `json:"macro_f1"`
	Loss          float64             `json:"loss"`
	SamplesPerSec float64             `json:"samples_per_sec"`
	Seconds       float64             `json:"seconds"`
	Ablation      map[string]float64  `json:"ablation"`
	History       []models.EpochStats `json:"history"`
}

func writeTrainReport(path string, r trainReport, env *Env) error {
	if err := report.WriteJSON(path, r); err != nil {
		return Hint(err, "check that the directory of --report exists and is writable")
	}
	var x, acc, loss []float64
	for _, e := range r.History {
		x = append(x, float64(e.Epoch))
		acc = append(acc, e.Test.Accuracy)
		loss = append(loss, e.TrainLoss)
	}
	png := report.PlotPath(path)
	if err := report.Lines(png, "fedweave train: "+r.Fusion+" fusion", "epoch", "",
		report.Series{Name: "test accuracy", X: x, Y: acc},
		report.Series{Name: "train loss", X: x, Y: loss}); err != nil {
		return err
	}
	fmt.Fprintf(env.Stderr, "fedweave train: wrote %s and %s\n", path, png)
	return nil
}
