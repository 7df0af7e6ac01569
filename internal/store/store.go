// Package store is an encrypted key-value store for the state that fedweave servers and clients
// keep on disk: checkpoints, round history, key material and audit records. It is the only
// package of fedweave that imports badger (github.com/dgraph-io/badger/v4); everything above it
// sees the small API here.
//
// Start with [NewKeyFile], once, to create a master key file, then [Open] a directory with it.
// [Store.Get], [Store.Put], [Store.Delete] and [Store.Scan] work on single keys and prefixes;
// [Store.Update] groups reads and writes into one atomic transaction.
//
// What it guarantees:
//
//   - Encryption at rest is always on. Badger encrypts its tables, value logs and write-ahead
//     logs with AES-256 under data keys that it rotates every 7 days and that are themselves
//     encrypted with the master key. The master key is read from a key file that only its owner
//     may read (mode 0600); it is never taken from a flag value or an environment variable, and
//     no error of this package prints it. A store cannot be opened without its key: [Open] with
//     another key fails with [ErrWrongKey].
//   - Badger requires an index cache when encryption is on; Open always sets one (16 MiB).
//   - A write that returned nil is committed: unless [Options.NoSync] is set, it was fsynced
//     before the call returned, so it survives a crash of the process (kill -9) or of the
//     machine. With NoSync it survives a crash of the process but not a power loss.
//   - Each Put, Delete and [Store.Update] is atomic: all of an Update's writes commit or none.
//   - A directory is used by one process at a time: a second Open of it fails with [ErrLocked]
//     (except that several ReadOnly opens may share it).
//
// What it does not do:
//
//   - Erase. A deleted or expired value disappears from reads at once, but its encrypted bytes
//     stay on disk until badger compacts the tables and [Store.RunGC] rewrites the value log,
//     and stay readable to anyone holding the master key until then. Callers that need real
//     erasure encrypt values with their own data keys above this package (envelope encryption,
//     crypto/envelope) and erase by destroying the data key.
//   - Hold arbitrarily large values or transactions: see [MaxKeySize], [MaxValueSize] and
//     [Store.Update] for the limits, and chunk larger blobs.
//   - Hide sizes, access patterns or the number of keys from someone who can watch the disk.
//
// Tuning: the options suit a small machine (2 cores, 24 GiB) that runs a few stores at once:
// 16 MiB memtables, 64 MiB value log files, 2 compactors, a 32 MiB block cache, and one version
// kept per key.
package store

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

	"github.com/dgraph-io/badger/v4"
)

// Errors. Callers compare with [errors.Is]; the returned errors wrap these with context.
var (
	// ErrNotFound means the key has no value: it was never written, was deleted, or expired.
	ErrNotFound = errors.New("store: not found")

	// ErrWrongKey means the directory holds a store encrypted under another master key (or an
	// unencrypted badger database). Nothing was read or changed.
	ErrWrongKey = errors.New("store: wrong master key")

	// ErrLocked means another process (or another Open in this one) holds the directory.
	ErrLocked = errors.New("store: directory in use by another process")

	// ErrTooBig means a key, a value or an Update's set of writes is over the limits of the
	// store. Nothing was written.
	ErrTooBig = errors.New("store: too big")

	// ErrConflict means another transaction changed a key that an Update read, after it read
	// it. Nothing was written; the caller may run the Update again.
	ErrConflict = errors.New("store: transaction conflict")
)

// errReadOnly is returned by writes to a store opened with Options.ReadOnly.
var errReadOnly = errors.New("store: opened read-only")

// Tuning, for a 2-core machine running a handful of stores.
const (
	memTableSize     = 16 << 20
	valueLogFileSize = 64 << 20
	valueThreshold   = 1 << 20 // values at least this large go to the value log
	blockCacheSize   = 32 << 20
	indexCacheSize   = 16 << 20
	keyRotation      = 7 * 24 * time.Hour
)

// Limits.
const (
	// MaxKeySize is the largest key, in bytes. Keys must not be empty and must not start with
	// "!badger!", which badger reserves.
	MaxKeySize = 65000

	// MaxValueSize is the largest value, in bytes.
	MaxValueSize = valueLogFileSize
)

