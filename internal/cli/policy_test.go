package cli

import (
	"bytes"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/rogpeppe/go-internal/txtar"
)

// repoRoot is the root of the repository, from this package's directory.
const repoRoot = "../.."

// policy.txtar carries copies of examples/policies, so that its sessions run on the files a
// fresh checkout has: they must stay equal to them.
func TestPolicyScriptHasTheExamples(t *testing.T) {
	ar, err := txtar.ParseFile(filepath.Join("testdata", "script", "policy.txtar"))
	if err != nil {
		t.Fatal(err)
	}
	seen := map[string]bool{}
	for _, f := range ar.Files {
		if !strings.HasPrefix(f.Name, "examples/policies/") {
			continue
		}
		seen[f.Name] = true
		want, err := os.ReadFile(filepath.Join(repoRoot, f.Name))
		if err != nil {
			t.Fatalf("policy.txtar holds %s, which the repository lacks: %v", f.Name, err)
		}
		if !bytes.Equal(f.Data, want) {
			t.Errorf("policy.txtar's copy of %s differs from the file: copy it over", f.Name)
		}
	}
	for _, name := range []string{"fedweave.cedarschema", "default.cedar", "entities.json"} {
		if !seen["examples/policies/"+name] {
			t.Errorf("policy.txtar lacks a copy of examples/policies/%s", name)
		}
	}
}

// The sessions of examples/policies/README.md run as written, from the repository root.
func TestPolicyREADME(t *testing.T) {
	readme, err := os.ReadFile(filepath.Join(repoRoot, "examples", "policies", "README.md"))
	if err != nil {
		t.Fatal(err)
	}
	sessions := readmeSessions(string(readme))
	if len(sessions) < 8 {
		t.Fatalf("found %d sessions in the README, want at least 8", len(sessions))
	}
	t.Chdir(repoRoot)
	for _, s := range sessions {
		t.Run(strings.Join(s.args[1:min(3, len(s.args))], " "), func(t *testing.T) {
			var stdout, stderr bytes.Buffer
			code := Main(s.args[1:], strings.NewReader(""), &stdout, &stderr)
			if code != 0 || stdout.String() != s.output || stderr.Len() > 0 {
				t.Errorf("$ %s\nexit %d, stdout:\n%sstderr:\n%swant stdout:\n%s", strings.Join(s.args, " "), code, &stdout, &stderr, s.output)
			}
		})
	}
}

type session struct {
	args   []string
	output string
}

// readmeSessions returns the "$ fedweave ..." commands of the code blocks of a README, with
// the output lines that follow each.
func readmeSessions(text string) []session {
	var out []session
	lines := strings.Split(text, "\n")
	for i := 0; i < len(lines); i++ {
		if !strings.HasPrefix(lines[i], "$ fedweave ") {
			continue
		}
		cmd := strings.TrimPrefix(lines[i], "$ ")
		for strings.HasSuffix(cmd, `\`) && i+1 < len(lines) {
			i++
			cmd = strings.TrimSuffix(cmd, `\`) + " " + strings.TrimSpace(lines[i])
		}
		var output strings.Builder
		for i+1 < len(lines) && !strings.HasPrefix(lines[i+1], "$ ") && !strings.HasPrefix(lines[i+1], "```") {
			i++
			output.WriteString(lines[i] + "\n")
		}
		out = append(out, session{args: shellWords(cmd), output: output.String()})
	}
	return out
}

// shellWords splits a command line as a POSIX shell would for the README's commands: words
// apart by blanks, with '...' and "..." quoting.
func shellWords(s string) []string {
	var words []string
	var w strings.Builder
	inWord := false
	for i := 0; i < len(s); i++ {
		switch c := s[i]; {
		case c == ' ' || c == '\t':
			if inWord {
				words = append(words, w.String())
				w.Reset()
				inWord = false
			}
		case c == '\'':
			j := strings.IndexByte(s[i+1:], '\'')
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		case c == '"':
			j := strings.IndexByte(s[i+1:], '"')
			w.WriteString(s[i+1 : i+1+j])
			i += j + 1
			inWord = true
		default:
			w.WriteByte(c)
			inWord = true
		}
	}
	if inWord {
		words = append(words, w.String())
	}
	return words
}

func TestShellWords(t *testing.T) {
	got := strings.Join(shellWords(`fedweave a 'Checkpoint::"x y"'  --context '{"m": ["a"]}' "b c"`), "|")
	if want := `fedweave|a|Checkpoint::"x y"|--context|{"m": ["a"]}|b c`; got != want {
		t.Errorf("shellWords = %s, want %s", got, want)
	}
}
