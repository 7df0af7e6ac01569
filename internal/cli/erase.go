package cli

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"errors"
	"flag"
	"fmt"
	"io"
	"io/fs"
	"strconv"
	"strings"

	"google.golang.org/grpc"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/policy"
	"github.com/fedweave/fedweave/server"
)

// "fedweave client erase": a partner erases a data subject from its client's encrypted record
// store (client.Store.EraseSubject). It works on the store directly, so the client must not
// be running on it.

// openClientStore opens the store a client config names, or returns nil when it names none.
func openClientStore(cfg *clientConfig) (*client.Store, error) {
	if cfg.Store == nil {
		return nil, nil
	}
	return openStoreDirs(cfg.Store.Dir, cfg.Store.Keys, cfg.path+": store")
}

func openStoreDirs(dir, keys, what string) (*client.Store, error) {
	st, err := client.OpenStore(client.StoreOptions{Dir: dir, KeyDir: keys})
	switch {
	case errors.Is(err, store.ErrLocked):
		return nil, Hint(fmt.Errorf("%s: the store in %s is in use", what, dir), "stop the client that uses it first: a store is used by one process at a time")
	case errors.Is(err, fs.ErrNotExist):
		return nil, Hint(fmt.Errorf("%s: %w", what, err), "keys must be the key directory the store was created with")
	case err != nil:
		return nil, fmt.Errorf("%s: %w", what, err)
	}
	return st, nil
}

func runClientErase(ctx context.Context, env *Env, config string, args []string) error {
	fs := flag.NewFlagSet("fedweave client erase", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	subject := fs.String("subject", "", "the data subject to erase: the id of its records")
	fs.StringVar(&config, "config", config, "the client's config `file`, whose store to erase from")
	dir := fs.String("store", "", "the store `directory`, instead of --config")
	keys := fs.String("keys", "", "the store's key `directory`, with --store")
	rotate := fs.Bool("rotate", false, "also move every other subject's key to a new keyring epoch, so that no copy of the store from before opens")
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandUsage(env.Stdout, &Command{Name: "client", Usage: clientUsage}, fs)
			return nil
		}
		return Usagef("client erase: %v", err)
	}
	switch {
	case fs.NArg() > 0:
		return Usagef("client erase: unexpected argument %q", fs.Arg(0))
	case *subject == "":
		return Usagef("client erase: --subject is required: the id of the subject's records")
	case config == "" && (*dir == "" || *keys == ""):
		return Usagef("client erase: give --config FILE, or --store DIR and --keys DIR")
	case config != "" && *dir != "":
		return Usagef("client erase: give --config or --store, not both")
	}
	var st *client.Store
	var err error
	if config != "" {
		cfg, err := loadClientConfig(config, "")
		if err != nil {
			return err
		}
		if cfg.Store == nil {
			return Hint(fmt.Errorf("%s has no store: the client keeps no records on disk, so there is nothing to erase there", config),
				"erase the subject from the client's data source; with a store: section, the client keeps its records encrypted and erasable")
		}
		st, err = openClientStore(cfg)
		if err != nil {
			return err
		}
	} else if st, err = openStoreDirs(*dir, *keys, "--store"); err != nil {
		return err
	}
	defer st.Close()
	n, err := st.EraseSubject(*subject)
	if err != nil {
		return err
	}
	noun := "records"
	if n == 1 {
		noun = "record"
	}
	fmt.Fprintf(env.Stdout, "subject erased: %d %s deleted, its data key shredded\n", n, noun)
	if n == 0 {
		env.Warnf("the store held no record of this subject; it will skip the subject's records from now on")
	}
	if *rotate {
		if err := st.Rotate(); err != nil {
			return err
		}
		fmt.Fprintln(env.Stdout, "keyring rotated: copies of the store from before this point no longer open with the current keys")
	}
	return ctx.Err()
}

// "fedweave erase": an admin erases an org's contributions to a server's task
// (server.EraseOrg), through the admin service of the running server, or offline on the
// server's store with the server's config while no server runs.