// Options configure [Open]. Dir and KeyFile are required; the zero value of every other field
// is the safe choice.
type Options struct {
	// Dir is the directory of the store. Open creates it (mode 0700) if it does not exist.
	Dir string

	// KeyFile is the path of the master key file, created by [NewKeyFile]. It must not be
	// readable or writable by group or others.
	KeyFile string

	// ReadOnly opens the store for reading only: writes fail, and other ReadOnly opens of the
	// same directory may run at the same time. The directory must already hold a store.
	ReadOnly bool

	// Logger receives badger's warnings and errors. Nil means silent.
	Logger *slog.Logger

	// NoSync skips the fsync at each commit. The zero value (false) fsyncs, so a write that
	// returned survives a power loss; with NoSync it survives a crash of the process only.
	// Set it for tests and throwaway demos, not for checkpoints.
	NoSync bool
}

// Store is an open encrypted store. Its methods are safe for concurrent use. It must not be used
// after Close.
type Store struct {
	db       *badger.DB
	dir      string
	readOnly bool

	closeOnce sync.Once
	closeErr  error
}

// Open opens the store in opt.Dir, creating it if needed, with the master key from opt.KeyFile.
//
// Errors: a missing, unreadable or malformed key file, or one readable by group or others
// (fix with chmod 600); [ErrWrongKey] when the directory was encrypted under another key;
// [ErrLocked] when another process has it open; and any error of the file system or badger.
func Open(opt Options) (*Store, error) {
	if opt.Dir == "" {
		return nil, errors.New("store: Options.Dir is empty")
	}
	if opt.KeyFile == "" {
		return nil, errors.New("store: Options.KeyFile is empty: encryption at rest is always on")
	}
	key, err := readKeyFile(opt.KeyFile)
	if err != nil {
		return nil, err
	}

	bo := badger.DefaultOptions(opt.Dir).
		WithReadOnly(opt.ReadOnly).
		WithSyncWrites(!opt.NoSync).
		WithEncryptionKey(key).
		WithEncryptionKeyRotationDuration(keyRotation).
		WithIndexCacheSize(indexCacheSize).
		WithBlockCacheSize(blockCacheSize).
		WithNumVersionsToKeep(1).
		WithMemTableSize(memTableSize).
		WithNumMemtables(3).
		WithValueLogFileSize(valueLogFileSize).
		WithValueThreshold(valueThreshold).
		WithNumCompactors(2).
		WithMetricsEnabled(false).
		WithLogger(nil)
	if opt.Logger != nil {
		bo = bo.WithLogger(slogAdapter{opt.Logger})
	}

	db, err := badger.Open(bo)
	if err != nil {
		switch {
		case errors.Is(err, badger.ErrEncryptionKeyMismatch):
			return nil, fmt.Errorf("%w for %s", ErrWrongKey, opt.Dir)
		case strings.Contains(err.Error(), "Cannot acquire directory lock"):
			// badger wraps the flock error with %v, so its text is all that is left of it.
			return nil, fmt.Errorf("%w: %s", ErrLocked, opt.Dir)
		}
		return nil, fmt.Errorf("store: open %s: %w", opt.Dir, err)
	}
	return &Store{db: db, dir: opt.Dir, readOnly: opt.ReadOnly}, nil
}

// Close flushes and closes the store and releases its directory. Calls after the first return
// the first call's result.
func (s *Store) Close() error {
	s.closeOnce.Do(func() {
		if err := s.db.Close(); err != nil {
			s.closeErr = fmt.Errorf("store: close %s: %w", s.dir, err)
		}
	})
	return s.closeErr
}

// Get returns a copy of the value of key, which the caller owns, or [ErrNotFound].
func (s *Store) Get(key []byte) ([]byte, error) {
	var val []byte
	err := s.db.View(func(txn *badger.Txn) error {
		var err error
		val, err = get(txn, key)
		return err
	})
	return val, err
}

