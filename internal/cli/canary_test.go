package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestDemoLeavesNoPlaintext: canaries in the text and the ids of a partner's records, run
// through "fedweave demo --data MANIFEST --dir DIR", are found nowhere under DIR (stores,
// keys, checkpoints, audit log, report), in plain, hex or base64 form, nor in what the demo
// printed.
func TestDemoLeavesNoPlaintext(t *testing.T) {
	const canary, idCanary = "CANARY-7f3a9c", "IDCANARY-b41e0d"
	base := t.TempDir()
	manifest := filepath.Join(base, "records.jsonl")
	words := []string{"fever", "cough", "rash", "headache"}
	var b strings.Builder
	for i := range 120 {
		label := i % 3
		text := fmt.Sprintf("%s %s %s", words[label], words[(i/3)%4], words[(label+1)%4])
		id := fmt.Sprintf("r%d", i)
		if i%4 == 0 {
			text += " " + canary
			id = fmt.Sprintf("%s-%d", idCanary, i)
		}
		fmt.Fprintf(&b, `{"id":%q,"label":"c%d","text":%q,"tabular":{"age":%d,"dose":%g}}`+"\n",
			id, label, text, 20+i%50, float64(label)+0.1*float64(i%7))
	}
	if err := os.WriteFile(manifest, []byte(b.String()), 0o600); err != nil {
		t.Fatal(err)
	}
	dir := filepath.Join(base, "work")
	var stdout, stderr bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &stdout, Stderr: &stderr}
	code := env.run(context.Background(), []string{"demo", "--data", manifest, "--dir", dir, "--clients", "3", "--rounds", "2",
		"--local-epochs", "1", "--report", filepath.Join(dir, "report.json"), "--v"})
	if code != 0 {
		t.Fatalf("demo exited %d:\n%s", code, stderr.String())
	}
	stores := 0
	filepath.WalkDir(filepath.Join(dir, "clients"), func(path string, e fs.DirEntry, err error) error {
		if err == nil && e.IsDir() && e.Name() == "store" {
			stores++
		}
		return nil
	})
	if stores != 3 {
		t.Errorf("%d client stores under %s, want 3", stores, dir)
	}
	var forms [][]byte
	for _, c := range []string{canary, idCanary} {
		forms = append(forms, []byte(c), []byte(strings.ToLower(c)), []byte(hex.EncodeToString([]byte(c))))
		for shift := range 3 { // base64 of the canary at each alignment, without the edges
			enc := base64.StdEncoding.EncodeToString(append(make([]byte, shift), c...))
			forms = append(forms, []byte(enc[4:len(enc)-4]))
		}
	}
	files := 0
	err := filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		files++
		data, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		for _, f := range forms {
			if bytes.Contains(data, f) {
				t.Errorf("%s holds %q", path, f)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	for _, f := range forms {
		if bytes.Contains(stdout.Bytes(), f) || bytes.Contains(stderr.Bytes(), f) {
			t.Errorf("the demo printed %q", f)
		}
	}
	if files < 10 {
		t.Errorf("only %d files under %s", files, dir)
	}
}
