package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
)

// TestDemoDP runs a small demo with --dp (DP-SGD in every client, with --secure none to keep
// it short): every entry of the report's rounds has epsilon and delta, epsilon grows over
// committed rounds, the report's dp section gives the unit and the last epsilon; with
// --dp-epsilon below what a second round would spend, the task stops after one round and the
// demo still succeeds, saying why; --dp-partner-noise without secagg is refused.
func TestDemoDP(t *testing.T) {
	dir := t.TempDir()
	report := filepath.Join(dir, "r.json")
	var stdout, stderr bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr}
	code := env.run(context.Background(), []string{"demo", "--dp", "--secure", "none", "--n", "600", "--clients", "3", "--rounds", "2", "--report", report})
	if code != 0 {
		t.Fatalf("demo exited %d:\n%s", code, stderr.String())
	}
	rep := readDPReport(t, report)
	if len(rep.Rounds) != 2 {
		t.Fatalf("%d rounds", len(rep.Rounds))
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
	if rep.DP == nil || rep.DP.Unit != "record" || rep.DP.Epsilon != prev || rep.DP.Stopped != "" {
		t.Errorf("dp section %+v, last epsilon %v", rep.DP, prev)
	}
	if !strings.Contains(stdout.String(), "per record at delta 1e-05") {
		t.Errorf("the table does not state the guarantee:\n%s", stdout.String())
	}

	first := rep.Rounds[0]["epsilon"].(float64)
	stdout.Reset()
	stderr.Reset()
	code = env.run(context.Background(), []string{"demo", "--dp", "--secure", "none", "--n", "600", "--clients", "3", "--rounds", "3",
		"--dp-epsilon", strconv.FormatFloat((first+prev)/2, 'g', -1, 64), "--report", report})
	if code != 0 {
		t.Fatalf("demo with --dp-epsilon exited %d:\n%s", code, stderr.String())
	}
	rep = readDPReport(t, report)
	if len(rep.Rounds) != 1 || rep.DP == nil || !strings.Contains(rep.DP.Stopped, "max_epsilon") || !strings.Contains(stdout.String(), "stopped early") {
		t.Errorf("%d rounds, dp %+v\n%s", len(rep.Rounds), rep.DP, stdout.String())
	}

	stderr.Reset()
	if code := env.run(context.Background(), []string{"demo", "--dp", "--dp-partner-noise", "0.1", "--secure", "none", "--n", "200", "--rounds", "1"}); code == 0 || !strings.Contains(stderr.String(), "secagg") {
		t.Errorf("--dp-partner-noise --secure none: exit %d, %s", code, stderr.String())
	}
}

type dpReport struct {
	Rounds []map[string]any `json:"rounds"`
	DP     *struct {
		Unit    string  `json:"unit"`
		Epsilon float64 `json:"epsilon"`
		Stopped string  `json:"stopped"`
	} `json:"dp"`
}

func readDPReport(t *testing.T, path string) dpReport {
	t.Helper()
	b, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}
	var rep dpReport
	if err := json.Unmarshal(b, &rep); err != nil {
		t.Fatal(err)
	}
	return rep
}