const eraseUsage = `usage: fedweave erase --org ORG (--server ADDR --ca FILE --cert FILE --key FILE | --config FILE)
       fedweave erase status [--org ORG] (--server ADDR --ca FILE --cert FILE --key FILE | --config FILE)

Erase erases an organisation's contributions to a federation's training task, by lineage: the
server finds every committed checkpoint whose aggregate includes the org, and every checkpoint
built on one of those, and

  - taints them: from that moment, the policy forbid-tainted-models refuses their download and
    their use for inference;
  - rolls the model back to the newest checkpoint of its lineage built without the org, and
    lets the task's next rounds retrain the rounds it undid;
  - takes the org out of the federation's membership and out of every later round;
  - shreds the tainted checkpoints' data keys and deletes them, so that no copy of the server's
    store, a backup included, yields them;
  - writes a receipt, signed with the server's certificate key, into the audit log: what was
    done, and what remains (the round records that name the org, disk blocks not overwritten,
    copies of tainted models downloaded before).

Under secure aggregation the server never held one org's update, so it cannot subtract it:
retraining is the honest method, and the receipt says so. "erase status" shows each erasure
and how many of the rounds to retrain the task has trained again.

With --server, erase asks the running server (the admin's certificate must be of a member org;
the policies decide, as RequestErasure on the org). With --config, it works on the server's
store directly, with the server's own config, while the server is stopped; the next
"fedweave server --config" run retrains.

Example:

	$ fedweave erase --org hospital-x --server agg.acme.example:7443 --ca ca.crt --cert alice.crt --key alice.key
	org hospital-x erased from task triage
	  tainted checkpoints: 2, 3 (downloads and inference refused from now on)
	  model rolled back from checkpoint 3 to 1: 2 rounds to retrain, from round 4 on
	  data keys shredded: 2, 3
	  receipt: audit log entry 41, signed by the server
	$ fedweave erase status --server agg.acme.example:7443 --ca ca.crt --cert alice.crt --key alice.key
	hospital-x  done  tainted 2, 3  rolled back 3 -> 1  retrained 2 of 2 rounds (head 5)  receipt at entry 41
`

var eraseCmd = &Command{
	Name:    "erase",
	Summary: "erase an org's contributions to a task: taint, roll back, retrain, shred (admin)",
	Usage:   eraseUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		org := flags.String("org", "", "the `org` whose contributions to erase")
		config := flags.String("config", "", "the server's config `file`, to work on its store while it is stopped (instead of --server)")
		admin := addAdminFlags(flags)
		return func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 && args[0] == "status" {
				return runEraseStatus(ctx, env, args[1:])
			}
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q (the subcommand is status)", args[0])
			case *org == "":
				return Usagef("--org is required: the org whose contributions to erase")
			}
			var e *pb.Erasure
			err := eraseVia(ctx, env, *config, admin, func(ctx context.Context, api eraseAPI) error {
				var err error
				e, err = api.EraseOrg(ctx, &pb.EraseOrgRequest{Org: *org})
				return err
			})
			if err != nil {
				return err
			}
			printErasure(env, e)
			return nil
		}
	},
}

