package client

// The client's encrypted record store.
//
// A Store keeps a partner's records on disk in two layers of encryption: badger's own (an
// internal/store directory under a master key), and under it envelope encryption
// (crypto/envelope) with one data key per data subject, so that erasing a subject is
// crypto-shredding: its data key is destroyed, and its records are unreadable in the store and
// in every copy of it, a backup taken before the erasure included (see EraseSubject).
//
// The data subject of a record is StoreOptions.Subject(record), by default the record's id:
// fedweave's records (dataset.Record, the JSONL manifest) have no subject field, so each record
// is its own subject unless the partner says how to group them (say, the part of the id before
// a "#", for several records of one patient).
//
// Nothing personal is written in the clear, not even in badger's keys: records are keyed by
// pseudonyms, HMAC-SHA256 of the subject and of the record id under the keyring's pseudonym
// key, and the values are sealed (AES-256-GCM under the subject's data key, with the badger key
// as associated data). In the store directory:
//
//	s/<subject pseudonym>                          the subject's data key, wrapped by the keyring
//	r/<subject pseudonym><record pseudonym>        a record, sealed under its subject's data key
//	x/<subject pseudonym>                          the subject was erased: never import it again
//	e/<subject pseudonym>                          an erasure in progress (resumed by OpenStore)
//	meta/key, meta/schema                          the dataset's schema, sealed under a key of its own
//
// The keys live in StoreOptions.KeyDir, apart from the store directory: master.key (badger's
// master key), root.key (the envelope root key, unless StoreOptions.Root is a KMS) and keyring
// (the envelope keyring). Back up the store directory as you like; keep KeyDir out of the
// backups that must not outlive an erasure (see crypto/envelope, "What shredding does not reach").

import (
	"bytes"
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io/fs"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/fedweave/fedweave/crypto/envelope"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/store"
)

// StoreOptions configure [OpenStore].
type StoreOptions struct {
	// Dir is the record store's directory, created if missing.
	Dir string
	// KeyDir holds the store's keys (master.key, root.key, keyring), created with them if
	// missing. It must not be Dir or inside it.
	KeyDir string
	// Root, if set, is the envelope root key (a KMS, say) instead of KeyDir/root.key.
	Root envelope.RootKey
	// Subject returns the data subject of a record; nil: the record's id.
	Subject func(r *dataset.Record) string
	// NoSync skips the fsync at each write of the store (tests and demos only). The keyring
	// file is always synced.
	NoSync bool
}

// Key files in StoreOptions.KeyDir.
const (
	MasterKeyFile = "master.key"
	RootKeyFile   = "root.key"
	KeyringFile   = "keyring"
)

// Store is a partner's encrypted record store. Its methods are safe for concurrent use; a
// store directory is open in one process at a time (a second OpenStore fails with
// store.ErrLocked, which "fedweave client erase" reports as "stop the client first").
type Store struct {
	st      *store.Store
	ring    *envelope.Keyring
	subject func(r *dataset.Record) string

	mu   sync.Mutex                // serializes imports, erasures and rotations
	gen  atomic.Uint64             // bumped by every change of the records
	dmu  sync.Mutex                // guards deks
	deks map[[32]byte]envelope.Key // subject data keys unwrapped so far, by pseudonym
}

// Errors of the store.
var (
	// ErrNoRecords: the store holds no records of that subject (never imported, or erased).
	ErrNoRecords = errors.New("client: no records of this subject in the store")
)

// Store key prefixes.
const (
	pfxSubject = "s/"
	pfxRecord  = "r/"
	pfxErased  = "x/"
	pfxErasing = "e/"
	keyMetaDEK = "meta/key"
	keySchema  = "meta/schema"
	pfxSecret  = "secret/"
)

func subjectKey(prefix string, hs [32]byte) []byte { return append([]byte(prefix), hs[:]...) }

