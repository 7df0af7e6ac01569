package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"net"
	"path/filepath"
	"strings"
	"time"

	"github.com/fedweave/fedweave/crypto/pki"
)

// "fedweave ca" has subcommands, each a Command of its own (not in the registry) with its own
// flags and usage. The ca Command itself defines no flags, so that Main's flag parsing leaves
// "init" or "issue" and everything after it to runCA.

const caUsage = `usage: fedweave ca init --dir DIR --federation NAME [--validity DURATION]
       fedweave ca issue --dir DIR (--principal URI | --org ORG --role ROLE --name NAME) --out PREFIX [flags]

Ca runs the certificate authority of a federation. Every server, client, admin and reader
proves who it is with a certificate from this CA, on every connection; the certificate names
one principal,

	fedweave://FEDERATION/org/ORG/ROLE/NAME

where ROLE is server, client, admin or reader, and FEDERATION, ORG and NAME are 1 to 64
characters of a-z, 0-9, '.', '_' and '-' that start with a letter or digit.

  init    creates the CA of a new federation in --dir: ca.crt, which every member needs,
          and ca.key (mode 0600), which signs certificates: keep it secret, ideally offline.
  issue   creates a key and a certificate for one principal, signed by the CA in --dir, as
          PREFIX.crt and PREFIX.key (mode 0600), and prints the principal and the files.
          Server certificates are valid for localhost, 127.0.0.1 and ::1 unless --dns or
          --ip name other addresses.

Neither ever replaces a file: a CA, a certificate or a key that exists stays as it is.

Example:

	$ fedweave ca init --dir pki --federation acme
	$ fedweave ca issue --dir pki --org acme --role server --name agg --out agg
	$ fedweave ca issue --dir pki --principal fedweave://acme/org/hospital-a/client/node1 --out node1
	fedweave://acme/org/hospital-a/client/node1
	wrote node1.crt and node1.key (valid until 2026-08-01 09:30 UTC)
`

var caCmd = &Command{
	Name:    "ca",
	Summary: "create the federation's certificate authority and issue certificates",
	Usage:   caUsage + caFlagsHelp(),
	Flags: func(fs *flag.FlagSet) RunFunc {
		return runCA
	},
}

// caSubcommands are the words that may follow "fedweave ca".
var caSubcommands = []*Command{caInitCmd, caIssueCmd}

// caFlagsHelp lists the flags of each subcommand for "fedweave help ca", in the format of a
// command's own help.
func caFlagsHelp() string {
	var b strings.Builder
	for _, c := range caSubcommands {
		flags := newFlagSet(c)
		c.Flags(flags)
		var h strings.Builder
		printCommandUsage(&h, &Command{}, flags)
		_, list, _ := strings.Cut(h.String(), "Flags:\n")
		fmt.Fprintf(&b, "\nFlags of %s:\n%s", c.Name, list)
	}
	return b.String()
}

func runCA(ctx context.Context, env *Env, args []string) error {
	if len(args) == 0 {
		return Hint(Usagef("ca needs a subcommand: init or issue"),
			`run "fedweave ca -h" for both and an example`)
	}
	var sub *Command
	for _, c := range caSubcommands {
		if c.Name == "ca "+args[0] {
			sub = c
		}
	}
	if sub == nil {
		return Hint(Usagef("unknown ca subcommand %q", args[0]),
			`the ca subcommands are init and issue; run "fedweave ca -h" for what they do`)
	}
	return env.runCommand(ctx, sub, args[1:])
}

const caInitUsage = `usage: fedweave ca init --dir DIR --federation NAME [--validity DURATION]

Init creates the certificate authority of a new federation in --dir (made if missing, mode
0700): ca.crt, the CA certificate that every member of the federation needs, and ca.key, the
CA's Ed25519 key (mode 0600), which signs every certificate of the federation: keep it secret,
ideally on a machine that is offline. Init never replaces an existing CA.

Example:

	$ fedweave ca init --dir pki --federation acme
	federation acme: wrote pki/ca.crt and pki/ca.key (valid until 2027-05-03 09:30 UTC)
`

