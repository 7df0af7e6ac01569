package cli

import (
	"context"
	"crypto/ed25519"
	"crypto/x509"
	"encoding/json"
	"encoding/pem"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"math"
	"os"
	"sort"
	"strings"
	"time"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/policy"
)

// "fedweave audit" reads the audit log in a server's store, offline: the server must not be
// running on the same directory (a store is used by one process at a time). tail also reads it
// from a running server, through its admin service.

const auditUsage = `usage: fedweave audit verify --dir DIR --key-file FILE --pubkey FILE
       fedweave audit tail --dir DIR --key-file FILE [-n N] [--json]
       fedweave audit tail --server ADDR --ca FILE --cert FILE --key FILE [-n N] [--json]

Audit reads the audit log of a fedweave server: an append-only Merkle tree (RFC 6962 hashing)
in the server's encrypted store, whose tree heads the server signs with the Ed25519 key of its
certificate. It records joins, rounds, policy changes, denials, model downloads and erasures.
Both subcommands open the store read-only with its master key file, while the server is
stopped; tail also asks a running server (--server, with an admin's certificate).

  verify  recomputes the whole log: every entry's hash, every stored tree hash, and every
          signed checkpoint, whose signature must verify with --pubkey (the server's
          certificate, or its public key in PEM). It prints what it verified and the latest
          checkpoint, which is worth keeping elsewhere; a changed or removed entry makes it
          fail and name the entry (its index and event type).
  tail    prints the last -n entries, one a line: index, time, type, principal, action,
          resource, decision and details.

Example:

	$ fedweave audit verify --dir state/server --key-file keys/server.key --pubkey agg.crt
	verified 12 entries and 3 signed checkpoints
	$ fedweave audit tail --dir state/server --key-file keys/server.key -n 2
`

var auditCmd = &Command{
	Name:    "audit",
	Summary: "verify and read the audit log of a server's store",
	Usage:   auditUsage + groupFlagsHelp(auditSubcommands),
	Flags: func(fs *flag.FlagSet) RunFunc {
		return func(ctx context.Context, env *Env, args []string) error {
			return runGroup(ctx, env, "audit", auditSubcommands, args)
		}
	},
}

var auditSubcommands = []*Command{auditVerifyCmd, auditTailCmd}

// storeFlags defines --dir and --key-file.
func storeFlags(flags *flag.FlagSet) (dir, keyFile *string) {
	dir = flags.String("dir", "", "the server's store `directory` (its dir setting) (required)")
	keyFile = flags.String("key-file", "", "the store's master key `file` (its key_file setting) (required)")
	return dir, keyFile
}

// openAuditStore opens a server's store read-only.
func openAuditStore(dir, keyFile string) (*store.Store, error) {
	switch {
	case dir == "":
		return nil, Usagef("--dir is required: the server's store directory")
	case keyFile == "":
		return nil, Usagef("--key-file is required: the store's master key file")
	}
	if _, err := os.Stat(dir); err != nil {
		return nil, Hint(fmt.Errorf("no store in %s", dir), "give the dir of the server's config")
	}
	st, err := store.Open(store.Options{Dir: dir, KeyFile: keyFile, ReadOnly: true})
	switch {
	case errors.Is(err, store.ErrWrongKey):
		return nil, Hint(fmt.Errorf("the key file %s does not open the store in %s", keyFile, dir), "give the key_file of the server's config")
	case errors.Is(err, store.ErrLocked):
		return nil, Hint(fmt.Errorf("the store in %s is in use", dir), "stop the server first: a store is used by one process at a time")
	case errors.Is(err, fs.ErrNotExist):
		return nil, Hint(fmt.Errorf("no key file %s", keyFile), "give the key_file of the server's config")
	case err != nil:
		return nil, err
	}
	return st, nil
}