// OpenStore opens the record store in opt.Dir with the keys in opt.KeyDir, creating the store
// and its keys if neither exists yet. It finishes what a crash interrupted: an erasure (so
// that it holds) and a key rotation.
//
// Errors: store.ErrLocked when another process has the store open; an error that wraps
// fs.ErrNotExist when a key of an existing store is missing (a store cannot be read without
// its master key, and its records not without its keyring and root key).
func OpenStore(opt StoreOptions) (*Store, error) {
	if opt.Dir == "" || opt.KeyDir == "" {
		return nil, errors.New("client: store: Dir and KeyDir are required")
	}
	if inside(opt.KeyDir, opt.Dir) {
		return nil, errors.New("client: store: KeyDir must be apart from Dir, so that copies of the store do not carry its keys")
	}
	if err := os.MkdirAll(opt.KeyDir, 0o700); err != nil {
		return nil, fmt.Errorf("client: store: %w", err)
	}
	master := filepath.Join(opt.KeyDir, MasterKeyFile)
	ringFile := filepath.Join(opt.KeyDir, KeyringFile)
	fresh := isEmptyDir(opt.Dir)
	if _, err := os.Stat(master); errors.Is(err, fs.ErrNotExist) {
		if !fresh {
			return nil, fmt.Errorf("client: store: %s holds a store but its master key %s is missing: %w", opt.Dir, master, fs.ErrNotExist)
		}
		if err := store.NewKeyFile(master); err != nil {
			return nil, fmt.Errorf("client: store: %w", err)
		}
	}
	root := opt.Root
	if root == nil {
		rootFile := filepath.Join(opt.KeyDir, RootKeyFile)
		if _, err := os.Stat(rootFile); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(ringFile); err == nil {
				return nil, fmt.Errorf("client: store: the keyring %s exists but its root key %s is missing: %w", ringFile, rootFile, fs.ErrNotExist)
			}
			if err := envelope.NewRootKeyFile(rootFile); err != nil {
				return nil, fmt.Errorf("client: store: %w", err)
			}
		}
		fr, err := envelope.LoadRootKeyFile(rootFile)
		if err != nil {
			return nil, fmt.Errorf("client: store: %w", err)
		}
		root = fr
	}
	st, err := store.Open(store.Options{Dir: opt.Dir, KeyFile: master, NoSync: opt.NoSync})
	if err != nil {
		return nil, fmt.Errorf("client: %w", err)
	}
	ring, err := envelope.OpenKeyring(ringFile, root)
	if errors.Is(err, fs.ErrNotExist) {
		if hasKeys(st) {
			st.Close()
			return nil, fmt.Errorf("client: store: %s holds sealed records but the keyring %s is missing: %w", opt.Dir, ringFile, fs.ErrNotExist)
		}
		ring, err = envelope.CreateKeyring(ringFile, root)
	}
	if err != nil {
		st.Close()
		return nil, fmt.Errorf("client: store: %w", err)
	}
	s := &Store{st: st, ring: ring, subject: opt.Subject, deks: map[[32]byte]envelope.Key{}}
	if s.subject == nil {
		s.subject = func(r *dataset.Record) string { return r.ID }
	}
	if err := s.resume(); err != nil {
		st.Close()
		return nil, err
	}
	return s, nil
}

// inside reports whether path is dir or below it.
func inside(path, dir string) bool {
	p, err1 := filepath.Abs(path)
	d, err2 := filepath.Abs(dir)
	if err1 != nil || err2 != nil {
		return false
	}
	rel, err := filepath.Rel(d, p)
	return err == nil && (rel == "." || filepath.IsLocal(rel))
}

func isEmptyDir(dir string) bool {
	entries, err := os.ReadDir(dir)
	return err != nil || len(entries) == 0
}

func hasKeys(st *store.Store) bool {
	found := errors.New("found")
	err := st.Scan([]byte(pfxSubject), func(_, _ []byte) error { return found })
	if err == nil {
		_, err = st.Get([]byte(keyMetaDEK))
		return err == nil
	}
	return true
}

