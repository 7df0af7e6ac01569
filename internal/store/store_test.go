package store

import (
	"bufio"
	"bytes"
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// newKeyFile creates a key file in a fresh temporary directory and returns its path.
func newKeyFile(t testing.TB) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), "master.key")
	if err := NewKeyFile(path); err != nil {
		t.Fatal(err)
	}
	return path
}

// open opens opt and closes the store at the end of the test.
func open(t testing.TB, opt Options) *Store {
	t.Helper()
	s, err := Open(opt)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s
}

// newStore opens a new store in a temporary directory.
func newStore(t testing.TB) (*Store, Options) {
	t.Helper()
	opt := Options{Dir: filepath.Join(t.TempDir(), "db"), KeyFile: newKeyFile(t)}
	return open(t, opt), opt
}

func mustGet(t *testing.T, s *Store, key string, want string) {
	t.Helper()
	got, err := s.Get([]byte(key))
	if err != nil {
		t.Fatalf("Get(%q): %v", key, err)
	}
	if string(got) != want {
		t.Fatalf("Get(%q) = %q, want %q", key, got, want)
	}
}

func mustNotFound(t *testing.T, s *Store, key string) {
	t.Helper()
	if got, err := s.Get([]byte(key)); !errors.Is(err, ErrNotFound) {
		t.Fatalf("Get(%q) = %q, %v; want ErrNotFound", key, got, err)
	}
}

