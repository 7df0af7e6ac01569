package cli

import (
	"bytes"
	"context"
	"errors"
	"flag"
	"fmt"
	"strings"
	"testing"
)

// Test-only hidden commands, registered by TestMain in script_test.go so that both these tests
// and the txtar scripts can run them.
var testCommands = []*Command{
	{
		// testwait waits for ctx to be done, as a long training run does on Ctrl-C.
		Name:    "testwait",
		Summary: "wait for an interrupt (tests only)",
		Usage:   "usage: fedweave testwait\n\nExample:\n\n\t$ fedweave testwait\n",
		Hidden:  true,
		Flags: func(fs *flag.FlagSet) RunFunc {
			return func(ctx context.Context, env *Env, args []string) error {
				<-ctx.Done()
				return errors.Join(errors.New("training stopped"), ctx.Err())
			}
		},
	},
}

func TestMainExitAndOutput(t *testing.T) {
	tests := []struct {
		name     string
		args     []string
		code     int
		stdout   []string // each must appear in stdout
		stderr   []string // each must appear in stderr
		quietOut bool     // stdout must be empty
		quietErr bool     // stderr must be empty
	}{
		{name: "no arguments", args: nil, code: 2, stderr: []string{"usage: fedweave <command>", "Commands:"}, quietOut: true},
		{name: "help", args: []string{"help"}, code: 0, stdout: []string{"Commands:", "  demo ", "  version ", "  help "}, quietErr: true},
		{name: "-h", args: []string{"-h"}, code: 0, stdout: []string{"Commands:"}, quietErr: true},
		{name: "--help", args: []string{"--help"}, code: 0, stdout: []string{"Commands:"}, quietErr: true},
		{name: "help help", args: []string{"help", "help"}, code: 0, stdout: []string{"Commands:"}, quietErr: true},
		{name: "help demo", args: []string{"help", "demo"}, code: 0, stdout: []string{"usage: fedweave demo", "Example:", "--clients number", "(default 4)"}, quietErr: true},
		{name: "demo -h", args: []string{"demo", "-h"}, code: 0, stdout: []string{"usage: fedweave demo", "--secure protocol"}, quietErr: true},
		{name: "demo --help", args: []string{"demo", "--help"}, code: 0, stdout: []string{"usage: fedweave demo"}, quietErr: true},
		{name: "help of hidden command", args: []string{"help", "testwait"}, code: 0, stdout: []string{"usage: fedweave testwait"}},
		{name: "hidden commands are not listed", args: []string{"help"}, code: 0, stdout: []string{"version"}},
		{
			name: "help of unknown command", args: []string{"help", "nosuch"}, code: 2,
			stderr: []string{`fedweave: error: unknown command "nosuch"`, "fedweave: hint: the commands are demo, train, ca, server, client, predict, explain, policy, erase, audit, version, help"},
		},
		{name: "help with two commands", args: []string{"help", "demo", "version"}, code: 2, stderr: []string{"fedweave: error: help takes one command"}},
		{
			name: "unknown command", args: []string{"frobnicate"}, code: 2, quietOut: true,
			stderr: []string{"fedweave: error: unknown command \"frobnicate\"\nfedweave: hint: the commands are demo, train, ca, server, client, predict, explain, policy, erase, audit, version, help; run \"fedweave help\" for what they do\n"},
		},
		{name: "flag before command", args: []string{"--rounds", "3", "demo"}, code: 2, stderr: []string{"fedweave: error: flag --rounds must follow a command", "fedweave: hint: "}},
		{name: "version", args: []string{"version"}, code: 0, stdout: []string{"fedweave ", " go1."}, quietErr: true},
		{name: "version with argument", args: []string{"version", "now"}, code: 2, stderr: []string{"fedweave: error: version takes no arguments", `fedweave: hint: run "fedweave version -h"`}},
		{name: "demo unknown flag", args: []string{"demo", "--nosuch"}, code: 2, stderr: []string{"fedweave: error: flag provided but not defined: -nosuch", `fedweave: hint: run "fedweave demo -h" for its flags and an example`}},
		{name: "demo bad int", args: []string{"demo", "--clients", "many"}, code: 2, stderr: []string{`invalid value "many" for flag -clients`}},
		{name: "demo bad secure", args: []string{"demo", "--secure", "rot13"}, code: 2, stderr: []string{`unknown --secure "rot13": use none, secagg or mhe`}},
		{name: "demo bad fusion", args: []string{"demo", "--fusion", "sum"}, code: 2, stderr: []string{`unknown --fusion "sum"`}},
		{name: "demo bad drop", args: []string{"demo", "--drop", "4"}, code: 2, stderr: []string{"--drop must be from 0 to 3 (fewer than --clients), got 4"}},
		{name: "demo NaN drop", args: []string{"demo", "--drop", "NaN"}, code: 2, stderr: []string{`invalid value "NaN" for flag -drop`}},
		{name: "demo no clients", args: []string{"demo", "--clients", "0"}, code: 2, stderr: []string{"--clients must be from 1 to 64"}},
		{name: "demo extra argument", args: []string{"demo", "now"}, code: 2, stderr: []string{`unexpected argument "now"`}},
		{
			name: "device cuda", args: []string{"train", "--device", "cuda"}, code: 1, quietOut: true,
			stderr: []string{"fedweave: error: this build of fedweave has no GPU support (built without -tags cuda)\nfedweave: hint: use --device cpu, the default\n"},
		},
		{name: "device unknown", args: []string{"train", "--device=tpu"}, code: 2, stderr: []string{`fedweave: error: unknown device "tpu"`, "fedweave: hint: use --device cpu"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(tt.args, strings.NewReader(""), &stdout, &stderr)
			if code != tt.code {
				t.Errorf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, &stdout, &stderr)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout.String(), s) {
					t.Errorf("stdout lacks %q:\n%s", s, &stdout)
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr.String(), s) {
					t.Errorf("stderr lacks %q:\n%s", s, &stderr)
				}
			}
			if tt.quietOut && stdout.Len() > 0 {
				t.Errorf("stdout is not empty:\n%s", &stdout)
			}
			if tt.quietErr && stderr.Len() > 0 {
				t.Errorf("stderr is not empty:\n%s", &stderr)
			}
			if strings.Contains(stdout.String(), "testwait") && tt.args[0] == "help" && len(tt.args) == 1 {
				t.Errorf("help lists a hidden command:\n%s", &stdout)
			}
		})
	}
}

