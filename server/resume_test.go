package server_test

import (
	"bufio"
	"bytes"
	"context"
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// The helper server process of TestKillAndResume reads its setting from these variables.
const (
	envHelper = "FEDWEAVE_TEST_HELPER_SERVER" // "1" in the helper process
	envFedDir = "FEDWEAVE_TEST_FEDERATION"    // the federation directory: ca/ and keys/master.key
	envAddr   = "FEDWEAVE_TEST_LISTEN"        // host:port to serve on
	envStore  = "FEDWEAVE_TEST_STORE"         // the server's store directory
)

// helperLine starts every line the helper process writes for its parent.
const helperLine = "fedweave-helper: "

// resumeRounds is the length of the task TestKillAndResume runs across two server processes.
const resumeRounds = 5

func resumeConfig(fed *servertest.Federation, storeDir, addr string) (server.Config, error) {
	kf, err := servertest.KeyFile(filepath.Join(fed.Dir, "keys"))
	if err != nil {
		return server.Config{}, err
	}
	return server.Config{Federation: fed.Name, Listen: addr, Dir: storeDir, KeyFile: kf, Task: testTask(resumeRounds, 3),
		Policy: server.PolicyConfig{Members: []string{"orga", "orgb", "orgc"}}}, nil
}

// paramsDigest is the SHA-256 of the parameters as little-endian float32.
func paramsDigest(p []float32) string {
	b := make([]byte, 4*len(p))
	for i, v := range p {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(v))
	}
	sum := sha256.Sum256(b)
	return hex.EncodeToString(sum[:])
}