// Put sets the value of key, replacing any value it had. The store does not keep key or val;
// the caller may reuse them when Put returns.
func (s *Store) Put(key, val []byte) error {
	return s.Update(func(tx *Tx) error { return tx.Put(key, val) })
}

// PutTTL is [Store.Put] for a value that expires: reads see it for at least ttl and find
// [ErrNotFound] once ttl plus one second has passed (badger counts expiry in whole seconds).
// ttl must be positive.
func (s *Store) PutTTL(key, val []byte, ttl time.Duration) error {
	return s.Update(func(tx *Tx) error { return tx.PutTTL(key, val, ttl) })
}

// Delete removes key. Deleting a key that has no value is not an error. The bytes of the old
// value stay on disk until compaction; see the package doc.
func (s *Store) Delete(key []byte) error {
	return s.Update(func(tx *Tx) error { return tx.Delete(key) })
}

// Scan calls fn for each key that starts with prefix, in increasing byte order of keys, on a
// consistent snapshot of the store taken when Scan starts; an empty prefix visits every key.
// key and val are valid only during the call: fn must copy what it keeps. fn may call other
// methods of s; its writes are not seen by this Scan. If fn returns an error, Scan stops and
// returns that error unchanged.
func (s *Store) Scan(prefix []byte, fn func(key, val []byte) error) error {
	return s.db.View(func(txn *badger.Txn) error {
		it := txn.NewIterator(badger.IteratorOptions{Prefix: prefix})
		defer it.Close()
		for it.Seek(prefix); it.ValidForPrefix(prefix); it.Next() {
			item := it.Item()
			var ferr error
			err := item.Value(func(val []byte) error {
				ferr = fn(item.Key(), val)
				return ferr
			})
			if ferr != nil {
				return ferr
			}
			if err != nil {
				return fmt.Errorf("store: scan: %w", err)
			}
		}
		return nil
	})
}

// Update runs fn in a read-write transaction and commits its writes if fn returns nil: either
// all of them become visible, durably, or none does. If fn returns an error, nothing is written
// and Update returns that error unchanged. tx is valid only during fn.
//
// Reads in fn see a snapshot taken when Update starts, plus fn's own writes. If another
// transaction commits a write to a key that fn read before this one commits, Update fails with
// [ErrConflict] and writes nothing; the caller may retry.
//
// Size limit: one Update holds at most about 2.4 MiB (2,516,582 bytes) of writes and at most
// 26,000 of them. A write counts its key plus 12 bytes, plus its value if the value is under
// 1 MiB, or plus 12 bytes for a larger value (which goes to the value log). A write past the limit returns an error that
// wraps [ErrTooBig]; split the work into several Updates.
func (s *Store) Update(fn func(tx *Tx) error) error {
	if s.readOnly {
		return errReadOnly
	}
	txn := s.db.NewTransaction(true)
	defer txn.Discard()
	tx := &Tx{txn: txn}
	err := fn(tx)
	tx.done = true
	if err != nil {
		return err
	}
	if err := txn.Commit(); err != nil {
		if errors.Is(err, badger.ErrConflict) {
			return ErrConflict
		}
		return fmt.Errorf("store: commit: %w", err)
	}
	return nil
}

// RunGC rewrites at most one value log file whose space is mostly held by deleted, replaced or
// expired values, so that the disk space (and the encrypted bytes) of those values go away. It
// returns nil when no file was worth rewriting. Call it from time to time, for example after
// deleting many large values; it is slow on large stores and must not run concurrently with
// itself.
func (s *Store) RunGC() error {
	if s.readOnly {
		return errReadOnly
	}
	err := s.db.RunValueLogGC(0.5)
	if err == nil || errors.Is(err, badger.ErrNoRewrite) {
		return nil
	}
	return fmt.Errorf("store: value log gc: %w", err)
}

// A Tx is one transaction of [Store.Update]. Its methods have the contracts of the Store methods
// of the same names; its writes are seen by its own reads, and by others only after commit.
// A Tx must not be used after fn returns, nor from several goroutines at once.
type Tx struct {
	txn  *badger.Txn
	done bool
}

