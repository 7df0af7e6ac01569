package envelope

import (
	"bytes"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

func TestSealOpen(t *testing.T) {
	k, other := NewKey(), NewKey()
	msg, ad := []byte("a record"), []byte("r/key")
	sealed := Seal(k, msg, ad)
	if len(sealed) != len(msg)+Overhead || bytes.Contains(sealed, msg) {
		t.Fatalf("sealed: %d bytes", len(sealed))
	}
	if got, err := Open(k, sealed, ad); err != nil || !bytes.Equal(got, msg) {
		t.Fatalf("Open = %q, %v", got, err)
	}
	flipped := bytes.Clone(sealed)
	flipped[len(flipped)-1] ^= 1
	for _, tc := range []struct {
		name   string
		key    Key
		sealed []byte
		ad     []byte
		want   error
	}{
		{"other key", other, sealed, ad, ErrDecrypt},
		{"other associated data", k, sealed, []byte("r/other"), ErrDecrypt},
		{"changed byte", k, flipped, ad, ErrDecrypt},
		{"truncated", k, sealed[:Overhead-1], ad, ErrMalformed},
		{"unknown version", k, append([]byte{9}, sealed[1:]...), ad, ErrMalformed},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if _, err := Open(tc.key, tc.sealed, tc.ad); !errors.Is(err, tc.want) {
				t.Errorf("Open: %v, want %v", err, tc.want)
			}
		})
	}
}

func TestKeyIsOpaque(t *testing.T) {
	k := NewKey()
	raw := hex.EncodeToString(k.k[:])
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%q", "%d"} {
		out := fmt.Sprintf(verb, k)
		if strings.Contains(strings.ToLower(out), raw[:16]) || out != "envelope.Key(redacted)" {
			t.Errorf("%s prints %q", verb, out)
		}
	}
	if s := fmt.Sprintf("%v", struct{ K Key }{k}); strings.Contains(s, raw[:16]) {
		t.Errorf("inside a struct: %q", s)
	}
	if !k.Equal(k) || k.Equal(NewKey()) || k.Equal(Key{}) || !(Key{}).IsZero() || k.IsZero() {
		t.Error("Equal or IsZero is wrong")
	}
}

func newRing(t *testing.T) (*Keyring, string, *FileRootKey) {
	t.Helper()
	dir := t.TempDir()
	rootFile := filepath.Join(dir, "root.key")
	if err := NewRootKeyFile(rootFile); err != nil {
		t.Fatal(err)
	}
	root, err := LoadRootKeyFile(rootFile)
	if err != nil {
		t.Fatal(err)
	}
	path := filepath.Join(dir, "keyring")
	r, err := CreateKeyring(path, root)
	if err != nil {
		t.Fatal(err)
	}
	return r, path, root
}

func TestRootKeyFile(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "root.key")
	if err := NewRootKeyFile(path); err != nil {
		t.Fatal(err)
	}
	if err := NewRootKeyFile(path); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second NewRootKeyFile: %v", err)
	}
	b, _ := os.ReadFile(path)
	if !strings.HasPrefix(string(b), "fedweave-root-key-v1:") {
		t.Errorf("file starts %.24q", b)
	}
	os.Chmod(path, 0o644)
	if _, err := LoadRootKeyFile(path); err == nil || !strings.Contains(err.Error(), "chmod 600") {
		t.Errorf("world-readable root key: %v", err)
	}
	os.Chmod(path, 0o600)
	os.WriteFile(path, []byte("fedweave-root-key-v1:zz"), 0o600)
	if _, err := LoadRootKeyFile(path); !errors.Is(err, ErrMalformed) || strings.Contains(err.Error(), "zz") {
		t.Errorf("malformed root key: %v", err)
	}
}

