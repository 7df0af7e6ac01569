package cli

import (
	"context"
	"flag"
	"fmt"
	"time"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
)

const policyRetentionUsage = `usage: fedweave policy retention [--set-checkpoints N] --server ADDR --ca FILE --cert FILE --key FILE

Retention prints the retention rule in force on a running server: how many committed
checkpoints it keeps, the newest (the current one and checkpoint 0, the initial parameters,
are always kept), and whether the rule is the server config's (retention.checkpoints) or was
set by an admin. With --set-checkpoints N it first sets the rule to N (0 keeps every
checkpoint): the rule is stored in the server's store, overrides the config's from then on,
is recorded in the audit log, and is applied at the next commit, which deletes the older
checkpoints and shreds their data keys. Both need ManageRetention on the Federation.

Example:

	$ fedweave policy retention --set-checkpoints 5 --server agg.acme.example:7443 --ca pki/ca.crt --cert alice.crt --key alice.key
	retention: the newest 5 checkpoints kept (set by fedweave://acme/org/hospital-a/admin/alice, 2025-03-01 10:00 UTC)
`

var policyRetentionCmd = &Command{
	Name:    "policy retention",
	Summary: "print, or set, how many checkpoints a running server keeps",
	Usage:   policyRetentionUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		set := flags.Int("set-checkpoints", -1, "keep the newest `N` committed checkpoints (0: all) from the next commit on")
		af := addAdminFlags(flags)
		return func(ctx context.Context, env *Env, args []string) error {
			args, err := positionals(flags, args)
			if err != nil {
				return err
			}
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *set < -1 || *set > 1<<20:
				return Usagef("--set-checkpoints: want a count from 0 (keep all) to %d, got %d", 1<<20, *set)
			case !af.online():
				return needsServer("policy retention")
			}
			return af.call(ctx, env, func(ctx context.Context, api pb.AdminClient) error {
				var rule *pb.Retention
				var err error
				if *set >= 0 {
					rule, err = api.SetRetention(ctx, &pb.SetRetentionRequest{Checkpoints: uint32(*set)})
				} else {
					rule, err = api.GetRetention(ctx, &pb.GetRetentionRequest{})
				}
				if err != nil {
					return err
				}
				_, err = fmt.Fprintln(env.Stdout, retentionLine(rule))
				return err
			})
		}
	},
}

// retentionLine describes a retention rule in one line.
func retentionLine(r *pb.Retention) string {
	what := "every checkpoint kept"
	if n := r.GetCheckpoints(); n > 0 {
		what = fmt.Sprintf("the newest %d %s kept", n, plural(uint64(n), "checkpoint", "checkpoints"))
	}
	if r.GetSource() != "admin" {
		return fmt.Sprintf("retention: %s (server config)", what)
	}
	return fmt.Sprintf("retention: %s (set by %s, %s)", what, r.GetSetBy(),
		time.Unix(0, r.GetSetUnixNano()).UTC().Format("2006-01-02 15:04 UTC"))
}
