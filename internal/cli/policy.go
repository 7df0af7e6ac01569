package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"os"
	"strings"

	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/policy"
)

// "fedweave policy" has subcommands, as "fedweave ca" does. validate works offline, on files;
// check works offline (--policies, --entities) or against a running server (--server); list,
// get, apply, rm, rollback and retention talk to the admin service of a running server (admin.go).

const policyUsage = `usage: fedweave policy validate -f FILE [--schema FILE] [--entities FILE]
       fedweave policy check --principal URI --action ACTION --resource TYPE::ID [--context JSON] (--policies DIR --entities FILE | SERVER)
       fedweave policy list [--history] SERVER
       fedweave policy get [ID] [--version N] SERVER
       fedweave policy apply -f FILE [--replace] SERVER
       fedweave policy rm ID SERVER
       fedweave policy rollback VERSION SERVER
       fedweave policy retention [--set-checkpoints N] SERVER
  where SERVER is --server ADDR --ca FILE --cert FILE --key FILE (an admin's certificate)

Policy manages the cedar policies that decide every call to a fedweave server: who may join
which task, submit updates, download or query which model, request erasure, and change the
policies themselves. Everything not permitted is denied, and a forbid overrides every permit.

  validate  checks a policy file (or a directory of *.cedar files) against the schema: every
            entity type, action and attribute must exist, with the types the policies use
            them at. Each problem is printed as FILE:LINE:COLUMN: policy "ID": what is wrong.
  check     decides one request, offline on the policies of --policies DIR (its *.cedar
            files, and its *.cedarschema if it has one) and the entity data of --entities, or
            with the policies and entity data in force on a running server, and prints ALLOW
            or DENY followed by the ids of the policies that decided it (none for a request
            that nothing permits). It exits 0 either way.
  list, get, apply, rm, rollback
            read and change the policies in force on a running server, through its admin
            service: every change is validated, takes effect at once, is a new version of the
            set (so that it can be rolled back) and is recorded in the server's audit log.
  retention prints, or with --set-checkpoints N sets, how many committed checkpoints a
            running server keeps; a rule set so overrides the server config's, is recorded in
            the audit log and is applied at the next commit.

Principals are the URIs of certificates, fedweave://FEDERATION/org/ORG/ROLE/NAME; resources
are written TYPE::ID or TYPE::"ID", as Task::triage or Model::"triage-v3". examples/policies
holds the schema, the default policies and the entity data of an example federation.

Example:

	$ fedweave policy validate -f examples/policies/default.cedar
	examples/policies/default.cedar: 7 policies valid against the default schema
	$ fedweave policy check --policies examples/policies --entities examples/policies/entities.json \
		--principal fedweave://acme/org/hospital-a/client/node1 --action Join --resource Task::triage
	ALLOW member-clients-train
	$ fedweave policy apply -f suspend.cedar --server agg.acme.example:7443 --ca pki/ca.crt --cert alice.crt --key alice.key
	applied suspend.cedar: version 2, 8 policies
`

var policyCmd = &Command{
	Name:    "policy",
	Summary: "validate, check and change the authorization policies",
	Usage:   policyUsage + groupFlagsHelp(policySubcommands),
	Flags: func(fs *flag.FlagSet) RunFunc {
		return func(ctx context.Context, env *Env, args []string) error {
			return runGroup(ctx, env, "policy", policySubcommands, args)
		}
	},
}

// policySubcommands are the words that may follow "fedweave policy".
var policySubcommands = []*Command{
	policyValidateCmd, policyCheckCmd, policyListCmd, policyGetCmd, policyApplyCmd, policyRmCmd, policyRollbackCmd,
	policyRetentionCmd,
}

// unparsedSubcommands take whatever follows them without parsing it as flags.
var unparsedSubcommands = map[string]bool{}

