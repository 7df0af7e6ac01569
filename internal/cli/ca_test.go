package cli

import (
	"bytes"
	"flag"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedweave/fedweave/crypto/pki"
)

// runMain runs fedweave in process and returns its exit status and streams.
func runMain(args ...string) (code int, stdout, stderr string) {
	var out, errb bytes.Buffer
	code = Main(args, strings.NewReader(""), &out, &errb)
	return code, out.String(), errb.String()
}

func TestCA(t *testing.T) {
	dir := t.TempDir()
	caDir := filepath.Join(dir, "pki")
	at := func(name string) string { return filepath.Join(dir, name) }

	code, stdout, stderr := runMain("ca", "init", "--dir", caDir, "--federation", "acme")
	if code != 0 || stderr != "" || !strings.HasPrefix(stdout, "federation acme: wrote "+filepath.Join(caDir, "ca.crt")+" and "+filepath.Join(caDir, "ca.key")+" (valid until ") {
		t.Fatalf("ca init: status %d\nstdout:\n%s\nstderr:\n%s", code, stdout, stderr)
	}
	ca, err := pki.LoadCA(caDir)
	if err != nil {
		t.Fatal(err)
	}
	if d := ca.Certificate().NotAfter.Sub(ca.Certificate().NotBefore); d < 8760*time.Hour || d > 8761*time.Hour {
		t.Errorf("CA valid for %v, want the --validity default of 8760h", d)
	}

	tests := []struct {
		name   string
		args   []string
		code   int
		stdout []string
		stderr []string
		check  func(t *testing.T) // runs after a successful command
	}{
		{
			name: "init twice", code: 1,
			args:   []string{"ca", "init", "--dir", caDir, "--federation", "acme"},
			stderr: []string{"fedweave: error: pki: a CA already exists in " + caDir + "\nfedweave: hint: use another --dir"},
		},
		{
			name: "issue a server",
			args: []string{"ca", "issue", "--dir", caDir, "--org", "acme", "--role", "server", "--name", "agg", "--out", at("agg")},
			stdout: []string{"fedweave://acme/org/acme/server/agg\nwrote " + at("agg.crt") + " and " + at("agg.key") + " (valid until ",
				"\nvalid for localhost, 127.0.0.1, ::1\n"},
			check: func(t *testing.T) {
				id := loadIdentity(t, at("agg"))
				if id.Principal != (pki.Principal{Federation: "acme", Org: "acme", Role: pki.RoleServer, Name: "agg"}) {
					t.Errorf("principal %v", id.Principal)
				}
				if d := id.Cert.Leaf.NotAfter.Sub(id.Cert.Leaf.NotBefore); d < 2160*time.Hour || d > 2161*time.Hour {
					t.Errorf("certificate valid for %v, want the --validity default of 2160h", d)
				}
			},
		},
		{
			name: "issue a client by URI",
			args: []string{"ca", "issue", "--dir", caDir, "--principal", "fedweave://acme/org/hospital-a/client/node1",
				"--dns", "node1.example, node1", "--ip", "10.0.0.7", "--validity", "24h", "--out", at("node1")},
			stdout: []string{"fedweave://acme/org/hospital-a/client/node1\n", "valid for node1.example, node1, 10.0.0.7\n"},
			check: func(t *testing.T) {
				id := loadIdentity(t, at("node1"))
				if id.Principal.URI() != "fedweave://acme/org/hospital-a/client/node1" {
					t.Errorf("principal %v", id.Principal)
				}
				if d := id.Cert.Leaf.NotAfter.Sub(time.Now()); d > 24*time.Hour || d < 23*time.Hour {
					t.Errorf("certificate ends in %v, want 24h from its start", d)
				}
				fi, err := os.Stat(at("node1.key"))
				if err != nil || fi.Mode().Perm() != 0o600 {
					t.Errorf("node1.key: %v, %v; want mode 0600", fi.Mode(), err)
				}
			},
		},
		{
			name: "issue beyond the CA", args: []string{"ca", "issue", "--dir", caDir, "--org", "o", "--role", "admin", "--name", "alice", "--validity", "100000h", "--out", at("alice")},
			stdout: []string{"fedweave://acme/org/o/admin/alice\n"},
			stderr: []string{"fedweave: warning: the certificate ends with the CA, on "},
		},
		{
			name: "out exists", code: 1,
			args:   []string{"ca", "issue", "--dir", caDir, "--org", "o", "--role", "client", "--name", "x", "--out", at("node1")},
			stderr: []string{"fedweave: error: pki: " + at("node1.crt") + " already exists\nfedweave: hint: choose another --out"},
		},
		{
			name: "out directory missing", code: 1,
			args:   []string{"ca", "issue", "--dir", caDir, "--org", "o", "--role", "client", "--name", "x", "--out", at("no/such/x")},
			stderr: []string{"fedweave: hint: create the directory of --out first"},
		},
		{
			name: "bad principal", code: 2,
			args: []string{"ca", "issue", "--dir", caDir, "--principal", "fedweave://acme/org/Hospital/client/n", "--out", at("bad")},
			stderr: []string{`fedweave: error: invalid --principal "fedweave://acme/org/Hospital/client/n": org "Hospital" must start with a lower-case letter or a digit` +
				"\nfedweave: hint: a principal reads fedweave://FEDERATION/org/ORG/ROLE/NAME"},
		},
		{
			name: "principal of another federation", code: 2,
			args:   []string{"ca", "issue", "--dir", caDir, "--principal", "fedweave://other/org/h/client/n", "--out", at("bad")},
			stderr: []string{"fedweave: error: --principal is in federation other, but this CA is for federation acme\nfedweave: hint: use fedweave://acme/org/h/client/n"},
		},
		{
			name: "unknown role", code: 2,
			args:   []string{"ca", "issue", "--dir", caDir, "--org", "o", "--role", "root", "--name", "n", "--out", at("bad")},
			stderr: []string{"fedweave: error: unknown --role \"root\"\nfedweave: hint: use server, client, admin or reader\n"},
		},
		{
			name: "bad org", code: 2,
			args:   []string{"ca", "issue", "--dir", caDir, "--org", "Hospital A", "--role", "client", "--name", "n", "--out", at("bad")},
			stderr: []string{"fedweave: error: invalid --org \"Hospital A\"\nfedweave: hint: a federation, org or name is 1 to 64 characters"},
		},
		{
			name: "no CA", code: 1,
			args: []string{"ca", "issue", "--dir", at("nowhere"), "--org", "o", "--role", "client", "--name", "n", "--out", at("bad")},
			stderr: []string{"fedweave: error: no CA in " + at("nowhere") +
				"\nfedweave: hint: create one with \"fedweave ca init --dir " + at("nowhere") + " --federation NAME\""},
		},
		{
			name: "bad federation", code: 2,
			args:   []string{"ca", "init", "--dir", at("other"), "--federation", "Acme"},
			stderr: []string{"fedweave: error: invalid --federation \"Acme\"\nfedweave: hint: a federation, org or name is"},
		},
		{name: "no subcommand", args: []string{"ca"}, code: 2, stderr: []string{"fedweave: error: ca needs a subcommand: init or issue\nfedweave: hint: run \"fedweave ca -h\""}},
		{name: "unknown subcommand", args: []string{"ca", "revoke"}, code: 2, stderr: []string{"fedweave: error: unknown ca subcommand \"revoke\"\nfedweave: hint: the ca subcommands are init and issue"}},
		{name: "flag before subcommand", args: []string{"ca", "--dir", caDir, "init"}, code: 2, stderr: []string{"flag provided but not defined: -dir", `run "fedweave ca -h"`}},
		{name: "unknown flag", args: []string{"ca", "issue", "--nosuch"}, code: 2, stderr: []string{"fedweave: error: flag provided but not defined: -nosuch\nfedweave: hint: run \"fedweave ca issue -h\" for its flags and an example\n"}},
		{name: "init without dir", args: []string{"ca", "init", "--federation", "acme"}, code: 2, stderr: []string{"--dir is required", `run "fedweave ca init -h"`}},
		{name: "init without federation", args: []string{"ca", "init", "--dir", at("x")}, code: 2, stderr: []string{"--federation is required"}},
		{name: "init bad validity", args: []string{"ca", "init", "--dir", at("x"), "--federation", "a", "--validity", "-1h"}, code: 2, stderr: []string{"--validity must be positive"}},
		{name: "init extra argument", args: []string{"ca", "init", "--dir", at("x"), "--federation", "a", "now"}, code: 2, stderr: []string{`unexpected argument "now"`}},
		{name: "issue without out", args: []string{"ca", "issue", "--dir", caDir, "--org", "o", "--role", "client", "--name", "n"}, code: 2, stderr: []string{"--out is required"}},
		{name: "issue without dir", args: []string{"ca", "issue", "--org", "o", "--role", "client", "--name", "n", "--out", "x"}, code: 2, stderr: []string{"--dir is required"}},
		{name: "issue without principal", args: []string{"ca", "issue", "--dir", caDir, "--org", "o", "--out", "x"}, code: 2, stderr: []string{"name the principal with --principal, or with all of --org, --role and --name"}},
		{name: "issue with both", args: []string{"ca", "issue", "--dir", caDir, "--principal", "fedweave://acme/org/o/client/n", "--org", "o", "--out", "x"}, code: 2, stderr: []string{"give --principal or --org, --role and --name, not both"}},
		{name: "issue bad ip", args: []string{"ca", "issue", "--dir", caDir, "--org", "o", "--role", "server", "--name", "n", "--ip", "localhost", "--out", "x"}, code: 2, stderr: []string{`--ip "localhost" is not an IP address`}},
		{name: "issue bad validity", args: []string{"ca", "issue", "--dir", caDir, "--org", "o", "--role", "server", "--name", "n", "--validity", "0s", "--out", "x"}, code: 2, stderr: []string{"--validity must be positive"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			code, stdout, stderr := runMain(tt.args...)
			if code != tt.code {
				t.Fatalf("exit status %d, want %d\nstdout:\n%s\nstderr:\n%s", code, tt.code, stdout, stderr)
			}
			for _, s := range tt.stdout {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
			for _, s := range tt.stderr {
				if !strings.Contains(stderr, s) {
					t.Errorf("stderr lacks %q:\n%s", s, stderr)
				}
			}
			if tt.code != 0 && stdout != "" {
				t.Errorf("a failing command wrote to stdout:\n%s", stdout)
			}
			if tt.code == 0 && len(tt.stderr) == 0 && stderr != "" {
				t.Errorf("stderr is not empty:\n%s", stderr)
			}
			if tt.check != nil {
				tt.check(t)
			}
		})
	}
	if _, err := os.Stat(at("bad.key")); err == nil {
		t.Error("a refused issue left bad.key behind")
	}

	// A CA key that others may read is refused, with the fix in the message.
	os.Chmod(filepath.Join(caDir, "ca.key"), 0o644)
	code, _, stderr = runMain("ca", "issue", "--dir", caDir, "--org", "o", "--role", "client", "--name", "n", "--out", at("n"))
	if want := "is accessible by group or others (mode 0644): run chmod 600 " + filepath.Join(caDir, "ca.key"); code != 1 || !strings.Contains(stderr, want) {
		t.Errorf("issue with ca.key mode 0644: status %d, stderr:\n%s\nwant %q", code, stderr, want)
	}
}

func loadIdentity(t *testing.T, prefix string) *pki.Identity {
	t.Helper()
	id, err := pki.LoadIdentity(prefix+".crt", prefix+".key")
	if err != nil {
		t.Fatal(err)
	}
	return id
}

func TestCAHelp(t *testing.T) {
	tests := []struct {
		args []string
		want []string
	}{
		{[]string{"help", "ca"}, []string{"usage: fedweave ca init --dir DIR", "       fedweave ca issue --dir DIR", "Example:",
			"Flags of ca init:\n  --dir directory\n", "Flags of ca issue:\n", "  --principal URI\n", "(default 2160h0m0s)"}},
		{[]string{"ca", "-h"}, []string{"usage: fedweave ca init", "Flags of ca issue:"}},
		{[]string{"ca", "init", "-h"}, []string{"usage: fedweave ca init --dir DIR --federation NAME", "\nFlags:\n", "  --federation name\n", "(default 8760h0m0s)"}},
		{[]string{"ca", "issue", "--help"}, []string{"usage: fedweave ca issue --dir DIR (--principal URI", "\nFlags:\n", "  --out prefix\n", "  --role role\n"}},
		{[]string{"help"}, []string{"\n  ca ", "certificate authority"}},
	}
	for _, tt := range tests {
		t.Run(strings.Join(tt.args, " "), func(t *testing.T) {
			code, stdout, stderr := runMain(tt.args...)
			if code != 0 || stderr != "" {
				t.Fatalf("status %d, stderr:\n%s", code, stderr)
			}
			for _, s := range tt.want {
				if !strings.Contains(stdout, s) {
					t.Errorf("stdout lacks %q:\n%s", s, stdout)
				}
			}
		})
	}
}

// TestCASubcommands holds the subcommands of ca to the conventions TestRegistry checks for
// commands.
func TestCASubcommands(t *testing.T) {
	for _, c := range caSubcommands {
		t.Run(c.Name, func(t *testing.T) {
			if !strings.HasPrefix(c.Usage, "usage: fedweave "+c.Name+" ") {
				t.Errorf("usage does not start with %q", "usage: fedweave "+c.Name)
			}
			if !strings.Contains(c.Usage, "Example:") || !strings.Contains(c.Usage, "$ fedweave "+c.Name+" ") {
				t.Errorf("usage has no worked example")
			}
			if !strings.Contains(caCmd.Usage, "fedweave "+c.Name+" ") {
				t.Errorf("the usage of ca does not show %s", c.Name)
			}
			fs := newFlagSet(c)
			if c.Flags(fs) == nil {
				t.Fatal("Flags returned a nil run function")
			}
			fs.VisitAll(func(f *flag.Flag) {
				if f.Usage == "" {
					t.Errorf("flag --%s has no usage text", f.Name)
				}
				if !strings.Contains(caCmd.Usage, "  --"+f.Name) {
					t.Errorf("the usage of ca does not list --%s", f.Name)
				}
			})
		})
	}
}