// resume finishes an interrupted rotation and interrupted erasures.
func (s *Store) resume() error {
	if s.ring.Rotating() {
		if err := s.rotate(); err != nil {
			return err
		}
	}
	var pending [][32]byte
	err := s.st.Scan([]byte(pfxErasing), func(k, _ []byte) error {
		var hs [32]byte
		if len(k) == len(pfxErasing)+32 {
			copy(hs[:], k[len(pfxErasing):])
			pending = append(pending, hs)
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("client: store: %w", err)
	}
	for _, hs := range pending {
		if _, err := s.finishErasure(hs); err != nil {
			return err
		}
	}
	return nil
}

// Close closes the store. What was written stays.
func (s *Store) Close() error {
	ledgers.Delete(s)
	return s.st.Close()
}

// Generation changes whenever the store's records change (an import or an erasure), so that a
// running client knows to reload them before its next round.
func (s *Store) Generation() uint64 { return s.gen.Load() }

func (s *Store) subjectPseudonym(subject string) [32]byte {
	return s.ring.Pseudonym("subject", []byte(subject))
}

func (s *Store) recordKey(hs [32]byte, id string) []byte {
	hr := s.ring.Pseudonym("record", []byte(id))
	return append(subjectKey(pfxRecord, hs), hr[:]...)
}

// dek returns the data key of a subject from the wrapped key stored in w.
func (s *Store) dek(hs [32]byte, w []byte) (envelope.Key, error) {
	s.dmu.Lock()
	k, ok := s.deks[hs]
	s.dmu.Unlock()
	if ok {
		return k, nil
	}
	k, err := s.ring.Unwrap(w, subjectKey(pfxSubject, hs))
	if err != nil {
		return k, err
	}
	s.dmu.Lock()
	s.deks[hs] = k
	s.dmu.Unlock()
	return k, nil
}

// ImportStats says what an import did.
type ImportStats struct {
	Records int // records written (new or replaced)
	Erased  int // records skipped because their subject was erased
}

// Import writes d's records into the store, replacing those of the same id, and skipping the
// records of erased subjects (so that an erasure holds even while the partner's source still
// has the records). The first import fixes the schema; later ones must have the same schema
// (classes, tabular fields, image size), or fail without writing anything.
func (s *Store) Import(ctx context.Context, d *dataset.Dataset) (ImportStats, error) {
	var stats ImportStats
	if err := d.Validate(); err != nil {
		return stats, fmt.Errorf("client: import: %w", err)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.gen.Add(1)
	if err := s.putSchema(d.Schema); err != nil {
		return stats, err
	}
	type subj struct {
		dek     envelope.Key
		wrapped []byte // to write with the first record, for a new subject
		erased  bool
	}
	subjects := map[[32]byte]*subj{}
	const batchBytes = 1 << 20
	var batch []struct{ k, v []byte }
	size := 0
	flush := func() error {
		if len(batch) == 0 {
			return nil
		}
		err := s.st.Update(func(tx *store.Tx) error {
			for _, kv := range batch {
				if err := tx.Put(kv.k, kv.v); err != nil {
					return err
				}
			}
			return nil
		})
		batch, size = batch[:0], 0
		if err != nil {
			return fmt.Errorf("client: import: %w", err)
		}
		return nil
	}
	for i := range d.Records {
		if i%256 == 0 && ctx.Err() != nil {
			return stats, ctx.Err()
		}
		r := &d.Records[i]
		hs := s.subjectPseudonym(s.subject(r))
		sj := subjects[hs]
		if sj == nil {
			sj = &subj{}
			subjects[hs] = sj
			if s.has(subjectKey(pfxErased, hs)) || s.has(subjectKey(pfxErasing, hs)) {
				sj.erased = true
			} else if w, err := s.st.Get(subjectKey(pfxSubject, hs)); err == nil {
				if sj.dek, err = s.dek(hs, w); err != nil {
					return stats, fmt.Errorf("client: import: a subject's data key: %w", err)
				}
			} else if errors.Is(err, store.ErrNotFound) {
				if sj.dek, sj.wrapped, err = s.ring.NewDataKey(subjectKey(pfxSubject, hs)); err != nil {
					return stats, fmt.Errorf("client: import: %w", err)
				}
			} else {
				return stats, fmt.Errorf("client: import: %w", err)
			}
		}
		if sj.erased {
			stats.Erased++
			continue
		}
		if sj.wrapped != nil {
			batch = append(batch, struct{ k, v []byte }{subjectKey(pfxSubject, hs), sj.wrapped})
			sj.wrapped = nil
		}
		k := s.recordKey(hs, r.ID)
		v := envelope.Seal(sj.dek, encodeRecord(r), k)
		batch = append(batch, struct{ k, v []byte }{k, v})
		size += len(k) + len(v) + 100
		stats.Records++
		if size >= batchBytes {
			if err := flush(); err != nil {
				return stats, err
			}
		}
	}
	if err := flush(); err != nil {
		return stats, err
	}
	for hs, sj := range subjects {
		if !sj.erased {
			s.dmu.Lock()
			s.deks[hs] = sj.dek
			s.dmu.Unlock()
		}
	}
	return stats, nil
}

func (s *Store) has(key []byte) bool {
	_, err := s.st.Get(key)
	return err == nil
}

// putSchema stores the schema on the first import and checks it on later ones.
func (s *Store) putSchema(sc dataset.Schema) error {
	b, err := json.Marshal(sc)
	if err != nil {
		return err
	}
	old, err := s.schema()
	switch {
	case err == nil:
		ob, _ := json.Marshal(old)
		if !bytes.Equal(ob, b) {
			return fmt.Errorf("client: import: the records' schema (classes %v, %d tabular fields, images %dx%dx%d) differs from the store's (classes %v, %d tabular fields, images %dx%dx%d); use a new store, or fix the classes (dataset.ManifestOptions.Classes)",
				sc.Classes, len(sc.TabularFields), sc.ImageC, sc.ImageH, sc.ImageW, old.Classes, len(old.TabularFields), old.ImageC, old.ImageH, old.ImageW)
		}
		return nil
	case !errors.Is(err, store.ErrNotFound):
		return err
	}
	dek, err := s.metaKey()
	if err != nil {
		return err
	}
	return s.st.Put([]byte(keySchema), envelope.Seal(dek, b, []byte(keySchema)))
}

// metaKey returns the store's own data key (for its schema and its secrets), creating it on
// first use.
func (s *Store) metaKey() (envelope.Key, error) {
	w, err := s.st.Get([]byte(keyMetaDEK))
	if errors.Is(err, store.ErrNotFound) {
		dek, w, err := s.ring.NewDataKey([]byte(keyMetaDEK))
		if err != nil {
			return dek, err
		}
		return dek, s.st.Put([]byte(keyMetaDEK), w)
	}
	if err != nil {
		return envelope.Key{}, err
	}
	return s.ring.Unwrap(w, []byte(keyMetaDEK))
}

// PutSecret stores b, sealed under the store's own data key, as the secret called name: for
// the client's own secrets, such as its share of an mhe key set, which must survive a restart.
// A secret is not a data subject's: erasing subjects leaves it, rotating the keyring keeps it.
func (s *Store) PutSecret(name string, b []byte) error {
	dek, err := s.metaKey()
	if err != nil {
		return fmt.Errorf("client: store: %w", err)
	}
	k := []byte(pfxSecret + name)
	return s.st.Put(k, envelope.Seal(dek, b, k))
}

// Secret returns the secret called name; an error matching store.ErrNotFound when there is none.
func (s *Store) Secret(name string) ([]byte, error) {
	k := []byte(pfxSecret + name)
	sealed, err := s.st.Get(k)
	if err != nil {
		return nil, err
	}
	dek, err := s.metaKey()
	if err != nil {
		return nil, fmt.Errorf("client: store: %w", err)
	}
	b, err := envelope.Open(dek, sealed, k)
	if err != nil {
		return nil, fmt.Errorf("client: store: secret %q: %w", name, err)
	}
	return b, nil
}

// schema reads the stored schema; store.ErrNotFound when there is none.
func (s *Store) schema() (dataset.Schema, error) {
	var sc dataset.Schema
	w, err := s.st.Get([]byte(keyMetaDEK))
	if err != nil {
		return sc, err
	}
	sealed, err := s.st.Get([]byte(keySchema))
	if err != nil {
		return sc, err
	}
	dek, err := s.ring.Unwrap(w, []byte(keyMetaDEK))
	if err != nil {
		return sc, fmt.Errorf("client: store: the schema's key: %w", err)
	}
	b, err := envelope.Open(dek, sealed, []byte(keySchema))
	if err != nil {
		return sc, fmt.Errorf("client: store: the schema: %w", err)
	}
	return sc, json.Unmarshal(b, &sc)
}

// Dataset returns every record in the store, sorted by id, with the store's schema: what the
// client trains on. Records whose subject's key was shredded (only a stale copy of a store has
// such records) are left out.
func (s *Store) Dataset(ctx context.Context) (*dataset.Dataset, error) {
	sc, err := s.schema()
	if errors.Is(err, store.ErrNotFound) {
		return &dataset.Dataset{}, nil
	}
	if err != nil {
		return nil, err
	}
	d := &dataset.Dataset{Schema: sc}
	err = s.scanRecords([]byte(pfxRecord), func(r dataset.Record, err error) error {
		if errors.Is(err, envelope.ErrShredded) {
			return nil
		}
		if err != nil {
			return err
		}
		d.Records = append(d.Records, r)
		if len(d.Records)%1024 == 0 {
			return ctx.Err()
		}
		return nil
	})
	if err != nil {
		return nil, err
	}
	slices.SortFunc(d.Records, func(a, b dataset.Record) int { return strings.Compare(a.ID, b.ID) })
	return d, nil
}

// Records returns the records of one data subject, sorted by id (a subject's right of access).
// It fails with [ErrNoRecords] when the store has none, and with an error that wraps
// envelope.ErrShredded when the subject's key was shredded.
func (s *Store) Records(subject string) ([]dataset.Record, error) {
	hs := s.subjectPseudonym(subject)
	var out []dataset.Record
	err := s.scanRecords(subjectKey(pfxRecord, hs), func(r dataset.Record, err error) error {
		if err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	if err != nil {
		return nil, err
	}
	if len(out) == 0 {
		return nil, ErrNoRecords
	}
	slices.SortFunc(out, func(a, b dataset.Record) int { return strings.Compare(a.ID, b.ID) })
	return out, nil
}

// scanRecords opens every record under prefix and passes it, or the error that opening it met,
// to fn.
func (s *Store) scanRecords(prefix []byte, fn func(dataset.Record, error) error) error {
	return s.st.Scan(prefix, func(k, v []byte) error {
		if len(k) != len(pfxRecord)+64 {
			return fmt.Errorf("client: store: malformed record key")
		}
		var hs [32]byte
		copy(hs[:], k[len(pfxRecord):])
		w, err := s.st.Get(subjectKey(pfxSubject, hs))
		if errors.Is(err, store.ErrNotFound) {
			return fn(dataset.Record{}, fmt.Errorf("client: store: a record without its subject's key: %w", envelope.ErrShredded))
		}
		if err != nil {
			return err
		}
		dek, err := s.dek(hs, w)
		if err != nil {
			return fn(dataset.Record{}, fmt.Errorf("client: store: a subject's key: %w", err))
		}
		b, err := envelope.Open(dek, v, k)
		if err != nil {
			return fn(dataset.Record{}, fmt.Errorf("client: store: a record: %w", err))
		}
		r, err := decodeRecord(b)
		clear(b)
		if err != nil {
			return fn(dataset.Record{}, err)
		}
		return fn(r, nil)
	})
}

// EraseSubject erases a data subject: it shreds the subject's data key, so that its records
// are unreadable here and in every copy of the store (a backup taken before included, even
// with the store's master key and root key), deletes them, and keeps a tombstone (the
// subject's pseudonym, not its id) so that later imports skip the subject's records. It
// returns how many records were deleted. Erasing a subject the store never held is not an
// error: it leaves the tombstone.
//
// The erasure is resumable: it is recorded before anything is destroyed, and OpenStore
// finishes it after a crash. It shreds only the subject's own key, in one atomic replacement
// of the keyring file, so a crash never loses another subject's records.
func (s *Store) EraseSubject(subject string) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	defer s.gen.Add(1)
	hs := s.subjectPseudonym(subject)
	now := binary.BigEndian.AppendUint64(nil, uint64(time.Now().Unix()))
	err := s.st.Update(func(tx *store.Tx) error {
		if err := tx.Put(subjectKey(pfxErased, hs), now); err != nil {
			return err
		}
		return tx.Put(subjectKey(pfxErasing, hs), now)
	})
	if err != nil {
		return 0, fmt.Errorf("client: erase: %w", err)
	}
	return s.finishErasure(hs)
}

// finishErasure shreds the subject's key and deletes its records and the erasure's marker.
func (s *Store) finishErasure(hs [32]byte) (int, error) {
	name := subjectKey(pfxSubject, hs)
	w, err := s.st.Get(name)
	switch {
	case err == nil:
		if err := s.ring.Shred(envelope.WrappedKey{Wrapped: w, Name: name}); err != nil {
			return 0, fmt.Errorf("client: erase: %w", err)
		}
	case !errors.Is(err, store.ErrNotFound):
		return 0, fmt.Errorf("client: erase: %w", err)
	}
	s.dmu.Lock()
	delete(s.deks, hs)
	s.dmu.Unlock()
	var keys [][]byte
	err = s.st.Scan(subjectKey(pfxRecord, hs), func(k, _ []byte) error {
		keys = append(keys, bytes.Clone(k))
		return nil
	})
	if err != nil {
		return 0, fmt.Errorf("client: erase: %w", err)
	}
	erased := len(keys)
	keys = append(keys, name, subjectKey(pfxErasing, hs))
	for len(keys) > 0 {
		n := min(len(keys), 4096)
		err := s.st.Update(func(tx *store.Tx) error {
			for _, k := range keys[:n] {
				if err := tx.Delete(k); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return 0, fmt.Errorf("client: erase: %w", err)
		}
		keys = keys[n:]
	}
	s.st.RunGC() // best effort: the bytes are unreadable already
	return erased, nil
}

// Rotate moves every data key of the store to a new keyring epoch and retires the old one:
// afterwards no copy of the store taken before the rotation can be read with the current
// keys, whatever it holds. It is resumable: OpenStore finishes a rotation a crash interrupted.
func (s *Store) Rotate() error {
	s.mu.Lock()
	defer s.mu.Unlock()
	if err := s.ring.BeginRotation(); err != nil {
		return fmt.Errorf("client: rotate: %w", err)
	}
	return s.rotate()
}

// rotate re-wraps every wrapped key under the current epoch and finishes the rotation.
func (s *Store) rotate() error {
	type kv struct{ k, v []byte }
	var rewrapped []kv
	rewrap := func(k, v []byte) error {
		nw, err := s.ring.Rewrap(v, k)
		if errors.Is(err, envelope.ErrShredded) {
			return nil // a subject whose erasure is being finished
		}
		if err != nil {
			return err
		}
		rewrapped = append(rewrapped, kv{bytes.Clone(k), nw})
		return nil
	}
	if err := s.st.Scan([]byte(pfxSubject), rewrap); err != nil {
		return fmt.Errorf("client: rotate: %w", err)
	}
	if w, err := s.st.Get([]byte(keyMetaDEK)); err == nil {
		if err := rewrap([]byte(keyMetaDEK), w); err != nil {
			return fmt.Errorf("client: rotate: %w", err)
		}
	}
	for len(rewrapped) > 0 {
		n := min(len(rewrapped), 4096)
		err := s.st.Update(func(tx *store.Tx) error {
			for _, e := range rewrapped[:n] {
				if err := tx.Put(e.k, e.v); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return fmt.Errorf("client: rotate: %w", err)
		}
		rewrapped = rewrapped[n:]
	}
	if err := s.ring.FinishRotation(); err != nil {
		return fmt.Errorf("client: rotate: %w", err)
	}
	return nil
}

// Record encoding inside a sealed value: version, id, label, text, image, tabular.
const recordVersion = 1

func encodeRecord(r *dataset.Record) []byte {
	b := []byte{recordVersion}
	b = binary.AppendUvarint(b, uint64(len(r.ID)))
	b = append(b, r.ID...)
	b = binary.AppendVarint(b, int64(r.Label))
	b = binary.AppendUvarint(b, uint64(len(r.Text)))
	b = append(b, r.Text...)
	floats := func(v []float32) {
		b = binary.AppendUvarint(b, uint64(len(v)))
		for _, x := range v {
			b = binary.LittleEndian.AppendUint32(b, math.Float32bits(x))
		}
	}
	if img := r.Image; img != nil {
		b = append(b, 1)
		b = binary.AppendUvarint(b, uint64(img.C))
		b = binary.AppendUvarint(b, uint64(img.H))
		b = binary.AppendUvarint(b, uint64(img.W))
		floats(img.Pix)
	} else {
		b = append(b, 0)
	}
	if r.Tabular != nil {
		b = append(b, 1)
		floats(r.Tabular)
	} else {
		b = append(b, 0)
	}
	return b
}

var errBadRecord = errors.New("client: store: malformed record")

func decodeRecord(b []byte) (dataset.Record, error) {
	var r dataset.Record
	if len(b) == 0 || b[0] != recordVersion {
		return r, errBadRecord
	}
	b = b[1:]
	uv := func() (uint64, bool) {
		v, n := binary.Uvarint(b)
		if n <= 0 {
			return 0, false
		}
		b = b[n:]
		return v, true
	}
	str := func() (string, bool) {
		n, ok := uv()
		if !ok || n > uint64(len(b)) {
			return "", false
		}
		s := string(b[:n])
		b = b[n:]
		return s, true
	}
	floats := func() ([]float32, bool) {
		n, ok := uv()
		if !ok || n > uint64(len(b))/4 {
			return nil, false
		}
		v := make([]float32, n)
		for i := range v {
			v[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[4*i:]))
		}
		b = b[4*n:]
		return v, true
	}
	flag := func() (bool, bool) {
		if len(b) == 0 || b[0] > 1 {
			return false, false
		}
		f := b[0] == 1
		b = b[1:]
		return f, true
	}
	var ok bool
	if r.ID, ok = str(); !ok {
		return r, errBadRecord
	}
	label, n := binary.Varint(b)
	if n <= 0 || label < -1 || label > math.MaxInt32 {
		return r, errBadRecord
	}
	b, r.Label = b[n:], int(label)
	if r.Text, ok = str(); !ok {
		return r, errBadRecord
	}
	hasImg, ok := flag()
	if !ok {
		return r, errBadRecord
	}
	if hasImg {
		c, ok1 := uv()
		h, ok2 := uv()
		w, ok3 := uv()
		pix, ok4 := floats()
		if !ok1 || !ok2 || !ok3 || !ok4 || c > 1<<20 || h > 1<<20 || w > 1<<20 || c*h*w != uint64(len(pix)) {
			return r, errBadRecord
		}
		r.Image = &dataset.ImageData{C: int(c), H: int(h), W: int(w), Pix: pix}
	}
	hasTab, ok := flag()
	if !ok {
		return r, errBadRecord
	}
	if hasTab {
		if r.Tabular, ok = floats(); !ok {
			return r, errBadRecord
		}
	}
	if len(b) != 0 {
		return r, errBadRecord
	}
	return r, nil
}
