package client

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"testing"

	"github.com/fedweave/fedweave/crypto/envelope"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/store"
)

// patients returns synthetic records of ten patients, three or four records each, with ids
// "patient-P#N" and a text that names the patient ("CANARY-P-N ...").
func patients() *dataset.Dataset {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 36, Seed: 4})
	for i := range d.Records {
		r := &d.Records[i]
		r.ID = fmt.Sprintf("patient-%d#%d", i%10, i)
		r.Text = fmt.Sprintf("CANARY-%d-%d %s", i%10, i, r.Text)
	}
	return d
}

// bySubject: the subject of "patient-P#N" is "patient-P".
func bySubject(r *dataset.Record) string { s, _, _ := strings.Cut(r.ID, "#"); return s }

func openTestStore(t *testing.T, dir, keys string) *Store {
	t.Helper()
	s, err := OpenStore(StoreOptions{Dir: dir, KeyDir: keys, Subject: bySubject, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return s
}

func recordsOf(d *dataset.Dataset, subject string) []dataset.Record {
	var out []dataset.Record
	for _, r := range d.Records {
		if bySubject(&r) == subject {
			out = append(out, r)
		}
	}
	slices.SortFunc(out, func(a, b dataset.Record) int { return strings.Compare(a.ID, b.ID) })
	return out
}

func copyDir(t *testing.T, from, to string) {
	t.Helper()
	err := filepath.WalkDir(from, func(path string, e fs.DirEntry, err error) error {
		if err != nil {
			return err
		}
		rel, _ := filepath.Rel(from, path)
		dst := filepath.Join(to, rel)
		if e.IsDir() {
			return os.MkdirAll(dst, 0o700)
		}
		src, err := os.Open(path)
		if err != nil {
			return err
		}
		defer src.Close()
		out, err := os.OpenFile(dst, os.O_CREATE|os.O_WRONLY|os.O_EXCL, 0o600)
		if err != nil {
			return err
		}
		defer out.Close()
		_, err = io.Copy(out, src)
		return err
	})
	if err != nil {
		t.Fatal(err)
	}
}

// leaks reports the files under dir that hold s, in plain, hex or base64 form.
func leaks(t *testing.T, dir, s string) []string {
	t.Helper()
	forms := [][]byte{[]byte(s), []byte(hex.EncodeToString([]byte(s))), []byte(base64.StdEncoding.EncodeToString([]byte(s))[:len(s)*4/3-2])}
	var out []string
	filepath.WalkDir(dir, func(path string, e fs.DirEntry, err error) error {
		if err != nil || e.IsDir() {
			return err
		}
		b, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		for _, f := range forms {
			if bytes.Contains(b, f) {
				out = append(out, path)
			}
		}
		return nil
	})
	return out
}

// TestStaleCopyAfterErasure: a copy of the store directory taken before "patient-3" was
// erased, opened afterwards with the store's master key, root key and keyring as they are
// then, yields every other patient's records and none of patient-3's.
func TestStaleCopyAfterErasure(t *testing.T) {
	ctx := context.Background()
	d := patients()
	base := t.TempDir()
	dir, keys, stale := filepath.Join(base, "store"), filepath.Join(base, "keys"), filepath.Join(base, "backup")

	s := openTestStore(t, dir, keys)
	stats, err := s.Import(ctx, d)
	if err != nil || stats.Records != len(d.Records) {
		t.Fatalf("import: %+v, %v", stats, err)
	}
	got, err := s.Dataset(ctx)
	if err != nil || len(got.Records) != len(d.Records) || !reflect.DeepEqual(got.Schema, d.Schema) {
		t.Fatalf("dataset: %d records, %v", len(got.Records), err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if l := leaks(t, dir, "CANARY-3-"); len(l) > 0 {
		t.Fatalf("plaintext in %v", l)
	}
	copyDir(t, dir, stale) // the backup, taken before the erasure

	s = openTestStore(t, dir, keys)
	victim := recordsOf(d, "patient-3")
	n, err := s.EraseSubject("patient-3")
	if err != nil || n != len(victim) {
		t.Fatalf("erase: %d records, %v; want %d", n, err, len(victim))
	}
	if _, err := s.Records("patient-3"); !errors.Is(err, ErrNoRecords) {
		t.Errorf("the live store after the erasure: %v", err)
	}
	// The partner's source still has the records: a new import skips them.
	stats, err = s.Import(ctx, d)
	if err != nil || stats.Erased != len(victim) || stats.Records != len(d.Records)-len(victim) {
		t.Errorf("import after the erasure: %+v, %v", stats, err)
	}
	got, _ = s.Dataset(ctx)
	if len(got.Records) != len(d.Records)-len(victim) {
		t.Errorf("the live store holds %d records", len(got.Records))
	}
	s.Close()

	// The stale copy, with the keys as they are now.
	old := openTestStore(t, stale, keys)
	defer old.Close()
	if _, err := old.Records("patient-3"); !errors.Is(err, envelope.ErrShredded) {
		t.Errorf("patient-3 from the stale copy: %v, want ErrShredded", err)
	}
	for _, p := range []string{"patient-0", "patient-4", "patient-9"} {
		recs, err := old.Records(p)
		if err != nil || !reflect.DeepEqual(recs, recordsOf(d, p)) {
			t.Errorf("%s from the stale copy: %d records, %v", p, len(recs), err)
		}
	}
	all, err := old.Dataset(ctx)
	if err != nil || len(all.Records) != len(d.Records)-len(victim) {
		t.Errorf("the stale copy's dataset: %d records, %v", len(all.Records), err)
	}
	for _, r := range all.Records {
		if bySubject(&r) == "patient-3" {
			t.Errorf("record %s of the erased subject came back", r.ID)
		}
	}

	// The raw copy, read with the master key: its keys are pseudonyms, its values ciphertext.
	old.Close()
	raw, err := store.Open(store.Options{Dir: stale, KeyFile: filepath.Join(keys, MasterKeyFile), ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer raw.Close()
	err = raw.Scan(nil, func(k, v []byte) error {
		for _, r := range victim {
			if bytes.Contains(k, []byte("patient")) || bytes.Contains(v, []byte(r.Text[:10])) || bytes.Contains(v, []byte(r.ID)) {
				t.Errorf("key %q holds patient-3's data in the clear", k)
			}
		}
		return nil
	})
	if err != nil {
		t.Fatal(err)
	}
}

// TestRotateRetiresStaleCopies: after a rotation, a copy from before it opens no record with
// the current keys, and the live store all of them.
func TestRotateRetiresStaleCopies(t *testing.T) {
	ctx := context.Background()
	d := patients()
	base := t.TempDir()
	dir, keys, stale := filepath.Join(base, "store"), filepath.Join(base, "keys"), filepath.Join(base, "backup")
	s := openTestStore(t, dir, keys)
	if _, err := s.Import(ctx, d); err != nil {
		t.Fatal(err)
	}
	s.Close()
	copyDir(t, dir, stale)
	s = openTestStore(t, dir, keys)
	if err := s.Rotate(); err != nil {
		t.Fatal(err)
	}
	got, err := s.Dataset(ctx)
	if err != nil || len(got.Records) != len(d.Records) {
		t.Fatalf("after the rotation: %d records, %v", len(got.Records), err)
	}
	s.Close()
	old := openTestStore(t, stale, keys)
	defer old.Close()
	if _, err := old.Dataset(ctx); !errors.Is(err, envelope.ErrShredded) {
		t.Errorf("the stale copy's schema after a rotation: %v", err)
	}
	if _, err := old.Records("patient-1"); !errors.Is(err, envelope.ErrShredded) {
		t.Errorf("the stale copy after a rotation: %v", err)
	}
}

// TestEraseResumes: an erasure interrupted after it was recorded, or after the key was
// shredded, is finished by the next OpenStore, and the other subjects keep their records.
func TestEraseResumes(t *testing.T) {
	ctx := context.Background()
	d := patients()
	for _, stage := range []string{"recorded", "shredded"} {
		t.Run(stage, func(t *testing.T) {
			base := t.TempDir()
			dir, keys := filepath.Join(base, "store"), filepath.Join(base, "keys")
			s := openTestStore(t, dir, keys)
			if _, err := s.Import(ctx, d); err != nil {
				t.Fatal(err)
			}
			// What EraseSubject does before a crash.
			hs := s.subjectPseudonym("patient-5")
			s.st.Put(subjectKey(pfxErased, hs), []byte{0})
			s.st.Put(subjectKey(pfxErasing, hs), []byte{0})
			if stage == "shredded" {
				w, _ := s.st.Get(subjectKey(pfxSubject, hs))
				if err := s.ring.Shred(envelope.WrappedKey{Wrapped: w, Name: subjectKey(pfxSubject, hs)}); err != nil {
					t.Fatal(err)
				}
			}
			s.Close()

			s = openTestStore(t, dir, keys)
			defer s.Close()
			if _, err := s.Records("patient-5"); !errors.Is(err, ErrNoRecords) {
				t.Errorf("patient-5 after the resumed erasure: %v", err)
			}
			if s.has(subjectKey(pfxErasing, hs)) || s.has(subjectKey(pfxSubject, hs)) {
				t.Error("the erasure's marker or the subject's key is left")
			}
			got, err := s.Dataset(ctx)
			if err != nil || len(got.Records) != len(d.Records)-len(recordsOf(d, "patient-5")) {
				t.Errorf("%d records left, %v", len(got.Records), err)
			}
		})
	}
}

func TestOpenStoreRefuses(t *testing.T) {
	base := t.TempDir()
	dir, keys := filepath.Join(base, "store"), filepath.Join(base, "keys")
	if _, err := OpenStore(StoreOptions{Dir: dir, KeyDir: filepath.Join(dir, "keys")}); err == nil {
		t.Error("keys inside the store directory were accepted")
	}
	s := openTestStore(t, dir, keys)
	if _, err := s.Import(context.Background(), patients()); err != nil {
		t.Fatal(err)
	}
	other := dataset.Synthetic(dataset.SyntheticConfig{N: 20, Seed: 1})
	other.Schema.Classes = append(other.Schema.Classes[:len(other.Schema.Classes):len(other.Schema.Classes)], "extra")
	if _, err := s.Import(context.Background(), other); err == nil || !strings.Contains(err.Error(), "schema") {
		t.Errorf("another schema: %v", err)
	}
	if _, err := OpenStore(StoreOptions{Dir: dir, KeyDir: keys}); !errors.Is(err, store.ErrLocked) {
		t.Errorf("a second open: %v", err)
	}
	s.Close()
	os.Rename(filepath.Join(keys, KeyringFile), filepath.Join(keys, "keyring.away"))
	if _, err := OpenStore(StoreOptions{Dir: dir, KeyDir: keys}); !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("a store without its keyring: %v", err)
	}
}

func TestRecordEncoding(t *testing.T) {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 30, Seed: 2})
	for _, r := range d.Records {
		got, err := decodeRecord(encodeRecord(&r))
		if err != nil || !reflect.DeepEqual(got, r) {
			t.Fatalf("record %s: %v", r.ID, err)
		}
	}
}

// FuzzDecodeRecord: decodeRecord never panics, and what it accepts encodes back the same.
func FuzzDecodeRecord(f *testing.F) {
	for _, r := range dataset.Synthetic(dataset.SyntheticConfig{N: 4, Seed: 2}).Records {
		f.Add(encodeRecord(&r))
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := decodeRecord(b)
		if err != nil {
			return
		}
		if again := encodeRecord(&r); !bytes.Equal(again, b) {
			t.Fatalf("re-encodes differently")
		}
	})
}
