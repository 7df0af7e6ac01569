package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"text/tabwriter"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/dp"
)

// "fedweave client budget": a partner reads its privacy ledger (client.Ledger) from its
// client's encrypted store: the epsilon each task spent, per record and per partner, and the
// totals over all tasks that its sharing policy's max_epsilon is checked against.

func runClientBudget(ctx context.Context, env *Env, config string, args []string) error {
	fs := flag.NewFlagSet("fedweave client budget", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.StringVar(&config, "config", config, "the client's config `file`, whose store holds the ledger")
	dir := fs.String("store", "", "the store `directory`, instead of --config")
	keys := fs.String("keys", "", "the store's key `directory`, with --store")
	delta := fs.Float64("delta", 0, "report epsilon at this `delta`; default: the sharing policy's, else 1e-5")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandUsage(env.Stdout, &Command{Name: "client", Usage: clientUsage}, fs)
			return nil
		}
		return Usagef("client budget: %v", err)
	}
	switch {
	case fs.NArg() > 0:
		return Usagef("client budget: unexpected argument %q", fs.Arg(0))
	case config == "" && (*dir == "" || *keys == ""):
		return Usagef("client budget: give --config FILE, or --store DIR and --keys DIR")
	case config != "" && *dir != "":
		return Usagef("client budget: give --config or --store, not both")
	case !(*delta >= 0 && *delta < 1):
		return Usagef("client budget: --delta must be between 0 and 1, got %g", *delta)
	}
	var st *client.Store
	var err error
	maxEps := 0.0
	if config != "" {
		cfg, err := loadClientConfig(config, "")
		if err != nil {
			return err
		}
		if cfg.Store == nil {
			return Hint(fmt.Errorf("%s has no store: its client keeps its privacy ledger in memory, for one run", config),
				"add a store: section to the config; the client then keeps its ledger sealed in it, across runs and tasks")
		}
		if cfg.Sharing != "" {
			p, err := client.LoadSharingPolicy(cfg.Sharing)
			if err != nil {
				return err
			}
			maxEps = p.MaxEpsilon
			if *delta == 0 {
				*delta = p.Delta
			}
		}
		if st, err = openClientStore(cfg); err != nil {
			return err
		}
	} else if st, err = openStoreDirs(*dir, *keys, "--store"); err != nil {
		return err
	}
	defer st.Close()
	if *delta == 0 {
		*delta = dp.DefaultDelta
	}
	l, err := client.OpenLedger(st)
	if err != nil {
		return err
	}
	lines := l.Report(*delta)
	if len(lines) == 0 {
		fmt.Fprintln(env.Stdout, "no update sent under differential privacy yet: nothing spent")
		return nil
	}
	tw := tabwriter.NewWriter(env.Stdout, 0, 0, 2, ' ', 0)
	fmt.Fprintf(tw, "unit\ttask\tupdates\tepsilon (delta %g)\n", *delta)
	for _, ln := range lines {
		task := ln.Task
		if task == "" {
			task = "all tasks"
		}
		fmt.Fprintf(tw, "per %s\t%s\t%d\t%.4g\n", ln.Unit, task, ln.Rounds, ln.Epsilon)
	}
	tw.Flush()
	if maxEps > 0 {
		fmt.Fprintf(env.Stdout, "the sharing policy's max_epsilon: %g per unit, over all tasks\n", maxEps)
	}
	return nil
}