func runEraseStatus(ctx context.Context, env *Env, args []string) error {
	fs := flag.NewFlagSet("fedweave erase status", flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	org := fs.String("org", "", "only this `org`'s erasure")
	config := fs.String("config", "", "the server's config `file` (instead of --server)")
	admin := addAdminFlags(fs)
	if err := fs.Parse(args); err != nil {
		if errors.Is(err, flag.ErrHelp) {
			printCommandUsage(env.Stdout, &Command{Name: "erase", Usage: eraseUsage}, fs)
			return nil
		}
		return Usagef("erase status: %v", err)
	}
	if fs.NArg() > 0 {
		return Usagef("erase status: unexpected argument %q", fs.Arg(0))
	}
	var list []*pb.Erasure
	err := eraseVia(ctx, env, *config, admin, func(ctx context.Context, api eraseAPI) error {
		resp, err := api.ErasureStatus(ctx, &pb.ErasureStatusRequest{Org: *org})
		list = resp.GetErasures()
		return err
	})
	if err != nil {
		return err
	}
	if len(list) == 0 {
		fmt.Fprintln(env.Stdout, "no erasure")
		return nil
	}
	for _, e := range list {
		line := fmt.Sprintf("%s  %s  tainted %s", e.GetOrg(), e.GetState(), roundList(e.GetTainted()))
		if e.GetRolledBackTo() != e.GetHeadBefore() {
			line += fmt.Sprintf("  rolled back %d -> %d", e.GetHeadBefore(), e.GetRolledBackTo())
		}
		line += fmt.Sprintf("  retrained %d of %d rounds (head %d)", e.GetRoundsRetrained(), e.GetRoundsToRetrain(), e.GetHead())
		if e.GetState() == "done" {
			line += fmt.Sprintf("  receipt at entry %d", e.GetReceiptIndex())
		}
		fmt.Fprintln(env.Stdout, line)
	}
	return nil
}

// eraseAPI is the part of the admin service erase uses; the offline mode implements it on a
// server opened on its store.
type eraseAPI interface {
	EraseOrg(ctx context.Context, req *pb.EraseOrgRequest, opts ...grpc.CallOption) (*pb.Erasure, error)
	ErasureStatus(ctx context.Context, req *pb.ErasureStatusRequest, opts ...grpc.CallOption) (*pb.ErasureStatusResponse, error)
}

// eraseVia runs f against the running server (--server) or offline on the config's store.
func eraseVia(ctx context.Context, env *Env, config string, admin *adminFlags, f func(ctx context.Context, api eraseAPI) error) error {
	switch {
	case config != "" && admin.online():
		return Usagef("give --server or --config, not both")
	case config == "" && !admin.online():
		return Hint(Usagef("give --server (a running server) or --config (its store, while it is stopped)"), adminHint)
	case admin.online():
		return admin.call(ctx, env, func(ctx context.Context, api pb.AdminClient) error { return f(ctx, api) })
	}
	cfg, err := server.LoadConfig(config)
	if err != nil {
		return Hint(err, `see "fedweave server -h" for the config`)
	}
	srv, err := server.New(cfg, server.Options{})
	if errors.Is(err, store.ErrLocked) {
		return Hint(fmt.Errorf("the server's store in %s is in use", cfg.Dir), "the server is running: ask it with --server and an admin's certificate, or stop it first")
	}
	if err != nil {
		return err
	}
	defer srv.Close()
	return f(ctx, offlineErase{srv})
}

// offlineErase answers the erase calls from a server that does not serve.
type offlineErase struct{ s *server.Server }

func (o offlineErase) EraseOrg(_ context.Context, req *pb.EraseOrgRequest, _ ...grpc.CallOption) (*pb.Erasure, error) {
	st, err := o.s.EraseOrg(req.GetOrg(), "fedweave erase --config (the operator, offline)")
	if err != nil {
		return nil, err
	}
	return st.Proto(), nil
}

func (o offlineErase) ErasureStatus(_ context.Context, req *pb.ErasureStatusRequest, _ ...grpc.CallOption) (*pb.ErasureStatusResponse, error) {
	list, err := o.s.Erasures(req.GetOrg())
	if err != nil {
		return nil, err
	}
	resp := &pb.ErasureStatusResponse{}
	for _, st := range list {
		resp.Erasures = append(resp.Erasures, st.Proto())
	}
	return resp, nil
}

func printErasure(env *Env, e *pb.Erasure) {
	w := env.Stdout
	fmt.Fprintf(w, "org %s erased\n", e.GetOrg())
	if len(e.GetTainted()) == 0 {
		fmt.Fprintln(w, "  no committed checkpoint includes its contributions: nothing to taint or roll back")
	} else {
		fmt.Fprintf(w, "  tainted checkpoints: %s (downloads and inference refused from now on)\n", roundList(e.GetTainted()))
	}
	if e.GetRolledBackTo() != e.GetHeadBefore() {
		fmt.Fprintf(w, "  model rolled back from checkpoint %d to %d: %d rounds to retrain, from round %d on\n",
			e.GetHeadBefore(), e.GetRolledBackTo(), e.GetRoundsToRetrain(), e.GetFirstRetrainRound())
	}
	fmt.Fprintf(w, "  data keys shredded: %s\n", roundList(e.GetShredded()))
	if n := e.GetDownloads(); n > 0 {
		env.Warnf("the audit log records %d download(s) of tainted models before the erasure: those copies are beyond the server's reach", n)
	}
	if e.GetState() == "done" {
		fmt.Fprintf(w, "  receipt: audit log entry %d, signed by the server\n", e.GetReceiptIndex())
	} else {
		fmt.Fprintf(w, "  state: %s (the server finishes the erasure when it next starts)\n", e.GetState())
	}
}

func roundList(rs []uint64) string {
	if len(rs) == 0 {
		return "none"
	}
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = strconv.FormatUint(r, 10)
	}
	return strings.Join(parts, ", ")
}

// verifyReceipts checks the signature of every erasure receipt in the audit log of st with
// pub, and returns how many there are.
func verifyReceipts(st *store.Store, pub ed25519.PublicKey) (int, error) {
	log := policy.NewAuditLog(st, nil)
	size, err := log.Size()
	if err != nil {
		return 0, err
	}
	n := 0
	for from := uint64(0); from < size; from += 1000 {
		entries, err := log.Entries(from, min(size, from+1000))
		if err != nil {
			return n, err
		}
		for _, e := range entries {
			ev := e.Event
			if ev.Type != policy.EventErasure || ev.Details["kind"] != "receipt" {
				continue
			}
			sig, err := base64.StdEncoding.DecodeString(ev.Details["signature"])
			if err == nil {
				_, err = server.VerifyReceipt([]byte(ev.Details["receipt"]), sig, pub)
			}
			if err != nil {
				return n, fmt.Errorf("audit entry %d: erasure receipt: %v", e.Index, err)
			}
			n++
		}
	}
	return n, nil
}