func TestKeyringShred(t *testing.T) {
	r, path, root := newRing(t)
	type dk struct {
		key     Key
		wrapped []byte
		name    []byte
	}
	var keys []dk
	for i := range 200 {
		name := fmt.Appendf(nil, "subject/%d", i)
		k, w, err := r.NewDataKey(name)
		if err != nil {
			t.Fatal(err)
		}
		if len(w) != WrappedSize {
			t.Fatalf("wrapped key of %d bytes", len(w))
		}
		keys = append(keys, dk{k, w, name})
	}
	if _, err := r.Unwrap(keys[0].wrapped, keys[1].name); !errors.Is(err, ErrDecrypt) {
		t.Errorf("unwrap under another name: %v", err)
	}
	before, err := os.ReadFile(path)
	if err != nil {
		t.Fatal(err)
	}

	// Shred every other key, one call for some and one call each for the rest.
	var batch []WrappedKey
	for i := 0; i < len(keys); i += 2 {
		if i < 100 {
			batch = append(batch, WrappedKey{keys[i].wrapped, keys[i].name})
		} else if err := r.Shred(WrappedKey{keys[i].wrapped, keys[i].name}); err != nil {
			t.Fatal(err)
		}
	}
	if err := r.Shred(batch...); err != nil {
		t.Fatal(err)
	}
	if err := r.Shred(batch...); err != nil {
		t.Errorf("shredding again: %v", err)
	}
	if n := r.Size(); n > 100*64 || n < 100 {
		t.Errorf("%d nodes after 100 shreds", n)
	}
	// Forged or foreign keys shred nothing.
	_, foreign, _ := r.NewDataKey([]byte("x"))
	if err := r.Shred(WrappedKey{foreign, []byte("y")}); !errors.Is(err, ErrDecrypt) {
		t.Errorf("shred under a wrong name: %v", err)
	}
	if _, err := r.Unwrap(foreign, []byte("x")); err != nil {
		t.Errorf("a refused shred changed the keyring: %v", err)
	}

	check := func(what string, r *Keyring) {
		for i, k := range keys {
			got, err := r.Unwrap(k.wrapped, k.name)
			if i%2 == 0 {
				if !errors.Is(err, ErrShredded) {
					t.Errorf("%s: shredded key %d: %v", what, i, err)
				}
				continue
			}
			if err != nil || !got.Equal(k.key) {
				t.Errorf("%s: surviving key %d: %v", what, i, err)
			}
		}
	}
	check("in memory", r)
	again, err := OpenKeyring(path, root)
	if err != nil {
		t.Fatal(err)
	}
	check("reopened", again)

	// What remains: the keyring file from before the shred still derives the shredded keys.
	// That is why it must not be kept; moving to a new root key defeats such a copy.
	stale := filepath.Join(t.TempDir(), "stale")
	os.WriteFile(stale, before, 0o600)
	old, err := OpenKeyring(stale, root)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := old.Unwrap(keys[0].wrapped, keys[0].name); err != nil {
		t.Errorf("the keyring from before the shred: %v", err)
	}
	newRootFile := filepath.Join(t.TempDir(), "root2.key")
	NewRootKeyFile(newRootFile)
	root2, _ := LoadRootKeyFile(newRootFile)
	if err := again.SetRoot(root2); err != nil {
		t.Fatal(err)
	}
	if _, err := OpenKeyring(path, root); !errors.Is(err, ErrDecrypt) {
		t.Errorf("the old root key opens the re-rooted keyring: %v", err)
	}
	third, err := OpenKeyring(path, root2)
	if err != nil {
		t.Fatal(err)
	}
	check("re-rooted", third)
}

// TestShredRandomized punctures random slots of a small tree space and checks every slot.
func TestPunctureExhaustive(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	e := newEpoch(1)
	shredded := map[uint64]bool{}
	slots := make([]uint64, 300)
	for i := range slots {
		// Slots that share long prefixes, to exercise deep siblings.
		slots[i] = rng.Uint64()&0xffff_0000_0000_0000 | uint64(i%7)<<40 | uint64(rng.IntN(4))
	}
	keks := map[uint64]Key{}
	for _, s := range slots {
		k, ok := e.kek(s)
		if !ok {
			t.Fatal("a fresh tree lacks a slot")
		}
		keks[s] = k
	}
	for i, s := range slots {
		if i%3 == 0 {
			e.puncture(s)
			shredded[s] = true
		}
		if i%50 == 0 {
			for _, s := range slots {
				k, ok := e.kek(s)
				if ok == shredded[s] || (ok && !k.Equal(keks[s])) {
					t.Fatalf("after %d punctures, slot %x: live %v, shredded %v", i, s, ok, shredded[s])
				}
			}
		}
	}
	for i := 1; i < len(e.nodes); i++ {
		if e.nodes[i-1].last() >= e.nodes[i].first() {
			t.Fatal("nodes overlap or are out of order")
		}
	}
}