func scanAll(t *testing.T, s *Store, prefix string) []string {
	t.Helper()
	var kvs []string
	err := s.Scan([]byte(prefix), func(k, v []byte) error {
		kvs = append(kvs, string(k)+"="+string(v))
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	return kvs
}

func TestPutGetDeleteScan(t *testing.T) {
	s, _ := newStore(t)
	for _, kv := range [][2]string{
		{"round/10", "c"}, {"round/02", "b"}, {"ckpt/1", "x"}, {"round/01", "a"}, {"roundz", "z"}, {"empty", ""},
	} {
		if err := s.Put([]byte(kv[0]), []byte(kv[1])); err != nil {
			t.Fatal(err)
		}
	}
	mustGet(t, s, "round/02", "b")
	mustGet(t, s, "empty", "")
	mustNotFound(t, s, "round/03")
	mustNotFound(t, s, "")

	// Get returns a copy.
	v, _ := s.Get([]byte("ckpt/1"))
	v[0] = 'y'
	mustGet(t, s, "ckpt/1", "x")

	// Put does not keep the caller's slices.
	k, val := []byte("reuse"), []byte("one")
	if err := s.Put(k, val); err != nil {
		t.Fatal(err)
	}
	copy(k, "XXXXX")
	copy(val, "two")
	mustGet(t, s, "reuse", "one")

	// Overwrite.
	if err := s.Put([]byte("round/10"), []byte("C")); err != nil {
		t.Fatal(err)
	}

	t.Run("scan prefix in key order", func(t *testing.T) {
		got := strings.Join(scanAll(t, s, "round/"), " ")
		if want := "round/01=a round/02=b round/10=C"; got != want {
			t.Fatalf("Scan = %s, want %s", got, want)
		}
	})
	t.Run("scan all", func(t *testing.T) {
		if got := len(scanAll(t, s, "")); got != 7 {
			t.Fatalf("Scan(\"\") visited %d keys, want 7", got)
		}
	})
	t.Run("scan stops on error", func(t *testing.T) {
		stop := errors.New("stop")
		n := 0
		err := s.Scan([]byte("round/"), func(k, v []byte) error { n++; return stop })
		if err != stop || n != 1 {
			t.Fatalf("Scan = %v after %d calls, want stop after 1", err, n)
		}
	})
	t.Run("delete", func(t *testing.T) {
		if err := s.Delete([]byte("round/02")); err != nil {
			t.Fatal(err)
		}
		mustNotFound(t, s, "round/02")
		if err := s.Delete([]byte("never-written")); err != nil {
			t.Fatalf("Delete of a missing key: %v", err)
		}
		if got := strings.Join(scanAll(t, s, "round/"), " "); got != "round/01=a round/10=C" {
			t.Fatalf("Scan after delete = %s", got)
		}
	})
}

func TestBadKeysAndValues(t *testing.T) {
	s, _ := newStore(t)
	for _, tc := range []struct {
		name    string
		key     []byte
		val     []byte
		tooBig  bool
		wantErr bool
	}{
		{name: "empty key", key: nil, wantErr: true},
		{name: "reserved prefix", key: []byte("!badger!x"), wantErr: true},
		{name: "key at limit", key: bytes.Repeat([]byte("k"), MaxKeySize)},
		{name: "key over limit", key: bytes.Repeat([]byte("k"), MaxKeySize+1), wantErr: true, tooBig: true},
		{name: "value at limit", key: []byte("big"), val: make([]byte, MaxValueSize)},
		{name: "value over limit", key: []byte("big2"), val: make([]byte, MaxValueSize+1), wantErr: true, tooBig: true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			err := s.Put(tc.key, tc.val)
			if (err != nil) != tc.wantErr || errors.Is(err, ErrTooBig) != tc.tooBig {
				t.Fatalf("Put: %v; want error %v, ErrTooBig %v", err, tc.wantErr, tc.tooBig)
			}
			if err != nil {
				return
			}
			got, err := s.Get(tc.key)
			if err != nil || len(got) != len(tc.val) {
				t.Fatalf("Get: %d bytes, %v; want %d bytes", len(got), err, len(tc.val))
			}
		})
	}
}

func TestReopen(t *testing.T) {
	s, opt := newStore(t)
	big := bytes.Repeat([]byte{7}, 2<<20) // goes to the value log
	if err := s.Put([]byte("small"), []byte("kept")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put([]byte("big"), big); err != nil {
		t.Fatal(err)
	}
	if err := s.Put([]byte("gone"), []byte("x")); err != nil {
		t.Fatal(err)
	}
	if err := s.Delete([]byte("gone")); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = open(t, opt)
	mustGet(t, s, "small", "kept")
	mustNotFound(t, s, "gone")
	if got, err := s.Get([]byte("big")); err != nil || !bytes.Equal(got, big) {
		t.Fatalf("big value after reopen: %d bytes, %v", len(got), err)
	}
	if err := s.RunGC(); err != nil {
		t.Fatalf("RunGC: %v", err)
	}
}

func TestUpdate(t *testing.T) {
	s, _ := newStore(t)
	if err := s.Put([]byte("balance/a"), []byte("10")); err != nil {
		t.Fatal(err)
	}

	t.Run("error commits nothing", func(t *testing.T) {
		boom := errors.New("boom")
		err := s.Update(func(tx *Tx) error {
			if err := tx.Put([]byte("balance/a"), []byte("0")); err != nil {
				return err
			}
			if err := tx.Put([]byte("balance/b"), []byte("10")); err != nil {
				return err
			}
			if err := tx.Delete([]byte("balance/a")); err != nil {
				return err
			}
			return boom
		})
		if err != boom {
			t.Fatalf("Update = %v, want fn's error unchanged", err)
		}
		mustGet(t, s, "balance/a", "10")
		mustNotFound(t, s, "balance/b")
	})

	t.Run("commit all", func(t *testing.T) {
		err := s.Update(func(tx *Tx) error {
			v, err := tx.Get([]byte("balance/a"))
			if err != nil {
				return err
			}
			if err := tx.Put([]byte("balance/b"), v); err != nil {
				return err
			}
			if err := tx.Put([]byte("balance/a"), []byte("0")); err != nil {
				return err
			}
			// A Tx reads its own writes.
			if v, err := tx.Get([]byte("balance/a")); err != nil || string(v) != "0" {
				return fmt.Errorf("Tx.Get after Tx.Put = %q, %v", v, err)
			}
			return tx.PutTTL([]byte("lease"), []byte("x"), time.Hour)
		})
		if err != nil {
			t.Fatal(err)
		}
		mustGet(t, s, "balance/a", "0")
		mustGet(t, s, "balance/b", "10")
		mustGet(t, s, "lease", "x")
	})

	t.Run("too big commits nothing", func(t *testing.T) {
		val := make([]byte, valueThreshold-1) // under the threshold: counts in full
		err := s.Update(func(tx *Tx) error {
			for i := range 4 {
				if err := tx.Put(fmt.Appendf(nil, "big/%d", i), val); err != nil {
					return err
				}
			}
			return nil
		})
		if !errors.Is(err, ErrTooBig) {
			t.Fatalf("Update of 4 MiB of small values = %v, want ErrTooBig", err)
		}
		mustNotFound(t, s, "big/0")
	})

	t.Run("many large values fit", func(t *testing.T) {
		val := make([]byte, valueThreshold) // in the value log: counts a few bytes
		err := s.Update(func(tx *Tx) error {
			for i := range 8 {
				if err := tx.Put(fmt.Appendf(nil, "large/%d", i), val); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
	})

	t.Run("conflict", func(t *testing.T) {
		err := s.Update(func(tx *Tx) error {
			if _, err := tx.Get([]byte("balance/a")); err != nil {
				return err
			}
			// Another writer changes what this transaction read.
			if err := s.Put([]byte("balance/a"), []byte("5")); err != nil {
				return err
			}
			return tx.Put([]byte("balance/c"), []byte("1"))
		})
		if !errors.Is(err, ErrConflict) {
			t.Fatalf("Update = %v, want ErrConflict", err)
		}
		mustNotFound(t, s, "balance/c")
	})

	t.Run("tx after update", func(t *testing.T) {
		var kept *Tx
		if err := s.Update(func(tx *Tx) error { kept = tx; return nil }); err != nil {
			t.Fatal(err)
		}
		if err := kept.Put([]byte("late"), []byte("x")); err == nil {
			t.Fatal("Put on a finished Tx succeeded")
		}
		mustNotFound(t, s, "late")
	})
}

func TestTTL(t *testing.T) {
	s, _ := newStore(t)
	if err := s.PutTTL([]byte("k"), []byte("v"), 0); err == nil {
		t.Fatal("PutTTL with ttl 0 succeeded")
	}
	start := time.Now()
	if err := s.PutTTL([]byte("short"), []byte("v"), time.Second); err != nil {
		t.Fatal(err)
	}
	if err := s.Put([]byte("long"), []byte("v")); err != nil {
		t.Fatal(err)
	}
	mustGet(t, s, "short", "v")
	deadline := start.Add(5 * time.Second)
	for {
		_, err := s.Get([]byte("short"))
		if errors.Is(err, ErrNotFound) {
			break
		}
		if err != nil {
			t.Fatal(err)
		}
		if time.Now().After(deadline) {
			t.Fatal("value with a 1 s TTL still there after 5 s")
		}
		time.Sleep(50 * time.Millisecond)
	}
	if d := time.Since(start); d < time.Second {
		t.Fatalf("value with a 1 s TTL expired after %v", d)
	}
	mustGet(t, s, "long", "v")
	if got := scanAll(t, s, ""); len(got) != 1 {
		t.Fatalf("Scan after expiry = %q, want only long", got)
	}
}

func TestOpenErrors(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	keyA := newKeyFile(t)
	keyB := newKeyFile(t)
	s := open(t, Options{Dir: dir, KeyFile: keyA})
	if err := s.Put([]byte("k"), []byte("v")); err != nil {
		t.Fatal(err)
	}

	t.Run("locked", func(t *testing.T) {
		_, err := Open(Options{Dir: dir, KeyFile: keyA})
		if !errors.Is(err, ErrLocked) {
			t.Fatalf("second Open = %v, want ErrLocked", err)
		}
		t.Log(err)
	})
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}

	t.Run("wrong key", func(t *testing.T) {
		_, err := Open(Options{Dir: dir, KeyFile: keyB})
		if !errors.Is(err, ErrWrongKey) {
			t.Fatalf("Open with another key = %v, want ErrWrongKey", err)
		}
		if !strings.Contains(err.Error(), dir) {
			t.Errorf("error %q does not name the directory", err)
		}
		for _, path := range []string{keyA, keyB} {
			key, kerr := readKeyFile(path)
			if kerr != nil {
				t.Fatal(kerr)
			}
			if strings.Contains(strings.ToLower(err.Error()), hex.EncodeToString(key)) {
				t.Errorf("error %q shows a key", err)
			}
		}
		t.Log(err)
		// The failed Open released the directory: the right key still opens it.
		s := open(t, Options{Dir: dir, KeyFile: keyA})
		mustGet(t, s, "k", "v")
		s.Close()
	})

	t.Run("read only", func(t *testing.T) {
		r1 := open(t, Options{Dir: dir, KeyFile: keyA, ReadOnly: true})
		r2 := open(t, Options{Dir: dir, KeyFile: keyA, ReadOnly: true})
		mustGet(t, r1, "k", "v")
		mustGet(t, r2, "k", "v")
		if err := r1.Put([]byte("k"), []byte("w")); err == nil {
			t.Fatal("Put on a read-only store succeeded")
		}
		r1.Close()
		r2.Close()
	})

	t.Run("missing key file", func(t *testing.T) {
		_, err := Open(Options{Dir: dir, KeyFile: filepath.Join(t.TempDir(), "nope.key")})
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "NewKeyFile") {
			t.Fatalf("Open without key file = %v, want ErrNotExist with a hint", err)
		}
		t.Log(err)
	})

	t.Run("key file mode 0644", func(t *testing.T) {
		path := newKeyFile(t)
		if err := os.Chmod(path, 0o644); err != nil {
			t.Fatal(err)
		}
		_, err := Open(Options{Dir: t.TempDir(), KeyFile: path})
		if err == nil || !strings.Contains(err.Error(), "chmod 600") {
			t.Fatalf("Open with a 0644 key file = %v, want a refusal with a chmod 600 hint", err)
		}
		t.Log(err)
	})

	t.Run("malformed key file", func(t *testing.T) {
		for name, content := range map[string]string{
			"short":   "abcd\n",
			"not hex": strings.Repeat("zz", keySize) + "\n",
			"long":    strings.Repeat("ab", keySize+1),
			"empty":   "",
		} {
			path := filepath.Join(t.TempDir(), "bad.key")
			if err := os.WriteFile(path, []byte(content), 0o600); err != nil {
				t.Fatal(err)
			}
			_, err := Open(Options{Dir: t.TempDir(), KeyFile: path})
			if err == nil {
				t.Fatalf("%s: Open succeeded", name)
			}
			if content != "" && strings.Contains(err.Error(), strings.TrimSpace(content)) {
				t.Fatalf("%s: error %q shows the file's contents", name, err)
			}
		}
	})

	t.Run("empty options", func(t *testing.T) {
		if _, err := Open(Options{KeyFile: keyA}); err == nil {
			t.Fatal("Open without Dir succeeded")
		}
		if _, err := Open(Options{Dir: t.TempDir()}); err == nil {
			t.Fatal("Open without KeyFile succeeded")
		}
	})
}

func TestNewKeyFile(t *testing.T) {
	path := newKeyFile(t)
	fi, err := os.Stat(path)
	if err != nil {
		t.Fatal(err)
	}
	if perm := fi.Mode().Perm(); perm != 0o600 {
		t.Errorf("key file mode %04o, want 0600", perm)
	}
	before, _ := os.ReadFile(path)
	if len(before) != 2*keySize+1 {
		t.Errorf("key file holds %d bytes, want %d", len(before), 2*keySize+1)
	}

	err = NewKeyFile(path)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("NewKeyFile over an existing file = %v, want ErrExist", err)
	}
	after, _ := os.ReadFile(path)
	if !bytes.Equal(before, after) {
		t.Fatal("NewKeyFile changed an existing key file")
	}

	other := newKeyFile(t)
	b, _ := os.ReadFile(other)
	if bytes.Equal(before, b) {
		t.Fatal("two key files hold the same key")
	}
}

// TestNoPlaintext writes canaries as keys and values, small (in the write-ahead log, then the
// LSM tree) and large (in the value log), and checks that no file under the directory holds
// them, nor the master key, while the store is open and after Close.
func TestNoPlaintext(t *testing.T) {
	s, opt := newStore(t)
	canary := []byte("fedweave-canary-" + rand.Text())
	large := bytes.Repeat(canary, (2<<20)/len(canary))
	if err := s.Put(canary, []byte("small value")); err != nil {
		t.Fatal(err)
	}
	if err := s.Put([]byte("small"), canary); err != nil {
		t.Fatal(err)
	}
	if err := s.Put([]byte("large"), large); err != nil {
		t.Fatal(err)
	}
	key, err := readKeyFile(opt.KeyFile)
	if err != nil {
		t.Fatal(err)
	}
	secrets := map[string][]byte{
		"canary": canary, "master key": key, "hex master key": []byte(hex.EncodeToString(key)),
	}

	t.Run("open", func(t *testing.T) { checkNoPlaintext(t, opt.Dir, secrets) })
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	t.Run("closed", func(t *testing.T) { checkNoPlaintext(t, opt.Dir, secrets) })

	// And the canaries are there, encrypted.
	s = open(t, opt)
	mustGet(t, s, "small", string(canary))
	mustGet(t, s, string(canary), "small value")
}

func checkNoPlaintext(t *testing.T, dir string, secrets map[string][]byte) {
	files := 0
	err := filepath.WalkDir(dir, func(path string, d fs.DirEntry, err error) error {
		if err != nil || d.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			return err
		}
		files++
		for name, secret := range secrets {
			if bytes.Contains(b, secret) {
				t.Errorf("%s holds the %s in plaintext", path, name)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
	if files < 3 {
		t.Fatalf("found only %d files under %s", files, dir)
	}
}

const helperEnv = "FEDWEAVE_STORE_HELPER_DIR"

// TestHelperProcess is not a test: TestKillAfterCommit runs it in a child process, which commits
// writes and then kills itself with SIGKILL, and TestLockedByOtherProcess runs it to hold a
// store open.
func TestHelperProcess(t *testing.T) {
	dir := os.Getenv(helperEnv)
	if dir == "" {
		t.Skip("helper process for TestKillAfterCommit")
	}
	s, err := Open(Options{Dir: dir, KeyFile: os.Getenv(helperEnv + "_KEY")})
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	if os.Getenv(helperEnv+"_HOLD") != "" {
		// Hold the store open until the parent closes stdin.
		fmt.Println("ready")
		io.Copy(io.Discard, os.Stdin)
		s.Close()
		os.Exit(0)
	}
	err = s.Update(func(tx *Tx) error {
		if err := tx.Put([]byte("a"), []byte("committed")); err != nil {
			return err
		}
		return tx.Put([]byte("b"), bytes.Repeat([]byte("B"), 2<<20))
	})
	if err == nil {
		err = s.Put([]byte("c"), []byte("last"))
	}
	if err != nil {
		fmt.Fprintln(os.Stderr, err)
		os.Exit(2)
	}
	p, _ := os.FindProcess(os.Getpid())
	p.Kill() // SIGKILL on Unix: no Close, no deferred functions, no flush
	select {}
}

func TestKillAfterCommit(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	key := newKeyFile(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, helperEnv+"_KEY="+key)
	out, err := cmd.CombinedOutput()
	var exit *exec.ExitError
	if !errors.As(err, &exit) || exit.ExitCode() != -1 {
		t.Fatalf("helper process: %v, want killed by a signal\n%s", err, out)
	}

	s := open(t, Options{Dir: dir, KeyFile: key})
	mustGet(t, s, "a", "committed")
	mustGet(t, s, "c", "last")
	if b, err := s.Get([]byte("b")); err != nil || len(b) != 2<<20 {
		t.Fatalf("large value after kill: %d bytes, %v", len(b), err)
	}
}

func BenchmarkPut1MiB(b *testing.B) {
	s, _ := newStore(b)
	val := make([]byte, 1<<20)
	rand.Read(val)
	b.SetBytes(int64(len(val)))
	var key [8]byte
	for i := 0; b.Loop(); i++ {
		key[0] = byte(i % 16)
		if err := s.Put(key[:], val); err != nil {
			b.Fatal(err)
		}
	}
}

func TestLockedByOtherProcess(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "db")
	key := newKeyFile(t)
	cmd := exec.Command(os.Args[0], "-test.run=^TestHelperProcess$")
	cmd.Env = append(os.Environ(), helperEnv+"="+dir, helperEnv+"_KEY="+key, helperEnv+"_HOLD=1")
	cmd.Stderr = os.Stderr
	stdin, err := cmd.StdinPipe()
	if err != nil {
		t.Fatal(err)
	}
	stdout, err := cmd.StdoutPipe()
	if err != nil {
		t.Fatal(err)
	}
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	defer cmd.Wait()
	defer stdin.Close()
	line, err := bufio.NewReader(stdout).ReadString('\n')
	if err != nil || line != "ready\n" {
		t.Fatalf("helper process said %q, %v", line, err)
	}

	_, err = Open(Options{Dir: dir, KeyFile: key})
	if !errors.Is(err, ErrLocked) {
		t.Fatalf("Open of a store held by another process = %v, want ErrLocked", err)
	}

	stdin.Close()
	if err := cmd.Wait(); err != nil {
		t.Fatalf("helper process: %v", err)
	}
	open(t, Options{Dir: dir, KeyFile: key}) // released
}