// TestHelperServer is not a test: it is the server process of TestKillAndResume, which runs
// the test binary again with envHelper set. It serves the task from the store and reports on
// stdout: "resumed", "listening", one "round" line per round, then "done" once Run has
// returned; it keeps serving (so that every client hears that the task is complete) until its
// stdin closes.
func TestHelperServer(t *testing.T) {
	if os.Getenv(envHelper) != "1" {
		t.Skip("the server process of TestKillAndResume")
	}
	say := func(format string, args ...any) { fmt.Printf(helperLine+format+"\n", args...) }
	ca, err := pki.LoadCA(filepath.Join(os.Getenv(envFedDir), "ca"))
	if err != nil {
		t.Fatal(err)
	}
	fed := &servertest.Federation{Name: ca.Federation(), Dir: os.Getenv(envFedDir), CA: ca}
	id, err := fed.Identity("operator", pki.RoleServer, "aggregator")
	if err != nil {
		t.Fatal(err)
	}
	cfg, err := resumeConfig(fed, os.Getenv(envStore), os.Getenv(envAddr))
	if err != nil {
		t.Fatal(err)
	}
	var srv *server.Server
	srv, err = server.New(cfg, server.Options{
		Identity: id, CAPool: fed.Pool(),
		Logger: slog.New(slog.NewTextHandler(os.Stderr, nil)),
		OnRound: func(r server.RoundRecord) {
			_, params := srv.Params()
			say("round %d committed=%t participants=%s sha=%s", r.Round, r.Committed, strings.Join(r.Participants, ","), paramsDigest(params))
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	round, params := srv.Params()
	say("resumed %d sha=%s", round, paramsDigest(params))
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		t.Fatal(err)
	}
	go srv.Serve(lis)
	say("listening")
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	if err := srv.Run(ctx); err != nil {
		say("run failed: %v", err)
		t.Fatal(err)
	}
	say("done")
	io.Copy(io.Discard, os.Stdin)
}

// helper is a running server process.
type helper struct {
	t      *testing.T
	cmd    *exec.Cmd
	stdin  io.WriteCloser
	lines  chan string // the helper's report lines; closed at the end of its stdout
	stderr *bytes.Buffer
	seen   []string
}

func startHelper(t *testing.T, fedDir, addr, storeDir string) *helper {
	t.Helper()
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperServer$", "-test.timeout=2m")
	cmd.Env = append(os.Environ(), envHelper+"=1", envFedDir+"="+fedDir, envAddr+"="+addr, envStore+"="+storeDir)
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	h := &helper{t: t, cmd: cmd, stdin: stdin, lines: make(chan string, 64), stderr: new(bytes.Buffer)}
	cmd.Stderr = &lockedWriter{w: h.stderr}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	go func() {
		defer close(h.lines)
		sc := bufio.NewScanner(stdout)
		for sc.Scan() {
			if line, ok := strings.CutPrefix(sc.Text(), helperLine); ok {
				h.lines <- line
			}
		}
	}()
	t.Cleanup(func() {
		if cmd.ProcessState == nil {
			cmd.Process.Kill()
			cmd.Wait()
		}
		if t.Failed() {
			t.Logf("server process %d, stderr:\n%s", cmd.Process.Pid, h.stderr)
		}
	})
	return h
}

// await reads report lines until one starts with prefix, and returns it.
func (h *helper) await(prefix string, timeout time.Duration) string {
	h.t.Helper()
	timer := time.NewTimer(timeout)
	defer timer.Stop()
	for {
		select {
		case line, ok := <-h.lines:
			if !ok {
				h.t.Fatalf("the server process ended before reporting %q; it reported %q", prefix, h.seen)
			}
			h.seen = append(h.seen, line)
			if strings.HasPrefix(line, "run failed") {
				h.t.Fatalf("server process: %s", line)
			}
			if strings.HasPrefix(line, prefix) {
				return line
			}
		case <-timer.C:
			h.t.Fatalf("no %q from the server process within %v; it reported %q", prefix, timeout, h.seen)
		}
	}
}

// kill ends the process with SIGKILL and waits for it, and for the rest of its reports.
func (h *helper) kill() {
	h.t.Helper()
	if err := h.cmd.Process.Kill(); err != nil {
		h.t.Fatal(err)
	}
	h.cmd.Wait()
	for line := range h.lines {
		h.seen = append(h.seen, line)
	}
}

// stop closes the process's stdin, so that it closes the server and exits, and waits for it.
func (h *helper) stop() {
	h.t.Helper()
	h.stdin.Close()
	if err := h.cmd.Wait(); err != nil {
		h.t.Fatalf("server process: %v", err)
	}
	for line := range h.lines {
		h.seen = append(h.seen, line)
	}
}

type lockedWriter struct {
	mu sync.Mutex
	w  io.Writer
}

func (l *lockedWriter) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.w.Write(p)
}

// roundLine is a helper's report of one round.
type roundLine struct {
	round        uint64
	committed    bool
	participants []string
	sha          string
}

func parseRoundLine(t *testing.T, line string) roundLine {
	t.Helper()
	var r roundLine
	var parts string
	if _, err := fmt.Sscanf(line, "round %d committed=%t participants=%s sha=%s", &r.round, &r.committed, &parts, &r.sha); err != nil {
		t.Fatalf("report %q: %v", line, err)
	}
	r.participants = strings.Split(parts, ",")
	slices.Sort(r.participants)
	return r
}

// freeAddr returns a loopback address with a port that was free a moment ago.
func freeAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// readState opens the server's store the way a restarting server does and returns its
// last committed round, the digest of that checkpoint's parameters, and the round history.
func readState(t *testing.T, fed *servertest.Federation, id *pki.Identity, storeDir string) (uint64, string, []server.RoundRecord) {
	t.Helper()
	cfg, err := resumeConfig(fed, storeDir, "")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := server.New(cfg, server.Options{Identity: id, CAPool: fed.Pool()})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	round, params := srv.Params()
	hist, err := srv.History()
	if err != nil {
		t.Fatal(err)
	}
	return round, paramsDigest(params), hist
}

// TestKillAndResume kills the server process with SIGKILL in the middle of round 3 and starts
// a new one on the same store and address: it must resume from checkpoint 2 with rounds 1 and
// 2 exactly as committed, and finish the task with the same clients, which reconnect on their
// own.
func TestKillAndResume(t *testing.T) {
	dir := t.TempDir()
	fed, err := servertest.NewFederation(filepath.Join(dir, "federation"), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	storeDir, addr := filepath.Join(dir, "store"), freeAddr(t)
	readerID, err := fed.Identity("operator", pki.RoleServer, "inspector")
	if err != nil {
		t.Fatal(err)
	}

	first := startHelper(t, fed.Dir, addr, storeDir)
	if line := first.await("resumed", 30*time.Second); !strings.HasPrefix(line, "resumed 0 ") {
		t.Fatalf("a new store reports %q", line)
	}
	first.await("listening", 30*time.Second)

	// Each client holds its first start of round 3 until the server is dead, so that the
	// round cannot complete before the kill.
	killed := make(chan struct{})
	inRound3 := make(chan struct{}, 3)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	errs := make(chan error, 3)
	var wg sync.WaitGroup
	var want []string
	for i, d := range partition(3, 60) {
		id, err := fed.Identity("org"+string(rune('a'+i)), pki.RoleClient, "node")
		if err != nil {
			t.Fatal(err)
		}
		want = append(want, id.Principal.URI())
		c, err := client.New(client.Config{
			Server: addr, Task: "triage", Identity: id, CAPool: fed.Pool(), Source: client.DatasetSource(d), Seed: uint64(i),
			OnRound: func(e client.RoundEvent) {
				if e.Stage == "start" && e.Round == 3 {
					select {
					case inRound3 <- struct{}{}:
					default:
					}
					<-killed
				}
			},
		})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Run(ctx)
		}()
	}
	release := sync.OnceFunc(func() { close(killed) })
	defer release() // on early failure, let the clients go
	slices.Sort(want)

	before := map[uint64]roundLine{}
	for r := uint64(1); r <= 2; r++ {
		l := parseRoundLine(t, first.await("round ", 30*time.Second))
		if l.round != r || !l.committed || !slices.Equal(l.participants, want) {
			t.Fatalf("first server: round report %+v, want round %d committed by %q", l, r, want)
		}
		before[r] = l
	}
	select {
	case <-inRound3:
	case <-time.After(30 * time.Second):
		t.Fatal("round 3 did not start")
	}
	first.kill()
	if first.cmd.ProcessState.Success() {
		t.Fatal("the first server process exited on its own")
	}
	for _, line := range first.seen {
		if strings.HasPrefix(line, "round 3") || strings.HasPrefix(line, "done") {
			t.Fatalf("the first server got past round 2 before the kill: %q", first.seen)
		}
	}

	// What the killed server left on disk: checkpoint 2, and rounds 1 and 2 as it reported them.
	round, digest, mid := readState(t, fed, readerID, storeDir)
	if round != 2 || digest != before[2].sha {
		t.Fatalf("after the kill the store holds checkpoint %d (sha %.12s), want 2 (sha %.12s)", round, digest, before[2].sha)
	}
	if len(mid) != 2 {
		t.Fatalf("after the kill the store holds %d round records, want 2: %+v", len(mid), mid)
	}
	for i, rec := range mid {
		parts := slices.Sorted(slices.Values(rec.Participants))
		if rec.Round != uint64(i+1) || !rec.Committed || !slices.Equal(parts, want) {
			t.Errorf("after the kill, record %+v", rec)
		}
	}

	second := startHelper(t, fed.Dir, addr, storeDir)
	release()
	if line := second.await("resumed", 30*time.Second); line != "resumed 2 sha="+before[2].sha {
		t.Fatalf("the second server reports %q, want it to resume from checkpoint 2 (sha %s)", line, before[2].sha)
	}
	var last roundLine
	for r := uint64(3); r <= resumeRounds; r++ {
		last = parseRoundLine(t, second.await("round ", 30*time.Second))
		if last.round != r || !last.committed || !slices.Equal(last.participants, want) {
			t.Fatalf("second server: round report %+v, want round %d committed by %q", last, r, want)
		}
	}
	second.await("done", 30*time.Second)
	waitClients := make(chan struct{})
	go func() { wg.Wait(); close(waitClients) }()
	select {
	case <-waitClients:
	case <-time.After(30 * time.Second):
		t.Fatal("the clients did not finish")
	}
	close(errs)
	for err := range errs {
		if err != nil {
			t.Errorf("client: %v", err)
		}
	}
	second.stop()

	round, digest, hist := readState(t, fed, readerID, storeDir)
	if round != resumeRounds || digest != last.sha {
		t.Errorf("the store ends at checkpoint %d (sha %.12s), want %d (sha %.12s)", round, digest, resumeRounds, last.sha)
	}
	committed := 0
	for i, rec := range hist {
		if i > 0 && rec.Round <= hist[i-1].Round {
			t.Errorf("round %d recorded after round %d", rec.Round, hist[i-1].Round)
		}
		if rec.Committed {
			committed++
		}
	}
	if committed != resumeRounds || len(hist) != resumeRounds {
		t.Errorf("%d round records, %d committed; want %d committed", len(hist), committed, resumeRounds)
	}
	if len(hist) >= 2 && !reflect.DeepEqual(hist[:2], mid) {
		t.Errorf("rounds 1 and 2 changed after the restart:\nbefore %+v\nafter  %+v", mid, hist[:2])
	}
}
