// Package cli implements the fedweave command line: one binary whose subcommands serve every
// user of fedweave (see DESIGN.md, "Users and their commands").
//
// The entry point is [Main], which cmd/fedweave calls with the process's arguments and streams.
// Each subcommand is a [Command] value in its own file (demo.go, version.go, ...), listed in the
// registry, the variable commands in this file. The package uses the standard library's flag package only: flags
// may be spelled -name or --name, and flags must come before positional arguments.
//
// # Adding a command
//
// Write one file, say train.go, holding a usage constant and a Command value:
//
//	const trainUsage = `usage: fedweave train [flags]
//
//	Train ... (what it does, what it writes, what it needs).
//
//	Example:
//
//		$ fedweave train --data synthetic --report report.json
//	`
//
//	var trainCmd = &Command{
//		Name:    "train",
//		Summary: "train a multimodal model on one machine",
//		Usage:   trainUsage,
//		Flags: func(fs *flag.FlagSet) RunFunc {
//			data := fs.String("data", "synthetic", "`dataset`: synthetic or fashion-mnist")
//			device := DeviceFlag(fs)
//			return func(ctx context.Context, env *Env, args []string) error {
//				if len(args) > 0 {
//					return Usagef("unexpected argument %q", args[0])
//				}
//				if err := CheckDevice(*device); err != nil {
//					return err
//				}
//				...
//			}
//		},
//	}
//
// then add the line `trainCmd,` to the commands list in this file (a placeholder comment marks where). Nothing else
// changes: help, -h, flag errors and error printing come from this package. TestRegistry checks
// that every registered command has a summary, a usage text that starts with its synopsis and
// carries an example, and a usage string on every flag.
//
// Rules for a run function:
//   - write only to env.Stdout (results) and env.Stderr (progress, warnings), never to os.Stdout;
//   - return errors instead of printing them: Main prints "fedweave: error: <msg>";
//   - wrap an error with [Hint] when the user's next step is known;
//   - return [Usagef] for a bad flag value or argument (exit status 2); other errors exit 1;
//   - stop soon after ctx is done (Ctrl-C) and return ctx.Err() or an error wrapping it.
//
// Exit statuses: 0 success (help included), 1 error, 2 usage error, 130 interrupted.
package cli

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"strings"
	"syscall"
)

// commands lists the subcommands in the order "fedweave help" shows them. "help" itself is
// handled by Main and is not listed here.
var commands = []*Command{
	demoCmd,
	trainCmd,
	caCmd,
	serverCmd,
	clientCmd,
	predictCmd,
	explainCmd,
	policyCmd,
	eraseCmd,
	auditCmd,
	versionCmd,
}

// A Command is one subcommand of fedweave.
type Command struct {
	// Name is the word that selects the command: "fedweave <Name>".
	Name string
	// Summary is one lower-case line for the command list of "fedweave help".
	Summary string
	// Usage is the full help text: first the synopsis line "usage: fedweave <Name> ...", then
	// what the command does, then a worked example. The flag list is appended after it.
	Usage string
	// Flags defines the command's flags on fs and returns the function that runs the command
	// once fs has parsed them; args are the positional arguments left after the flags.
	// It is called once per invocation, so flag values may live in its local variables.
	Flags func(fs *flag.FlagSet) RunFunc
	// Hidden commands run but are not listed by "fedweave help".
	Hidden bool
}

// RunFunc runs a command. It is an alias, so a plain func literal of this type fits
// [Command.Flags] too.
type RunFunc = func(ctx context.Context, env *Env, args []string) error

// Env holds the streams a command reads and writes. Tests build their own; [Main] uses the
// process's streams.
type Env struct {
	Stdin  io.Reader
	Stdout io.Writer // results: what a script would capture
	Stderr io.Writer // progress bars, warnings and errors
}

// Warnf prints "fedweave: warning: <msg>" on env.Stderr.
func (env *Env) Warnf(format string, args ...any) {
	fmt.Fprintf(env.Stderr, "fedweave: warning: %s\n", fmt.Sprintf(format, args...))
}

// Main runs fedweave with args (without the program name) and returns the exit status.
// SIGINT and SIGTERM cancel the context passed to the command; a second signal ends the
// process at once.
func Main(args []string, stdin io.Reader, stdout, stderr io.Writer) int {
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	context.AfterFunc(ctx, stop) // restores the default action: a second Ctrl-C kills
	env := &Env{Stdin: stdin, Stdout: stdout, Stderr: stderr}
	return env.run(ctx, args)
}

// run dispatches args and turns the outcome into an exit status.
func (env *Env) run(ctx context.Context, args []string) int {
	err := env.dispatch(ctx, args)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, errUsagePrinted):
		return 2
	case ctx.Err() != nil && errors.Is(err, context.Canceled):
		fmt.Fprintln(env.Stderr, "fedweave: error: interrupted")
		return 130
	}
	fmt.Fprintf(env.Stderr, "fedweave: error: %v\n", err)
	var h *HintError
	if errors.As(err, &h) && h.Hint != "" {
		fmt.Fprintf(env.Stderr, "fedweave: hint: %s\n", h.Hint)
	}
	var u *UsageError
	if errors.As(err, &u) {
		return 2
	}
	return 1
}