func TestInterrupt(t *testing.T) {
	ctx, cancel := context.WithCancel(context.Background())
	cancel()
	var stdout, stderr bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr}
	if code := env.run(ctx, []string{"testwait"}); code != 130 {
		t.Errorf("exit status %d, want 130", code)
	}
	if got, want := stderr.String(), "fedweave: error: interrupted\n"; got != want {
		t.Errorf("stderr %q, want %q", got, want)
	}
}

func TestHint(t *testing.T) {
	if Hint(nil, "anything") != nil {
		t.Error("Hint(nil, ...) is not nil")
	}
	base := errors.New("no records in manifest")
	err := fmt.Errorf("train: %w", Hint(base, "check --data"))
	var h *HintError
	if !errors.As(err, &h) || h.Hint != "check --data" {
		t.Fatalf("errors.As found %v, want the hint", h)
	}
	if !errors.Is(err, base) {
		t.Error("errors.Is does not see through the hint")
	}
	if got, want := err.Error(), "train: no records in manifest"; got != want {
		t.Errorf("Error() = %q, want %q (the hint prints on its own line)", got, want)
	}

	usage := Hint(Usagef("bad --rounds %d: %w", -1, base), "use --rounds 1 or more")
	var u *UsageError
	if !errors.As(usage, &u) || !errors.Is(usage, base) {
		t.Errorf("a hinted Usagef error is not a UsageError wrapping its cause: %v", usage)
	}
}

func TestCheckDevice(t *testing.T) {
	tests := []struct {
		device string
		ok     bool
		usage  bool
		hint   string
	}{
		{device: "cpu", ok: true},
		{device: "cuda", hint: "use --device cpu, the default"},
		{device: "CPU", usage: true, hint: "use --device cpu, the default (or cuda in a GPU build)"},
		{device: "", usage: true},
		{device: "tpu", usage: true},
	}
	for _, tt := range tests {
		t.Run(tt.device, func(t *testing.T) {
			err := CheckDevice(tt.device)
			if tt.ok {
				if err != nil {
					t.Fatalf("CheckDevice(%q) = %v, want nil", tt.device, err)
				}
				return
			}
			if err == nil {
				t.Fatalf("CheckDevice(%q) = nil, want an error", tt.device)
			}
			var u *UsageError
			if errors.As(err, &u) != tt.usage {
				t.Errorf("CheckDevice(%q) is a usage error: %v, want %v", tt.device, !tt.usage, tt.usage)
			}
			var h *HintError
			if !errors.As(err, &h) || tt.hint != "" && h.Hint != tt.hint {
				t.Errorf("CheckDevice(%q) hint = %v, want %q", tt.device, h, tt.hint)
			}
		})
	}
	if err := CheckDevice("cuda"); err.Error() != "this build of fedweave has no GPU support (built without -tags cuda)" {
		t.Errorf("CheckDevice(cuda) = %q", err)
	}
}

// TestRegistry holds every registered command, train and later ones included, to the
// conventions of the package doc.
func TestRegistry(t *testing.T) {
	seen := map[string]bool{"help": true}
	for _, c := range commands {
		t.Run(c.Name, func(t *testing.T) {
			if c.Name == "" || strings.ContainsAny(c.Name, " \t-") {
				t.Errorf("bad command name %q", c.Name)
			}
			if seen[c.Name] {
				t.Errorf("command %q registered twice (or named help)", c.Name)
			}
			seen[c.Name] = true
			if c.Flags == nil {
				t.Fatal("Flags is nil")
			}
			if c.Hidden {
				return
			}
			if c.Summary == "" || strings.HasSuffix(c.Summary, ".") || c.Summary != strings.ToLower(c.Summary[:1])+c.Summary[1:] {
				t.Errorf("summary %q: want one lower-case line without a final period", c.Summary)
			}
			if !strings.HasPrefix(c.Usage, "usage: fedweave "+c.Name) {
				t.Errorf("usage does not start with %q", "usage: fedweave "+c.Name)
			}
			if !strings.Contains(c.Usage, "Example:") || !strings.Contains(c.Usage, "$ fedweave "+c.Name) {
				t.Errorf("usage has no worked example (an \"Example:\" section with \"$ fedweave %s ...\")", c.Name)
			}
			fs := newFlagSet(c)
			if c.Flags(fs) == nil {
				t.Error("Flags returned a nil run function")
			}
			fs.VisitAll(func(f *flag.Flag) {
				if f.Usage == "" {
					t.Errorf("flag --%s has no usage text", f.Name)
				}
			})
		})
	}
}