// groupFlagsHelp lists the flags of each subcommand that has any, for "fedweave help GROUP".
func groupFlagsHelp(subs []*Command) string {
	var b strings.Builder
	for _, c := range subs {
		flags := newFlagSet(c)
		c.Flags(flags)
		var h strings.Builder
		printCommandUsage(&h, &Command{}, flags)
		if _, list, ok := strings.Cut(h.String(), "Flags:\n"); ok {
			fmt.Fprintf(&b, "\nFlags of %s:\n%s", c.Name, list)
		}
	}
	return b.String()
}

// runGroup runs the subcommand named by args[0] among subs, as Env.dispatch runs a command.
func runGroup(ctx context.Context, env *Env, group string, subs []*Command, args []string) error {
	var names []string
	for _, c := range subs {
		names = append(names, strings.TrimPrefix(c.Name, group+" "))
	}
	list := strings.Join(names[:len(names)-1], ", ") + " and " + names[len(names)-1]
	if len(args) == 0 {
		return Hint(Usagef("%s needs a subcommand: %s", group, strings.Join(names, ", ")),
			fmt.Sprintf(`run "fedweave %s -h" for what they do and an example`, group))
	}
	var sub *Command
	for _, c := range subs {
		if c.Name == group+" "+args[0] {
			sub = c
		}
	}
	if sub == nil {
		return Hint(Usagef("unknown %s subcommand %q", group, args[0]),
			fmt.Sprintf(`the %s subcommands are %s; run "fedweave %s -h" for what they do`, group, list, group))
	}
	flags := newFlagSet(sub)
	run := sub.Flags(flags)
	if unparsedSubcommands[sub.Name] {
		for _, a := range args[1:] {
			if isHelpFlag(a) {
				printCommandUsage(env.Stdout, sub, flags)
				return nil
			}
		}
		return run(ctx, env, args[1:])
	}
	return env.runCommand(ctx, sub, args[1:])
}

const policyValidateUsage = `usage: fedweave policy validate -f FILE [--schema FILE] [--entities FILE]

Validate parses the cedar policies of FILE (or of every *.cedar file of a directory) and checks
them against the schema: the default schema (examples/policies/fedweave.cedarschema), the one
of --schema, or the *.cedarschema file of a directory given as -f. Every policy needs a unique
@id("...") annotation; every entity type, action and attribute it names must be declared, and
used with its declared type. Each problem is printed on stderr as

	FILE:LINE:COLUMN: policy "ID": what is wrong

and nothing is accepted. With --entities, the entity data is checked against the schema too.

Example:

	$ fedweave policy validate -f examples/policies/default.cedar
	examples/policies/default.cedar: 7 policies valid against the default schema
	$ fedweave policy validate -f typo.cedar
	typo.cedar:3:17: policy "no-tainted-models": attribute ` + "`taintd`" + ` on entity type ` + "`Model`" + ` not found
	fedweave: error: typo.cedar: 1 problem: the policies were not accepted
`

var policyValidateCmd = &Command{
	Name:    "policy validate",
	Summary: "check policies against the schema",
	Usage:   policyValidateUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		file := flags.String("f", "", "the policy `file` (or directory of *.cedar files) to check (required)")
		schemaFile := flags.String("schema", "", "the cedar schema `file` (default: the built-in schema, or the *.cedarschema of a directory -f)")
		entitiesFile := flags.String("entities", "", "also check this entity data `file` (cedar JSON) against the schema")
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *file == "":
				return Usagef("-f is required: the policy file to check")
			}
			schema, ps, err := loadPolicies(*file, *schemaFile)
			if err != nil {
				return reportProblems(env, *file, err)
			}
			schemaName := "the default schema"
			if schema != policy.DefaultSchema() {
				schemaName = schema.Name()
			}
			if *entitiesFile != "" {
				e, err := readEntities(*entitiesFile)
				if err != nil {
					return err
				}
				if err := schema.ValidateEntities(e); err != nil {
					return fmt.Errorf("%s: %s", *entitiesFile, strings.TrimPrefix(err.Error(), "policy: "))
				}
				fmt.Fprintf(env.Stdout, "%s: %d entities valid against %s\n", *entitiesFile, e.Len(), schemaName)
			}
			noun := "policies"
			if ps.Len() == 1 {
				noun = "policy"
			}
			_, err = fmt.Fprintf(env.Stdout, "%s: %d %s valid against %s\n", *file, ps.Len(), noun, schemaName)
			return err
		}
	},
}