func TestKeyringRotation(t *testing.T) {
	r, path, root := newRing(t)
	k1, w1, _ := r.NewDataKey([]byte("a"))
	_, w2, _ := r.NewDataKey([]byte("b"))
	if err := r.BeginRotation(); err != nil {
		t.Fatal(err)
	}
	if !r.Rotating() || r.Epoch() != 2 {
		t.Fatalf("rotating %v, epoch %d", r.Rotating(), r.Epoch())
	}
	nw1, err := r.Rewrap(w1, []byte("a"))
	if err != nil {
		t.Fatal(err)
	}
	// A crash here: the reopened keyring still has both epochs.
	mid, err := OpenKeyring(path, root)
	if err != nil {
		t.Fatal(err)
	}
	if !mid.Rotating() {
		t.Error("the rotation in progress was not saved")
	}
	for _, w := range [][]byte{w1, nw1} {
		if k, err := mid.Unwrap(w, []byte("a")); err != nil || !k.Equal(k1) {
			t.Errorf("during the rotation: %v", err)
		}
	}
	if again, _ := mid.Rewrap(nw1, []byte("a")); !bytes.Equal(again, nw1) {
		t.Error("re-wrapping a current key changed it")
	}
	if err := mid.FinishRotation(); err != nil {
		t.Fatal(err)
	}
	if k, err := mid.Unwrap(nw1, []byte("a")); err != nil || !k.Equal(k1) {
		t.Errorf("re-wrapped key after the rotation: %v", err)
	}
	for _, w := range [][]byte{w1, w2} {
		if _, err := mid.Unwrap(w, nil); !errors.Is(err, ErrShredded) {
			t.Errorf("a key of the retired epoch: %v", err)
		}
	}
	if mid.Size() != 1 || mid.Rotating() {
		t.Errorf("after the rotation: %d nodes, rotating %v", mid.Size(), mid.Rotating())
	}
}

func TestOpenKeyringRefuses(t *testing.T) {
	_, path, _ := newRing(t)
	if _, err := CreateKeyring(path, &FileRootKey{k: NewKey()}); !errors.Is(err, fs.ErrExist) {
		t.Errorf("CreateKeyring over a keyring: %v", err)
	}
	if _, err := OpenKeyring(path, &FileRootKey{k: NewKey()}); !errors.Is(err, ErrDecrypt) {
		t.Errorf("another root key: %v", err)
	}
	if _, err := OpenKeyring(filepath.Join(t.TempDir(), "none"), &FileRootKey{k: NewKey()}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("no keyring: %v", err)
	}
}

// FuzzDecodeState: the keyring decoder never panics, and what it accepts encodes back the same.
func FuzzDecodeState(f *testing.F) {
	st := ringState{epochs: []epochKey{newEpoch(1)}}
	st.current().puncture(12345)
	r := &Keyring{}
	id := &identityRoot{}
	b, _ := r.encode(&st, id)
	f.Add(b[len(keyringHeader):])
	f.Add([]byte{1})
	f.Fuzz(func(t *testing.T, b []byte) {
		var st ringState
		if err := st.decode(b); err != nil {
			return
		}
		again, _ := r.encode(&st, id)
		if !bytes.Equal(again[len(keyringHeader):], b) {
			t.Fatal("accepted state encodes differently")
		}
	})
}

// identityRoot wraps nothing, for the fuzz test.
type identityRoot struct{}

func (identityRoot) Wrap(p, _ []byte) ([]byte, error)   { return bytes.Clone(p), nil }
func (identityRoot) Unwrap(w, _ []byte) ([]byte, error) { return bytes.Clone(w), nil }

func TestKeyringIsOpaque(t *testing.T) {
	r, path, _ := newRing(t)
	for _, verb := range []string{"%v", "%+v", "%#v", "%s"} {
		if out := fmt.Sprintf(verb, r); out != "envelope.Keyring("+path+")" {
			t.Errorf("%s prints %q", verb, out)
		}
	}
}