var caInitCmd = &Command{
	Name:    "ca init",
	Summary: "create the CA of a new federation",
	Usage:   caInitUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		dir := flags.String("dir", "", "`directory` to create the CA in (required)")
		federation := flags.String("federation", "", "`name` of the federation, as in fedweave://NAME/... (required)")
		validity := flags.Duration("validity", 8760*time.Hour, "how long the CA certificate is valid, as a Go `duration`")
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *dir == "":
				return Usagef("--dir is required: the directory to create the CA in")
			case *federation == "":
				return Usagef("--federation is required: the name of the federation")
			case *validity <= 0:
				return Usagef("--validity must be positive, got %v", *validity)
			case !validName(*federation):
				return Hint(Usagef("invalid --federation %q", *federation), nameRule)
			}
			ca, err := pki.Init(*dir, *federation, *validity)
			if errors.Is(err, fs.ErrExist) {
				return Hint(err, "use another --dir: a CA is never replaced, since every certificate it issued depends on its key")
			}
			if err != nil {
				return err
			}
			_, err = fmt.Fprintf(env.Stdout, "federation %s: wrote %s and %s (valid until %s)\n", ca.Federation(),
				filepath.Join(*dir, pki.CACertFile), filepath.Join(*dir, pki.CAKeyFile), formatTime(ca.Certificate().NotAfter))
			return err
		}
	},
}

const caIssueUsage = `usage: fedweave ca issue --dir DIR (--principal URI | --org ORG --role ROLE --name NAME) --out PREFIX [flags]

Issue creates an Ed25519 key and a certificate for one principal, signed by the CA in --dir,
and writes them to PREFIX.crt and PREFIX.key (mode 0600). It prints the principal, then the
files and how long the certificate is valid. Name the principal with --principal, or with
--org, --role and --name in the CA's federation. Roles: server, client, admin, reader.

Server certificates serve TLS and are valid for the names in --dns and --ip, or for
localhost, 127.0.0.1 and ::1 if neither is given. Certificates never outlive the CA. Issue
never replaces a file.

Example:

	$ fedweave ca issue --dir pki --org acme --role server --name agg --dns agg.acme.example --out agg
	$ fedweave ca issue --dir pki --principal fedweave://acme/org/hospital-a/client/node1 --out node1
	fedweave://acme/org/hospital-a/client/node1
	wrote node1.crt and node1.key (valid until 2026-08-01 09:30 UTC)
`

