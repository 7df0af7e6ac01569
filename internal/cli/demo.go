package cli

import (
	"context"
	"errors"
	"flag"
	"slices"
)

const demoUsage = `usage: fedweave demo [flags]

Demo runs a whole federation on one machine: an aggregation server and --clients partner
clients, each holding its own skewed share of the data, talking gRPC with mTLS, protecting their
updates with --secure, and storing everything encrypted under --dir. It trains for --rounds
rounds, prints each round's metrics, and with --report writes them as JSON.

In progress: the federation is not built yet, so for now demo checks its flags and says so.
Until it lands, "fedweave train --data synthetic" trains the same multimodal model on one
machine, without federation.

Secure aggregation (--secure):
  none     plaintext updates; a baseline for debugging, never for real partners
  secagg   SecAgg+ pairwise masking with dropout recovery
  mhe      threshold BGV homomorphic encryption

Example:

	# four clients, five rounds of SecAgg+, a quarter of the clients dropping out each round
	$ fedweave demo --clients 4 --rounds 5 --secure secagg --drop 0.25 --report demo.json
`

var demoCmd = &Command{
	Name:    "demo",
	Summary: "run a whole federation on one machine (in progress)",
	Usage:   demoUsage,
	Flags: func(fs *flag.FlagSet) RunFunc {
		clients := fs.Int("clients", 4, "`number` of partner clients")
		rounds := fs.Int("rounds", 5, "`number` of federated rounds")
		secure := fs.String("secure", "secagg", "secure aggregation `protocol`: none, secagg or mhe")
		fusion := fs.String("fusion", "gated", "fusion `head`: concat, gated, attention or late")
		data := fs.String("data", "synthetic", "`dataset` the clients split among themselves")
		drop := fs.Float64("drop", 0, "`fraction` of clients that drop out of each round, from 0 to below 1")
		dir := fs.String("dir", "", "`directory` for keys, stores and checkpoints (default: a temporary one, removed at the end)")
		report := fs.String("report", "", "write per-round metrics as JSON to `file`")
		_, _ = dir, report
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *clients < 1:
				return Usagef("--clients must be at least 1, got %d", *clients)
			case *rounds < 1:
				return Usagef("--rounds must be at least 1, got %d", *rounds)
			case !slices.Contains([]string{"none", "secagg", "mhe"}, *secure):
				return Usagef("unknown --secure %q: use none, secagg or mhe", *secure)
			case !slices.Contains([]string{"concat", "gated", "attention", "late"}, *fusion):
				return Usagef("unknown --fusion %q: use concat, gated, attention or late", *fusion)
			case *data == "":
				return Usagef("--data must name a dataset")
			case !(*drop >= 0 && *drop < 1):
				return Usagef("--drop must be at least 0 and below 1, got %v", *drop)
			}
			return Hint(errors.New("the federation demo is not built yet"),
				`run "fedweave train --data synthetic" for centralized training`)
		}
	},
}