// readPublicKey reads an Ed25519 public key from a PEM file: a certificate (the server's) or a
// PUBLIC KEY block.
func readPublicKey(file string) (ed25519.PublicKey, error) {
	data, err := os.ReadFile(file)
	if err != nil {
		return nil, err
	}
	block, _ := pem.Decode(data)
	if block == nil {
		return nil, fmt.Errorf("%s holds no PEM block: want the server's certificate or its public key", file)
	}
	var key any
	switch block.Type {
	case "CERTIFICATE":
		cert, err := x509.ParseCertificate(block.Bytes)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
		key = cert.PublicKey
	case "PUBLIC KEY":
		if key, err = x509.ParsePKIXPublicKey(block.Bytes); err != nil {
			return nil, fmt.Errorf("%s: %w", file, err)
		}
	default:
		return nil, fmt.Errorf("%s holds a %s: want the server's certificate or its public key", file, block.Type)
	}
	pub, ok := key.(ed25519.PublicKey)
	if !ok {
		return nil, fmt.Errorf("%s: the key is not Ed25519", file)
	}
	return pub, nil
}

const auditVerifyUsage = `usage: fedweave audit verify --dir DIR --key-file FILE --pubkey FILE

Verify recomputes the audit log in the store of --dir from scratch: every entry is re-hashed
and checked against the hash recorded when it was appended, the Merkle tree is rebuilt and
compared with every stored tree hash, and every signed checkpoint must verify with --pubkey
and match the rebuilt tree at its size. It prints the number of entries and checkpoints
verified, the root, and the latest checkpoint. A changed or removed entry makes it fail with
the entry's index and event type (or the range of entries between two checkpoints, when
the attacker rewrote the hashes too).

Entries after the latest checkpoint are covered by no signature yet: verify warns about them.
Entries removed from the end together with their checkpoints leave no trace in the store:
compare the latest checkpoint with one kept elsewhere.

Example:

	$ fedweave audit verify --dir state/server --key-file keys/server.key --pubkey agg.crt
	verified 12 entries and 3 signed checkpoints
	root 6f1c...e2 (size 12)
	latest checkpoint: size 12, signed 2026-05-01 09:30 UTC
`

var auditVerifyCmd = &Command{
	Name:    "audit verify",
	Summary: "check that the audit log was not changed",
	Usage:   auditVerifyUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		dir, keyFile := storeFlags(flags)
		pubFile := flags.String("pubkey", "", "the server's certificate or Ed25519 public key, as a PEM `file` (required)")
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *dir == "":
				return Usagef("--dir is required: the server's store directory")
			case *keyFile == "":
				return Usagef("--key-file is required: the store's master key file")
			case *pubFile == "":
				return Hint(Usagef("--pubkey is required: the key that signs the checkpoints"), "give the server's certificate, as agg.crt")
			}
			pub, err := readPublicKey(*pubFile)
			if err != nil {
				return err
			}
			st, err := openAuditStore(*dir, *keyFile)
			if err != nil {
				return err
			}
			defer st.Close()
			rep, err := policy.VerifyLog(st, pub)
			if errors.Is(err, policy.ErrTampered) {
				return Hint(err, "the store was changed outside fedweave: restore it from a backup, and keep the latest checkpoint where the server cannot change it")
			}
			if err != nil {
				return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "policy: "))
			}
			fmt.Fprintf(env.Stdout, "verified %d %s and %d signed %s\n", rep.Size, plural(rep.Size, "entry", "entries"),
				rep.Checkpoints, plural(uint64(rep.Checkpoints), "checkpoint", "checkpoints"))
			fmt.Fprintf(env.Stdout, "root %s (size %d)\n", rep.Root, rep.Size)
			if n, err := verifyReceipts(st, pub); err != nil {
				return Hint(err, "the receipt was not signed by the key of --pubkey: give the certificate of the server that carried out the erasure")
			} else if n > 0 {
				fmt.Fprintf(env.Stdout, "verified %d erasure %s, signed by the same key\n", n, plural(uint64(n), "receipt", "receipts"))
			}
			if rep.Checkpoints == 0 {
				env.Warnf("the log has no signed checkpoint: no signature vouches for it")
				return nil
			}
			fmt.Fprintf(env.Stdout, "latest checkpoint: size %d, signed %s\n", rep.Latest.Size, formatTime(rep.Latest.Time))
			if rep.Unsigned > 0 {
				env.Warnf("the last %d %s came after the latest checkpoint: no signature covers them yet",
					rep.Unsigned, plural(rep.Unsigned, "entry", "entries"))
			}
			return nil
		}
	},
}