var errTxDone = errors.New("store: Tx used after its Update returned")

// Get returns a copy of the value of key, or [ErrNotFound].
func (tx *Tx) Get(key []byte) ([]byte, error) {
	if tx.done {
		return nil, errTxDone
	}
	return get(tx.txn, key)
}

// Put sets the value of key.
func (tx *Tx) Put(key, val []byte) error {
	return tx.set(key, val, 0)
}

// PutTTL sets the value of key, expiring after ttl; see [Store.PutTTL].
func (tx *Tx) PutTTL(key, val []byte, ttl time.Duration) error {
	if ttl <= 0 {
		return fmt.Errorf("store: put with ttl %v: ttl must be positive", ttl)
	}
	// Round the expiry up to the next whole second, so that the value lives at least ttl.
	exp := time.Now().Add(ttl)
	sec := exp.Unix()
	if exp.Nanosecond() > 0 {
		sec++
	}
	return tx.set(key, val, uint64(sec))
}

// Delete removes key.
func (tx *Tx) Delete(key []byte) error {
	if tx.done {
		return errTxDone
	}
	if err := checkKey(key); err != nil {
		return err
	}
	return writeErr(tx.txn.Delete(key))
}

func (tx *Tx) set(key, val []byte, expiresAt uint64) error {
	if tx.done {
		return errTxDone
	}
	if err := checkKey(key); err != nil {
		return err
	}
	if len(val) > MaxValueSize {
		return fmt.Errorf("%w: value of %d bytes, over the limit of %d", ErrTooBig, len(val), MaxValueSize)
	}
	// badger keeps key and value until commit; copy them so that the caller may reuse its slices.
	e := badger.NewEntry(clone(key), clone(val))
	e.ExpiresAt = expiresAt
	return writeErr(tx.txn.SetEntry(e))
}

func get(txn *badger.Txn, key []byte) ([]byte, error) {
	if len(key) == 0 {
		return nil, ErrNotFound
	}
	item, err := txn.Get(key)
	if errors.Is(err, badger.ErrKeyNotFound) {
		return nil, ErrNotFound
	}
	if err != nil {
		return nil, fmt.Errorf("store: get: %w", err)
	}
	val, err := item.ValueCopy(nil)
	if err != nil {
		return nil, fmt.Errorf("store: get: %w", err)
	}
	return val, nil
}

func checkKey(key []byte) error {
	switch {
	case len(key) == 0:
		return errors.New("store: empty key")
	case len(key) > MaxKeySize:
		return fmt.Errorf("%w: key of %d bytes, over the limit of %d", ErrTooBig, len(key), MaxKeySize)
	case strings.HasPrefix(string(key), "!badger!"):
		return errors.New(`store: key starts with "!badger!", which is reserved`)
	}
	return nil
}

func writeErr(err error) error {
	switch {
	case err == nil:
		return nil
	case errors.Is(err, badger.ErrTxnTooBig):
		return fmt.Errorf("%w: transaction over its size limit; split it into several Updates", ErrTooBig)
	}
	return fmt.Errorf("store: write: %w", err)
}

func clone(b []byte) []byte {
	if b == nil {
		return []byte{}
	}
	return append(make([]byte, 0, len(b)), b...)
}

// slogAdapter passes badger's warnings and errors to a slog.Logger and drops the rest.
type slogAdapter struct{ l *slog.Logger }

func (a slogAdapter) Errorf(format string, args ...any) { a.log(slog.LevelError, format, args) }

func (a slogAdapter) Warningf(format string, args ...any) { a.log(slog.LevelWarn, format, args) }

func (a slogAdapter) Infof(string, ...any) {}

func (a slogAdapter) Debugf(string, ...any) {}

func (a slogAdapter) log(level slog.Level, format string, args []any) {
	ctx := context.Background()
	if !a.l.Enabled(ctx, level) {
		return
	}
	a.l.Log(ctx, level, strings.TrimSpace(fmt.Sprintf(format, args...)), "component", "badger")
}