// loadPolicies loads a policy file and validates it against the schema of schemaFile, or the
// default schema; or loads a directory as policy.LoadDir does.
func loadPolicies(path, schemaFile string) (*policy.Schema, *policy.PolicySet, error) {
	info, err := os.Stat(path)
	if err != nil {
		return nil, nil, err
	}
	if info.IsDir() {
		if schemaFile != "" {
			return nil, nil, Hint(Usagef("--schema goes with a policy file: a directory brings its own *.cedarschema"),
				"put the schema in the directory, or validate the files one by one")
		}
		return policy.LoadDir(path)
	}
	schema := policy.DefaultSchema()
	if schemaFile != "" {
		text, err := os.ReadFile(schemaFile)
		if err != nil {
			return nil, nil, err
		}
		if schema, err = policy.ParseSchema(schemaFile, text); err != nil {
			return nil, nil, err
		}
	}
	text, err := os.ReadFile(path)
	if err != nil {
		return nil, nil, err
	}
	ps, err := policy.ParsePolicies(path, text)
	if err != nil {
		return nil, nil, err
	}
	if err := schema.Validate(ps); err != nil {
		return nil, nil, err
	}
	return schema, ps, nil
}

// reportProblems prints the problems of a ValidationError on stderr, one a line, and returns
// the error to exit with.
func reportProblems(env *Env, file string, err error) error {
	var verr *policy.ValidationError
	var u *UsageError
	if errors.As(err, &u) {
		return err
	}
	var pe *fs.PathError
	if errors.As(err, &pe) && errors.Is(err, fs.ErrNotExist) {
		return Hint(fmt.Errorf("no such file or directory: %s", pe.Path), "give the path of a .cedar file, or of a directory of them, such as examples/policies")
	}
	if !errors.As(err, &verr) {
		return fmt.Errorf("%s", strings.TrimPrefix(err.Error(), "policy: "))
	}
	for _, p := range verr.Problems {
		fmt.Fprintln(env.Stderr, p)
	}
	noun := "problems"
	if len(verr.Problems) == 1 {
		noun = "problem"
	}
	return Hint(fmt.Errorf("%s: %d %s: the policies were not accepted", file, len(verr.Problems), noun),
		"the schema declares every entity type, attribute and action: see examples/policies/fedweave.cedarschema")
}

func readEntities(file string) (*policy.Entities, error) {
	data, err := os.ReadFile(file)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, Hint(fmt.Errorf("no such file: %s", file), "give the entity data in cedar's JSON format, as examples/policies/entities.json")
	}
	if err != nil {
		return nil, err
	}
	e, err := policy.ParseEntities(data)
	if err != nil {
		return nil, fmt.Errorf("%s: %s", file, strings.TrimPrefix(err.Error(), "policy: "))
	}
	return e, nil
}

const policyCheckUsage = `usage: fedweave policy check --principal URI --action ACTION --resource TYPE::ID [--context JSON] --policies DIR --entities FILE
       fedweave policy check --principal URI --action ACTION --resource TYPE::ID [--context JSON] --server ADDR --ca FILE --cert FILE --key FILE

Check decides one request, as the server would: may the principal (a certificate's URI) do the
action to the resource? Offline, it loads the policies of --policies DIR (its *.cedar files,
and its *.cedarschema if it has one, else the default schema) and the entity data of
--entities. With --server, the running server decides with the policies and entity data in
force (its members, its task, its committed models), without doing the request; that needs an
admin's certificate. Either way check prints ALLOW or DENY followed by the ids of the policies
that decided it: the permits that allow it, or the forbids that deny it. A request that no
policy permits prints DENY alone (deny by default). Check exits 0 whether the answer is ALLOW
or DENY; policies that could not be evaluated are reported as warnings.

Example:

	$ fedweave policy check --policies examples/policies --entities examples/policies/entities.json \
		--principal fedweave://acme/org/hospital-a/reader/app --action Infer --resource 'Checkpoint::"triage-v3-r7"'
	DENY forbid-tainted-models
	$ fedweave policy check --policies examples/policies --entities examples/policies/entities.json \
		--principal fedweave://acme/org/hospital-b/client/node2 --action Join --resource Task::triage \
		--context '{"modalities": ["text", "image"]}'
	ALLOW member-clients-train
`

