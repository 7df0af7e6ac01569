package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"net"
	"os"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/policy"
)

// The online subcommands of "fedweave policy" and "fedweave audit" talk to the admin service
// of a running server, over mutual TLS with an admin's certificate; the server decides each
// call with its policies (ReadPolicy, ChangePolicy, ReadAudit) like every other call.

// adminFlags are the flags that reach a running server's admin service.
type adminFlags struct {
	server, serverName, ca, cert, key *string
}

func addAdminFlags(flags *flag.FlagSet) *adminFlags {
	return &adminFlags{
		server:     flags.String("server", "", "`address` of a running server (host:port, or @FILE to read it from FILE, as \"fedweave server --addr-file\" writes it)"),
		serverName: flags.String("server-name", "", "`name` the server's certificate must carry (default: the host of --server)"),
		ca:         flags.String("ca", "", "the federation's CA certificate `file` (with --server)"),
		cert:       flags.String("cert", "", "an admin's certificate `file`, from \"fedweave ca issue --role admin\" (with --server)"),
		key:        flags.String("key", "", "the admin's key `file` (with --server)"),
	}
}

// online reports whether the command was asked to talk to a server.
func (a *adminFlags) online() bool { return *a.server != "" }

const adminHint = `give --server ADDR --ca FILE --cert FILE --key FILE, with the certificate of an admin of a member org`

// adminCallTimeout bounds one call to the admin service.
const adminCallTimeout = 30 * time.Second

// dial connects to the admin service. The caller closes the connection.
func (a *adminFlags) dial(ctx context.Context, env *Env) (pb.AdminClient, *grpc.ClientConn, error) {
	var missing []string
	for _, f := range []struct{ name, v string }{{"--server", *a.server}, {"--ca", *a.ca}, {"--cert", *a.cert}, {"--key", *a.key}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return nil, nil, Hint(Usagef("%s required to reach a running server", strings.Join(missing, ", ")), adminHint)
	}
	id, err := pki.LoadIdentity(*a.cert, *a.key)
	if err != nil {
		return nil, nil, Hint(fmt.Errorf("--cert and --key: %w", err), `issue an admin certificate with "fedweave ca issue --role admin ..."`)
	}
	pool, err := pki.LoadPool(*a.ca)
	if err != nil {
		return nil, nil, Hint(fmt.Errorf("--ca: %w", err), "--ca is the federation's ca.crt")
	}
	addr := *a.server
	if file, ok := strings.CutPrefix(addr, "@"); ok {
		if addr, err = readAddrFile(ctx, env, file, time.Minute); err != nil {
			return nil, nil, err
		}
	}
	name := *a.serverName
	if name == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return nil, nil, Usagef("--server %q is not host:port", addr)
		}
		name = host
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(id, pool, name))))
	if err != nil {
		return nil, nil, err
	}
	return pb.NewAdminClient(conn), conn, nil
}

// call runs one call of the admin service with a timeout, turning its status into an error
// for the user.
func (a *adminFlags) call(ctx context.Context, env *Env, f func(ctx context.Context, api pb.AdminClient) error) error {
	api, conn, err := a.dial(ctx, env)
	if err != nil {
		return err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, adminCallTimeout)
	defer cancel()
	return adminError(f(cctx, api), *a.server)
}

// adminError turns the status of a call into an error with a hint.
func adminError(err error, server string) error {
	if err == nil {
		return nil
	}
	var h *HintError
	if errors.As(err, &h) {
		return err
	}
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.PermissionDenied:
		return Hint(fmt.Errorf("the server refused: %s", msg), "the admin service answers admins of member orgs: "+adminHint)
	case codes.Unauthenticated:
		return Hint(fmt.Errorf("the server refused the certificate: %s", msg), adminHint)
	case codes.Unavailable, codes.DeadlineExceeded:
		return Hint(fmt.Errorf("cannot reach the server at %s: %s", server, msg),
			"check that the server runs at --server, that --ca is the federation's CA and --cert one of its certificates")
	}
	return errors.New(msg)
}

// printDecision prints a decision as "fedweave policy check" does: ALLOW or DENY and the
// determining policies on stdout, what went wrong as warnings.
func printDecision(env *Env, d policy.Decision) error {
	for _, e := range d.Errors {
		env.Warnf("%s", e)
	}
	_, err := fmt.Fprintln(env.Stdout, d)
	return err
}

// versionLine describes a policy version on one line.
func versionLine(v *pb.PolicyVersion) string {
	what := v.GetChange()
	switch {
	case v.GetChange() == "rollback":
		what = fmt.Sprintf("rollback to version %d", v.GetFrom())
	case v.GetChange() == "remove":
		what = fmt.Sprintf("remove %s", v.GetRemoved())
	}
	return fmt.Sprintf("version %d: %s by %s, %s, %d %s", v.GetNumber(), what, v.GetAuthor(),
		formatTime(time.Unix(0, v.GetTimeUnixNano())), v.GetPolicies(), plural(uint64(v.GetPolicies()), "policy", "policies"))
}