var caIssueCmd = &Command{
	Name:    "ca issue",
	Summary: "issue a certificate for one principal",
	Usage:   caIssueUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		dir := flags.String("dir", "", "`directory` of the CA, as given to ca init (required)")
		principal := flags.String("principal", "", "the principal `URI`, fedweave://FEDERATION/org/ORG/ROLE/NAME (or use --org, --role and --name)")
		org := flags.String("org", "", "`organisation` of the principal")
		role := flags.String("role", "", "`role` of the principal: server, client, admin or reader")
		name := flags.String("name", "", "`name` of the principal within its organisation")
		dns := flags.String("dns", "", "comma-separated DNS `names` a server certificate is valid for")
		ips := flags.String("ip", "", "comma-separated IP `addresses` a server certificate is valid for")
		validity := flags.Duration("validity", 2160*time.Hour, "how long the certificate is valid, as a Go `duration`")
		out := flags.String("out", "", "`prefix` of the files to write: PREFIX.crt and PREFIX.key (required)")
		return func(ctx context.Context, env *Env, args []string) error {
			byParts := *org != "" || *role != "" || *name != ""
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *dir == "":
				return Usagef("--dir is required: the directory of the CA")
			case *out == "":
				return Usagef("--out is required: the certificate goes to PREFIX.crt, the key to PREFIX.key")
			case *principal != "" && byParts:
				return Hint(Usagef("give --principal or --org, --role and --name, not both"), principalHint)
			case *principal == "" && (*org == "" || *role == "" || *name == ""):
				return Hint(Usagef("name the principal with --principal, or with all of --org, --role and --name"), principalHint)
			case *validity <= 0:
				return Usagef("--validity must be positive, got %v", *validity)
			}
			opt := pki.IssueOptions{Validity: *validity, DNSNames: splitList(*dns)}
			for _, s := range splitList(*ips) {
				ip := net.ParseIP(s)
				if ip == nil {
					return Usagef("--ip %q is not an IP address", s)
				}
				opt.IPAddresses = append(opt.IPAddresses, ip)
			}

			ca, err := pki.LoadCA(*dir)
			if errors.Is(err, fs.ErrNotExist) {
				return Hint(fmt.Errorf("no CA in %s", *dir),
					fmt.Sprintf(`create one with "fedweave ca init --dir %s --federation NAME", or give the --dir of an existing CA`, *dir))
			}
			if err != nil {
				return err
			}
			p, err := issuePrincipal(ca.Federation(), *principal, *org, *role, *name)
			if err != nil {
				return err
			}
			err = ca.IssueFiles(p, opt, *out)
			switch {
			case errors.Is(err, fs.ErrExist):
				return Hint(err, "choose another --out: a certificate or key is never replaced")
			case errors.Is(err, fs.ErrNotExist):
				return Hint(err, "create the directory of --out first")
			case err != nil:
				return err
			}
			id, err := pki.LoadIdentity(*out+".crt", *out+".key")
			if err != nil {
				return fmt.Errorf("check the issued certificate: %w", err)
			}
			leaf := id.Cert.Leaf
			if want := leaf.NotBefore.Add(*validity); leaf.NotAfter.Before(want.Add(-time.Minute)) {
				env.Warnf("the certificate ends with the CA, on %s, before --validity %v", formatTime(leaf.NotAfter), *validity)
			}
			fmt.Fprintln(env.Stdout, id.Principal)
			fmt.Fprintf(env.Stdout, "wrote %s and %s (valid until %s)\n", *out+".crt", *out+".key", formatTime(leaf.NotAfter))
			var names []string
			names = append(names, leaf.DNSNames...)
			for _, ip := range leaf.IPAddresses {
				names = append(names, ip.String())
			}
			if len(names) > 0 {
				fmt.Fprintf(env.Stdout, "valid for %s\n", strings.Join(names, ", "))
			}
			return nil
		}
	},
}

const (
	nameRule      = "a federation, org or name is 1 to 64 characters of a-z, 0-9, '.', '_' and '-', starting with a letter or digit"
	principalHint = "a principal reads fedweave://FEDERATION/org/ORG/ROLE/NAME, as in fedweave://acme/org/hospital-a/client/node1"
)

// issuePrincipal builds the principal of "ca issue" from --principal or from --org, --role
// and --name, in the CA's federation.
func issuePrincipal(federation, uri, org, role, name string) (pki.Principal, error) {
	if uri != "" {
		p, err := pki.ParsePrincipal(uri)
		if err != nil {
			return p, Hint(Usagef("invalid --principal %s", strings.TrimPrefix(err.Error(), "pki: invalid principal ")), principalHint)
		}
		if p.Federation != federation {
			return p, Hint(Usagef("--principal is in federation %s, but this CA is for federation %s", p.Federation, federation),
				fmt.Sprintf("use fedweave://%s/org/%s/%s/%s, or the --dir of federation %s's CA", federation, p.Org, p.Role, p.Name, p.Federation))
		}
		return p, nil
	}
	r, err := pki.ParseRole(role)
	if err != nil {
		return pki.Principal{}, Hint(Usagef("unknown --role %q", role), "use server, client, admin or reader")
	}
	p := pki.Principal{Federation: federation, Org: org, Role: r, Name: name}
	if !validName(org) {
		return p, Hint(Usagef("invalid --org %q", org), nameRule)
	}
	if !validName(name) {
		return p, Hint(Usagef("invalid --name %q", name), nameRule)
	}
	return p, nil
}

// validName reports whether s may be a federation, org or principal name.
func validName(s string) bool {
	return pki.Principal{Federation: s, Org: s, Role: pki.RoleClient, Name: s}.Validate() == nil
}

// splitList splits a comma-separated flag value, dropping empty items.
func splitList(s string) []string {
	var out []string
	for _, f := range strings.Split(s, ",") {
		if f = strings.TrimSpace(f); f != "" {
			out = append(out, f)
		}
	}
	return out
}

func formatTime(t time.Time) string { return t.UTC().Format("2006-01-02 15:04 UTC") }