var policyCheckCmd = &Command{
	Name:    "policy check",
	Summary: "decide one request offline",
	Usage:   policyCheckUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		principal := flags.String("principal", "", "the caller, as a principal `URI` fedweave://FEDERATION/org/ORG/ROLE/NAME (required)")
		action := flags.String("action", "", "the `action`, as Join, SubmitUpdate or DownloadModel (required)")
		resource := flags.String("resource", "", "the resource, as `TYPE::ID` (Task::triage, Model::\"triage-v3\") (required)")
		reqContext := flags.String("context", "", "the request's context, as a JSON `object`")
		policies := flags.String("policies", "", "the policy `directory`: *.cedar files, and optionally a *.cedarschema")
		entitiesFile := flags.String("entities", "", "the entity data `file`, in cedar's JSON entity format (required with --policies)")
		af := addAdminFlags(flags)
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *policies != "" && af.online():
				return Usagef("--policies and --server exclude each other: check offline on files, or on a running server")
			case *policies == "" && !af.online():
				return Hint(Usagef("check needs --policies DIR --entities FILE (offline) or --server ADDR (a running server)"),
					`check offline with "--policies examples/policies --entities examples/policies/entities.json"`)
			case *policies == "":
			case *entitiesFile == "":
				return Hint(Usagef("--entities is required with --policies: the entity data to decide on"),
					"use the entity data of the federation, as examples/policies/entities.json")
			case *principal == "":
				return Hint(Usagef("--principal is required: who asks"), principalHint)
			case *action == "":
				return Usagef("--action is required: what the principal wants to do")
			case *resource == "":
				return Usagef(`--resource is required: what the action is done to, as Task::triage`)
			}
			p, err := pki.ParsePrincipal(*principal)
			if err != nil {
				return Hint(Usagef("invalid --principal %s", strings.TrimPrefix(err.Error(), "pki: invalid principal ")), principalHint)
			}
			res, err := policy.ParseRef(*resource)
			if err != nil {
				return Hint(Usagef("invalid --resource %q", *resource), `write TYPE::ID or TYPE::"ID", as Task::triage or 'Model::"triage-v3"'`)
			}
			var reqCtx map[string]any
			if *reqContext != "" {
				dec := json.NewDecoder(strings.NewReader(*reqContext))
				dec.UseNumber()
				if err := dec.Decode(&reqCtx); err != nil || dec.More() {
					return Hint(Usagef("invalid --context: want one JSON object"), `write it as '{"modalities": ["text", "image"]}'`)
				}
			}
			if af.online() {
				return checkOnline(ctx, env, af, p.URI(), *action, res.String(), *reqContext)
			}
			schema, ps, err := policy.LoadDir(*policies)
			if err != nil {
				return reportProblems(env, *policies, err)
			}
			known := false
			for _, a := range schema.Actions() {
				known = known || a == *action
			}
			if !known {
				return Hint(Usagef("unknown --action %q", *action), "the actions are "+strings.Join(schema.Actions(), ", "))
			}
			e, err := readEntities(*entitiesFile)
			if err != nil {
				return err
			}
			a, err := policy.New(schema, ps, e)
			if err != nil {
				return fmt.Errorf("%s: %s", *entitiesFile, strings.TrimPrefix(err.Error(), "policy: "))
			}
			return printDecision(env, a.Decide(policy.Request{Principal: p, Action: *action, Resource: res, Context: reqCtx}))
		}
	},
}
