package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoDP runs a small demo with --dp: every entry of the report's rounds has epsilon and
// delta, epsilon grows over committed rounds, and --dp without secagg is refused.
func TestDemoDP(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "r.json")
	var stdout, stderr bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr}
	code := env.run(context.Background(), []string{"demo", "--dp", "--n", "600", "--clients", "3", "--rounds", "2",
		"--local-epochs", "1", "--report", report})
	if code != 0 {
		t.Fatalf("demo exited %d:\n%s", code, stderr.String())
	}
	b, err := os.ReadFile(report)
	if err != nil {
		t.Fatal(err)
	}
	var rep struct {
		Rounds []map[string]any `json:"rounds"`
	}
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	if len(rep.Rounds) == 0 {
		t.Fatal("no rounds")
	}
	prev := 0.0
	for _, r := range rep.Rounds {
		eps, ok1 := r["epsilon"].(float64)
		delta, ok2 := r["delta"].(float64)
		if !ok1 || !ok2 || delta != 1e-5 {
			t.Fatalf("round %v: epsilon %v, delta %v", r["round"], r["epsilon"], r["delta"])
		}
		if r["committed"] == true && !(eps > prev) {
			t.Errorf("round %v: epsilon %v after %v", r["round"], eps, prev)
		}
		prev = eps
	}
	stderr.Reset()
	if code := env.run(context.Background(), []string{"demo", "--dp", "--secure", "none", "--n", "200", "--rounds", "1"}); code == 0 || !strings.Contains(stderr.String(), "secagg") {
		t.Errorf("--dp --secure none: exit %d, %s", code, stderr.String())
	}
}