func plural(n uint64, one, many string) string {
	if n == 1 {
		return one
	}
	return many
}

const auditTailUsage = `usage: fedweave audit tail --dir DIR --key-file FILE [-n N] [--json]
       fedweave audit tail --server ADDR --ca FILE --cert FILE --key FILE [-n N] [--json]

Tail prints the last N entries of the audit log in the store of --dir, or of a running server
(--server, through its admin service, with an admin's certificate; the server sends at most
1000), oldest first, one a line: index, time (UTC), event type, principal, action, resource,
decision, and the details as key=value. With --json it prints each entry as stored, one JSON
object a line.

Example:

	$ fedweave audit tail --dir state/server --key-file keys/server.key -n 2
	10  2026-05-01T09:30:02Z  join  fedweave://acme/org/hospital-a/client/node1  Join  Task::"triage"  allow  policies=member-clients-train
	11  2026-05-01T09:30:05Z  denial  fedweave://acme/org/clinic-c/client/node3  Join  Task::"triage"  deny
`

var auditTailCmd = &Command{
	Name:    "audit tail",
	Summary: "print the last entries of the audit log",
	Usage:   auditTailUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		dir, keyFile := storeFlags(flags)
		n := flags.Int("n", 20, "the `number` of entries to print")
		asJSON := flags.Bool("json", false, "print the entries as stored, one JSON object a line")
		af := addAdminFlags(flags)
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *n < 0:
				return Usagef("-n must not be negative, got %d", *n)
			case af.online() && *dir != "":
				return Usagef("--dir and --server exclude each other: read a stopped server's store, or ask a running server")
			case af.online():
				return tailOnline(ctx, env, af, *n, *asJSON)
			}
			st, err := openAuditStore(*dir, *keyFile)
			if err != nil {
				return err
			}
			defer st.Close()
			log := policy.NewAuditLog(st, nil)
			size, err := log.Size()
			if err != nil {
				return err
			}
			from := uint64(0)
			if size > uint64(*n) {
				from = size - uint64(*n)
			}
			entries, err := log.Entries(from, size)
			if err != nil {
				return Hint(fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "policy: ")), `run "fedweave audit verify" to see what was changed`)
			}
			for _, e := range entries {
				if *asJSON {
					fmt.Fprintf(env.Stdout, "%s\n", e.Raw)
					continue
				}
				fmt.Fprintln(env.Stdout, formatEvent(e))
			}
			return nil
		}
	},
}

// formatEvent prints an audit entry on one line, fields apart by two spaces.
func formatEvent(e policy.Entry) string {
	ev := e.Event
	fields := []string{fmt.Sprint(e.Index), ev.Time.UTC().Format(time.RFC3339), string(ev.Type)}
	for _, f := range []string{ev.Principal, ev.Action, ev.Resource, ev.Decision} {
		if f != "" {
			fields = append(fields, f)
		}
	}
	keys := make([]string, 0, len(ev.Details))
	for k := range ev.Details {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		v := ev.Details[k]
		if strings.ContainsAny(v, " \t\n\"") {
			b, _ := json.Marshal(v)
			v = string(b)
		}
		fields = append(fields, k+"="+v)
	}
	return strings.Join(fields, "  ")
}

// tailOnline prints the last n entries of a running server's audit log.
func tailOnline(ctx context.Context, env *Env, af *adminFlags, n int, asJSON bool) error {
	if n == 0 {
		return nil
	}
	return af.call(ctx, env, func(ctx context.Context, api pb.AdminClient) error {
		resp, err := api.TailAudit(ctx, &pb.TailAuditRequest{N: uint32(min(n, math.MaxUint32))})
		if err != nil {
			return err
		}
		for _, e := range resp.GetEntries() {
			if asJSON {
				fmt.Fprintf(env.Stdout, "%s\n", e.GetEvent())
				continue
			}
			var ev policy.Event
			if err := json.Unmarshal(e.GetEvent(), &ev); err != nil {
				return fmt.Errorf("audit entry %d from the server is not an event: %w", e.GetIndex(), err)
			}
			fmt.Fprintln(env.Stdout, formatEvent(policy.Entry{Index: e.GetIndex(), Event: ev, Raw: e.GetEvent()}))
		}
		return nil
	})
}
