package secagg

import (
	"bufio"
	"crypto/sha256"
	"flag"
	"fmt"
	"maps"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"testing"
	"testing/cryptotest"
)

var update = flag.Bool("update", false, "rewrite testdata/transcript-v1.txt")

// TestTranscript plays fixed rounds (crypto/rand seeded, the toy CA's keys fixed) and compares
// the SHA-256 of every message with testdata/transcript-v1.txt, so that a change of the wire
// format, of a derivation or of the graph shows. Run with -update to rewrite the file after an
// intended change (and bump the version).
func TestTranscript(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 1)
	var lines []string
	for _, c := range []struct {
		name string
		cfg  Config
		n    int
	}{
		{"x25519", Config{T: 2}, 4},
		{"hybrid", Config{T: 2, KEM: "hybrid"}, 4},
		{"x25519/k=4", Config{K: 4, T: 3}, 9},
	} {
		p := testParams(6, 2)
		p.MaxWeight = 100
		inputs := randomInputs(rand.New(rand.NewPCG(11, 11)), p, c.n)
		tr := play(t, newCohort(c.cfg), p, inputs, map[int][]int{2: {c.n}}, nil)
		if tr.err != nil {
			t.Fatal(tr.err)
		}
		for phase := range 4 {
			if phase > 0 {
				for _, i := range slices.Sorted(maps.Keys(tr.told[phase])) {
					lines = append(lines, fmt.Sprintf("%s phase %d server->%d %x", c.name, phase, i, sha256.Sum256(tr.told[phase][i])))
				}
			}
			for _, i := range slices.Sorted(maps.Keys(tr.sent[phase])) {
				lines = append(lines, fmt.Sprintf("%s phase %d %d->server %x", c.name, phase, i, sha256.Sum256(tr.sent[phase][i])))
			}
		}
		lines = append(lines, fmt.Sprintf("%s sum %v %v %v", c.name, tr.sum.Contributors, tr.srv.raw.U32, tr.sum.Weights))
	}
	const file = "testdata/transcript-v1.txt"
	if *update {
		text := "# SHA-256 of every message of fixed SecAgg+ rounds (TestTranscript); regenerate with -update.\n" + strings.Join(lines, "\n") + "\n"
		if err := os.WriteFile(file, []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
		return
	}
	f, err := os.Open(file)
	if err != nil {
		t.Fatal(err)
	}
	defer f.Close()
	var want []string
	for s := bufio.NewScanner(f); s.Scan(); {
		if line := s.Text(); line != "" && !strings.HasPrefix(line, "#") {
			want = append(want, line)
		}
	}
	if len(want) != len(lines) {
		t.Fatalf("%d messages, the transcript has %d", len(lines), len(want))
	}
	for i := range want {
		if lines[i] != want[i] {
			t.Errorf("got  %s\nwant %s", lines[i], want[i])
		}
	}
}