// positionals returns the positional arguments of args, parsing flags that follow them too
// (as in "fedweave policy rm ID --server ADDR"), which the flag package alone does not.
func positionals(flags *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for len(args) > 0 {
		pos = append(pos, args[0])
		if err := flags.Parse(args[1:]); err != nil {
			return nil, &UsageError{Err: err}
		}
		args = flags.Args()
	}
	return pos, nil
}

// needsServer is the error of an online-only subcommand called without --server.
func needsServer(what string) error {
	return Hint(Usagef("%s needs --server: the address of a running server", what), adminHint)
}

const policyListUsage = `usage: fedweave policy list --server ADDR --ca FILE --cert FILE --key FILE [--history]

List prints the version of the policy set in force on a running server (who made it, when, and
how many policies it has) and then the id of each of its policies, one a line. With --history
it prints every version instead, oldest first.

Example:

	$ fedweave policy list --server agg.acme.example:7443 --ca pki/ca.crt --cert alice.crt --key alice.key
	version 2: apply by fedweave://acme/org/hospital-a/admin/alice, 2026-05-01 09:30 UTC, 8 policies
	member-clients-train
	...
`

var policyListCmd = &Command{
	Name:    "policy list",
	Summary: "list the policies in force on a running server",
	Usage:   policyListUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		history := flags.Bool("history", false, "print every version of the policy set instead of the ids in force")
		af := addAdminFlags(flags)
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case !af.online():
				return needsServer("policy list")
			}
			return af.call(ctx, env, func(ctx context.Context, api pb.AdminClient) error {
				resp, err := api.ListPolicies(ctx, &pb.ListPoliciesRequest{})
				if err != nil {
					return err
				}
				if *history {
					for _, v := range resp.GetVersions() {
						fmt.Fprintln(env.Stdout, versionLine(v))
					}
					return nil
				}
				fmt.Fprintln(env.Stdout, versionLine(resp.GetCurrent()))
				for _, id := range resp.GetIds() {
					fmt.Fprintln(env.Stdout, id)
				}
				return nil
			})
		}
	},
}

const policyGetUsage = `usage: fedweave policy get [ID] --server ADDR --ca FILE --cert FILE --key FILE [--version N]

Get prints the text of the policy ID, with the comment lines above it, from the set in force
on a running server, or from version N. Without ID it prints the whole set.

Example:

	$ fedweave policy get forbid-tainted-models --server agg.acme.example:7443 --ca pki/ca.crt --cert alice.crt --key alice.key
`

var policyGetCmd = &Command{
	Name:    "policy get",
	Summary: "print one policy, or the whole set, of a running server",
	Usage:   policyGetUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		version := flags.Uint64("version", 0, "the policy `version` (default: the one in force)")
		af := addAdminFlags(flags)
		return func(ctx context.Context, env *Env, args []string) error {
			args, err := positionals(flags, args)
			if err != nil {
				return err
			}
			switch {
			case len(args) > 1:
				return Usagef("unexpected argument %q", args[1])
			case !af.online():
				return needsServer("policy get")
			}
			id := ""
			if len(args) == 1 {
				id = args[0]
			}
			return af.call(ctx, env, func(ctx context.Context, api pb.AdminClient) error {
				resp, err := api.GetPolicy(ctx, &pb.GetPolicyRequest{Id: id, Version: *version})
				if err != nil {
					return err
				}
				text := resp.GetText()
				if !strings.HasSuffix(text, "\n") {
					text += "\n"
				}
				_, err = fmt.Fprint(env.Stdout, text)
				return err
			})
		}
	},
}

const policyApplyUsage = `usage: fedweave policy apply -f FILE --server ADDR --ca FILE --cert FILE --key FILE [--replace]

Apply sends the cedar policies of FILE to a running server, which validates them against its
schema and, if they are valid, puts them in force at once as a new version of its policy set
(recorded in its audit log). By default the policies of FILE are merged into the set in force:
a policy with the id of one in force replaces it, the others are added. With --replace, FILE
becomes the whole set. Problems are printed as FILE:LINE:COLUMN: policy "ID": what is wrong,
and nothing is applied. The server refuses a set under which you could no longer change the
policies.

Example:

	$ cat suspend.cedar
	@id("suspend-clinic-c")
	forbid (principal, action in Action::"Train", resource) when { principal.org == Org::"clinic-c" };
	$ fedweave policy apply -f suspend.cedar --server agg.acme.example:7443 --ca pki/ca.crt --cert alice.crt --key alice.key
	applied suspend.cedar: version 3, 8 policies
`

var policyApplyCmd = &Command{
	Name:    "policy apply",
	Summary: "put policies in force on a running server",
	Usage:   policyApplyUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		file := flags.String("f", "", "the policy `file` to apply (required)")
		replace := flags.Bool("replace", false, "make the file the whole policy set, instead of merging it into the set in force")
		af := addAdminFlags(flags)
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *file == "":
				return Usagef("-f is required: the policy file to apply")
			case !af.online():
				return needsServer("policy apply")
			}
			text, err := os.ReadFile(*file)
			if err != nil {
				return err
			}
			err = af.call(ctx, env, func(ctx context.Context, api pb.AdminClient) error {
				v, err := api.ApplyPolicy(ctx, &pb.ApplyPolicyRequest{Text: text, Replace: *replace})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(env.Stdout, "applied %s: version %d, %d %s\n", *file, v.GetNumber(), v.GetPolicies(), plural(uint64(v.GetPolicies()), "policy", "policies"))
				return err
			})
			return remoteProblems(env, *file, err)
		}
	},
}