// errUsagePrinted reports that the top-level usage went to stderr: exit 2, print nothing more.
var errUsagePrinted = errors.New("usage printed")

func (env *Env) dispatch(ctx context.Context, args []string) error {
	if len(args) == 0 {
		printUsage(env.Stderr)
		return errUsagePrinted
	}
	name, rest := args[0], args[1:]
	switch {
	case name == "help":
		return env.help(rest)
	case isHelpFlag(name):
		printUsage(env.Stdout)
		return nil
	case strings.HasPrefix(name, "-"):
		return Hint(Usagef("flag %s must follow a command", name),
			`write flags after the command, as in "fedweave demo --rounds 3"; run "fedweave help" for the commands`)
	}
	c := lookup(name)
	if c == nil {
		return unknownCommand(name)
	}
	return env.runCommand(ctx, c, rest)
}

// runCommand parses c's flags from args and runs it: -h prints its usage, and a usage error
// gets the hint that points to it. Commands with subcommands (ca, policy, audit) call it for
// the subcommand they dispatch to.
func (env *Env) runCommand(ctx context.Context, c *Command, args []string) error {
	fs := newFlagSet(c)
	run := c.Flags(fs)
	err := fs.Parse(args)
	if errors.Is(err, flag.ErrHelp) {
		printCommandUsage(env.Stdout, c, fs)
		return nil
	}
	if err != nil {
		return Hint(&UsageError{Err: err}, usageHint(c))
	}
	err = run(ctx, env, fs.Args())
	var u *UsageError
	var h *HintError
	if errors.As(err, &u) && !errors.As(err, &h) {
		err = Hint(err, usageHint(c))
	}
	return err
}

// help implements "fedweave help [command]".
func (env *Env) help(args []string) error {
	switch {
	case len(args) == 0 || len(args) == 1 && args[0] == "help":
		printUsage(env.Stdout)
		return nil
	case len(args) > 1:
		return Hint(Usagef("help takes one command, got %d arguments", len(args)),
			`run "fedweave help <command>"`)
	}
	c := lookup(args[0])
	if c == nil {
		return unknownCommand(args[0])
	}
	fs := newFlagSet(c)
	c.Flags(fs)
	printCommandUsage(env.Stdout, c, fs)
	return nil
}

func lookup(name string) *Command {
	for _, c := range commands {
		if c.Name == name {
			return c
		}
	}
	return nil
}

func unknownCommand(name string) error {
	var names []string
	for _, c := range commands {
		if !c.Hidden {
			names = append(names, c.Name)
		}
	}
	names = append(names, "help")
	return Hint(Usagef("unknown command %q", name),
		fmt.Sprintf(`the commands are %s; run "fedweave help" for what they do`, strings.Join(names, ", ")))
}

func usageHint(c *Command) string {
	return fmt.Sprintf(`run "fedweave %s -h" for its flags and an example`, c.Name)
}

func isHelpFlag(arg string) bool {
	return arg == "-h" || arg == "-help" || arg == "--help"
}

// newFlagSet returns a silent flag set: dispatch prints help and errors itself.
func newFlagSet(c *Command) *flag.FlagSet {
	fs := flag.NewFlagSet("fedweave "+c.Name, flag.ContinueOnError)
	fs.SetOutput(io.Discard)
	fs.Usage = func() {}
	return fs
}

const usageHeader = `fedweave is a privacy-preserving federated multimodal learning platform:
organisations train one model on text, images and tables they keep at home.

usage: fedweave <command> [flags] [arguments]

Commands:
`

const usageFooter = `
Run "fedweave help <command>" or "fedweave <command> -h" for a command's flags and an example.
`

func printUsage(w io.Writer) {
	var b strings.Builder
	b.WriteString(usageHeader)
	width := len("help")
	for _, c := range commands {
		if !c.Hidden {
			width = max(width, len(c.Name))
		}
	}
	for _, c := range commands {
		if !c.Hidden {
			fmt.Fprintf(&b, "  %-*s  %s\n", width, c.Name, c.Summary)
		}
	}
	fmt.Fprintf(&b, "  %-*s  %s\n", width, "help", "show the usage of fedweave or of one command")
	b.WriteString(usageFooter)
	io.WriteString(w, b.String())
}

// printCommandUsage writes c.Usage and then the flags of fs, spelled with two dashes.
func printCommandUsage(w io.Writer, c *Command, fs *flag.FlagSet) {
	var b strings.Builder
	b.WriteString(strings.TrimRight(c.Usage, "\n"))
	b.WriteString("\n")
	first := true
	fs.VisitAll(func(f *flag.Flag) {
		if first {
			b.WriteString("\nFlags:\n")
			first = false
		}
		name, usage := flag.UnquoteUsage(f)
		fmt.Fprintf(&b, "  --%s", f.Name)
		if name != "" {
			fmt.Fprintf(&b, " %s", name)
		}
		fmt.Fprintf(&b, "\n        %s", usage)
		if f.DefValue != "" && f.DefValue != "0" && f.DefValue != "false" {
			fmt.Fprintf(&b, " (default %s)", f.DefValue)
		}
		b.WriteString("\n")
	})
	io.WriteString(w, b.String())
}