// remoteProblems prints the problems of a set the server did not accept, one a line on stderr
// and prefixed with the file's name, as "fedweave policy validate" does.
func remoteProblems(env *Env, file string, err error) error {
	if err == nil {
		return nil
	}
	lines := strings.Split(err.Error(), "\n")
	if len(lines) < 2 || lines[0] != "the policies were not accepted:" {
		return err
	}
	for _, p := range lines[1:] {
		fmt.Fprintf(env.Stderr, "%s:%s\n", file, p)
	}
	noun := "problems"
	if len(lines) == 2 {
		noun = "problem"
	}
	return Hint(fmt.Errorf("%s: %d %s: the policies were not accepted", file, len(lines)-1, noun),
		"check the file first with \"fedweave policy validate -f FILE\"; the schema declares every entity type, attribute and action")
}

const policyRmUsage = `usage: fedweave policy rm ID --server ADDR --ca FILE --cert FILE --key FILE

Rm removes the policy ID from the set in force on a running server, at once, as a new version
of the set (recorded in its audit log).

Example:

	$ fedweave policy rm suspend-clinic-c --server agg.acme.example:7443 --ca pki/ca.crt --cert alice.crt --key alice.key
	removed suspend-clinic-c: version 4, 7 policies
`

var policyRmCmd = &Command{
	Name:    "policy rm",
	Summary: "remove a policy from a running server",
	Usage:   policyRmUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		af := addAdminFlags(flags)
		return func(ctx context.Context, env *Env, args []string) error {
			args, err := positionals(flags, args)
			if err != nil {
				return err
			}
			switch {
			case len(args) != 1:
				return Usagef("rm takes one policy id, got %d arguments", len(args))
			case !af.online():
				return needsServer("policy rm")
			}
			return af.call(ctx, env, func(ctx context.Context, api pb.AdminClient) error {
				v, err := api.RemovePolicy(ctx, &pb.RemovePolicyRequest{Id: args[0]})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(env.Stdout, "removed %s: version %d, %d %s\n", args[0], v.GetNumber(), v.GetPolicies(), plural(uint64(v.GetPolicies()), "policy", "policies"))
				return err
			})
		}
	},
}

const policyRollbackUsage = `usage: fedweave policy rollback VERSION --server ADDR --ca FILE --cert FILE --key FILE

Rollback puts the policy set of an earlier VERSION back in force on a running server, at once,
as a new version (versions are never changed or deleted; "fedweave policy list --history"
lists them). It is recorded in the server's audit log.

Example:

	$ fedweave policy rollback 2 --server agg.acme.example:7443 --ca pki/ca.crt --cert alice.crt --key alice.key
	rolled back to version 2: version 5, 7 policies
`

var policyRollbackCmd = &Command{
	Name:    "policy rollback",
	Summary: "put an earlier policy version back in force on a running server",
	Usage:   policyRollbackUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		af := addAdminFlags(flags)
		return func(ctx context.Context, env *Env, args []string) error {
			args, err := positionals(flags, args)
			if err != nil {
				return err
			}
			if len(args) != 1 {
				return Usagef("rollback takes one version number, got %d arguments", len(args))
			}
			var to uint64
			if _, err := fmt.Sscan(args[0], &to); err != nil || to == 0 || fmt.Sprint(to) != args[0] {
				return Usagef("rollback: %q is not a version number (1, 2, ...)", args[0])
			}
			if !af.online() {
				return needsServer("policy rollback")
			}
			return af.call(ctx, env, func(ctx context.Context, api pb.AdminClient) error {
				v, err := api.RollbackPolicy(ctx, &pb.RollbackPolicyRequest{Version: to})
				if err != nil {
					return err
				}
				_, err = fmt.Fprintf(env.Stdout, "rolled back to version %d: version %d, %d %s\n", to, v.GetNumber(), v.GetPolicies(), plural(uint64(v.GetPolicies()), "policy", "policies"))
				return err
			})
		}
	},
}

// checkOnline decides a request with the policies and entity data in force on a server.
func checkOnline(ctx context.Context, env *Env, af *adminFlags, principal, action, resource, reqContext string) error {
	return af.call(ctx, env, func(ctx context.Context, api pb.AdminClient) error {
		resp, err := api.CheckPolicy(ctx, &pb.CheckPolicyRequest{Principal: principal, Action: action, Resource: resource, ContextJson: reqContext})
		if err != nil {
			return err
		}
		return printDecision(env, policy.Decision{Allow: resp.GetAllow(), Reasons: resp.GetReasons(), Errors: resp.GetErrors()})
	})
}
