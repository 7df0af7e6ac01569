package server

// Encryption at rest of the server's state, and its retention.
//
// The server's store keeps badger's encryption on (the master key of Config.KeyFile), and under
// it every checkpoint is sealed with a data key of its own (crypto/envelope): AES-256-GCM, the
// checkpoint's store key as associated data, the data key wrapped by the server's keyring and
// stored beside it. Deleting a checkpoint (retention, erasure) shreds its data key first, so that
// the checkpoint is unreadable in every copy of the store, a backup included, and not only
// after badger compacts.
//
// The keyring and its root key sit beside the master key, by name: for key_file keys/server.key,
// the root key is keys/server.root and the keyring keys/server.keyring (KeyPaths), created
// with the store (Options.RootKey may put the root key in a KMS instead). Keep them out of the
// store directory's backups.
//
// Round records (the lineage: who contributed to which round) stay unsealed under the master
// key: they are the evidence erasures are decided and proved with. The server persists no
// per-org or per-round payload (a round's protocol state lives in memory for the round alone),
// so there is nothing to key per org or per round, and no transient state that needs a TTL.
//
// Retention (Config.Retention, or the rule an admin set, retention.go): the newest Checkpoints committed checkpoints are kept, the
// current one always, and checkpoint 0 (the initial parameters, which hold no partner's data);
// older ones are deleted, their keys shredded, after every commit and at start.

import (
	"bytes"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"

	"github.com/fedweave/fedweave/crypto/envelope"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/policy"
)

// RetentionConfig says how much the server keeps.
type RetentionConfig struct {
	// Checkpoints is how many committed checkpoints to keep, the newest (the current one is
	// always kept, and so is checkpoint 0, the initial parameters); 0 keeps all. A deleted
	// checkpoint's data key is shredded.
	Checkpoints int `json:"checkpoints,omitempty"`
}

func (c RetentionConfig) validate() []error {
	if c.Checkpoints < 0 {
		return []error{fmt.Errorf("retention.checkpoints: must not be negative, got %d", c.Checkpoints)}
	}
	return nil
}

// KeyPaths returns where the server keeps the envelope root key and keyring of the store
// whose master key is keyFile: beside it, with the extensions .root and .keyring in place of
// keyFile's own.
func KeyPaths(keyFile string) (rootKey, keyring string) {
	base := strings.TrimSuffix(keyFile, filepath.Ext(keyFile))
	return base + ".root", base + ".keyring"
}

// atRest is the server's key hierarchy and the state of its erasures.
type atRest struct {
	ring *envelope.Keyring

	// commitMu is held by a round from its erasure check to the end of its commit, and by
	// an erasure while it rolls back: no round commits on a model an erasure took back.
	commitMu sync.Mutex
	// erased holds the orgs whose contributions were erased (an immutable map, replaced).
	erased atomic.Pointer[map[string]bool]
}

// Sealed checkpoints start with this, then envelope.Seal's output; a checkpoint written before
// envelope encryption starts with ckptMagic and is read as it is.
var sealedMagic = []byte("FWS1")

func keyCheckpointKey(task string, r uint64) []byte {
	return fmt.Appendf(nil, "task/%s/ckptkey/%020d", task, r)
}
func prefixCheckpoints(task string) []byte    { return []byte("task/" + task + "/ckpt/") }
func prefixCheckpointKeys(task string) []byte { return []byte("task/" + task + "/ckptkey/") }

// openAtRest loads (or creates, with a new store) the root key and the keyring, and the erased
// orgs.
func openAtRest(cfg *Config, opt *Options, st *store.Store) (*atRest, error) {
	rootFile, ringFile := KeyPaths(cfg.KeyFile)
	root := opt.RootKey
	if root == nil {
		if _, err := os.Stat(rootFile); errors.Is(err, fs.ErrNotExist) {
			if _, err := os.Stat(ringFile); err == nil {
				return nil, fmt.Errorf("server: the keyring %s exists but its root key %s is missing: %w", ringFile, rootFile, fs.ErrNotExist)
			}
			if err := envelope.NewRootKeyFile(rootFile); err != nil {
				return nil, fmt.Errorf("server: %w", err)
			}
		}
		fr, err := envelope.LoadRootKeyFile(rootFile)
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		root = fr
	}
	ring, err := envelope.OpenKeyring(ringFile, root)
	if errors.Is(err, fs.ErrNotExist) {
		if hasPrefix(st, prefixCheckpointKeys(cfg.Task.Name)) {
			return nil, fmt.Errorf("server: the store in %s holds sealed checkpoints but the keyring %s is missing: %w", cfg.Dir, ringFile, fs.ErrNotExist)
		}
		ring, err = envelope.CreateKeyring(ringFile, root)
	}
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	r := &atRest{ring: ring}
	orgs := map[string]bool{}
	jobs, err := loadErasures(st, cfg.Task.Name)
	if err != nil {
		return nil, fmt.Errorf("server: read the erasures: %w", err)
	}
	for _, j := range jobs {
		orgs[j.Org] = true
	}
	r.erased.Store(&orgs)
	return r, nil
}

func hasPrefix(st *store.Store, prefix []byte) bool {
	found := errors.New("found")
	return st.Scan(prefix, func(_, _ []byte) error { return found }) != nil
}

// putCheckpoint seals an encoded checkpoint under a new data key and writes both in tx.
func (s *Server) putCheckpoint(tx *store.Tx, r uint64, enc []byte) error {
	task := s.cfg.Task.Name
	kk, ck := keyCheckpointKey(task, r), keyCheckpoint(task, r)
	dek, w, err := s.rest.ring.NewDataKey(kk)
	if err != nil {
		return err
	}
	if err := tx.Put(kk, w); err != nil {
		return err
	}
	return tx.Put(ck, append(slices.Clip(sealedMagic), envelope.Seal(dek, enc, ck)...))
}

// checkpointBytes returns the encoded checkpoint of round r (see decodeCheckpoint). A missing
// or shredded checkpoint is an error that wraps store.ErrNotFound. ring may be nil for a store
// whose checkpoints are not sealed (written before envelope encryption).
func checkpointBytes(st *store.Store, ring *envelope.Keyring, task string, r uint64) ([]byte, error) {
	ck := keyCheckpoint(task, r)
	b, err := st.Get(ck)
	if err != nil {
		return nil, err
	}
	body, sealed := bytes.CutPrefix(b, sealedMagic)
	if !sealed {
		return b, nil
	}
	if ring == nil {
		return nil, errors.New("server: the checkpoint is sealed: its keyring and root key are needed")
	}
	kk := keyCheckpointKey(task, r)
	w, err := st.Get(kk)
	if errors.Is(err, store.ErrNotFound) {
		return nil, fmt.Errorf("%w: %w", store.ErrNotFound, envelope.ErrShredded)
	}
	if err != nil {
		return nil, err
	}
	dek, err := ring.Unwrap(w, kk)
	if errors.Is(err, envelope.ErrShredded) {
		return nil, fmt.Errorf("%w: %w", store.ErrNotFound, err)
	}
	if err != nil {
		return nil, err
	}
	return envelope.Open(dek, body, ck)
}

// offlineKeyring opens the keyring of the server store whose master key is keyFile (see
// KeyPaths), to read sealed checkpoints while no server runs; it changes nothing. It returns
// nil when the store has no keyring (its checkpoints are not sealed).
func offlineKeyring(keyFile string) (*envelope.Keyring, error) {
	rootFile, ringFile := KeyPaths(keyFile)
	if _, err := os.Stat(ringFile); errors.Is(err, fs.ErrNotExist) {
		return nil, nil
	}
	root, err := envelope.LoadRootKeyFile(rootFile)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	ring, err := envelope.OpenKeyring(ringFile, root)
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	return ring, nil
}

// shredCheckpoints shreds the data keys of the given rounds' checkpoints (in one replacement of
// the keyring file) and deletes the checkpoints, and returns the rounds whose checkpoint it
// found. Checkpoint 0 is never deleted.
func (s *Server) shredCheckpoints(rounds []uint64) ([]uint64, error) {
	task := s.cfg.Task.Name
	var keys []envelope.WrappedKey
	var found []uint64
	for _, r := range rounds {
		if r == 0 {
			continue
		}
		kk := keyCheckpointKey(task, r)
		w, err := s.store.Get(kk)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return nil, err
		}
		hasKey := err == nil
		if hasKey {
			keys = append(keys, envelope.WrappedKey{Wrapped: w, Name: kk})
		}
		if _, err := s.store.Get(keyCheckpoint(task, r)); hasKey || err == nil {
			found = append(found, r)
		}
	}
	if err := s.rest.ring.Shred(keys...); err != nil {
		return nil, fmt.Errorf("server: shred: %w", err)
	}
	for start := 0; start < len(found); start += 1000 {
		batch := found[start:min(len(found), start+1000)]
		err := s.store.Update(func(tx *store.Tx) error {
			for _, r := range batch {
				if err := tx.Delete(keyCheckpoint(task, r)); err != nil {
					return err
				}
				if err := tx.Delete(keyCheckpointKey(task, r)); err != nil {
					return err
				}
			}
			return nil
		})
		if err != nil {
			return nil, fmt.Errorf("server: delete checkpoints: %w", err)
		}
	}
	s.store.RunGC() // best effort: what is left on disk is sealed under shredded keys
	return found, nil
}

// storedCheckpoints returns the rounds whose checkpoint is in the store, ascending.
func (s *Server) storedCheckpoints() ([]uint64, error) {
	pre := prefixCheckpoints(s.cfg.Task.Name)
	var out []uint64
	err := s.store.Scan(pre, func(k, _ []byte) error {
		r, err := strconv.ParseUint(string(k[len(pre):]), 10, 64)
		if err != nil {
			return fmt.Errorf("server: bad checkpoint key %q", k)
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// applyRetention deletes, and shreds, the committed checkpoints beyond the newest
// the retention rule keeps (keeping the current one and checkpoint 0). The caller holds
// rest.commitMu, or nothing else runs yet.
func (s *Server) applyRetention() {
	keep := s.retentionCheckpoints() // an admin's rule (retention.go), else the config's
	if keep <= 0 {
		return
	}
	stored, err := s.storedCheckpoints()
	if err != nil {
		s.log.Error("retention: list checkpoints", "err", err)
		return
	}
	s.mu.Lock()
	head := s.head.Round
	s.mu.Unlock()
	var old []uint64
	for i, kept := len(stored)-1, 0; i >= 0; i-- {
		switch r := stored[i]; {
		case r == 0:
		case kept < keep:
			kept++
		case r != head:
			old = append(old, r)
		}
	}
	if len(old) == 0 {
		return
	}
	slices.Sort(old)
	deleted, err := s.shredCheckpoints(old)
	if err != nil {
		s.log.Error("retention: delete checkpoints", "rounds", fmt.Sprint(old), "err", err)
		return
	}
	s.log.Info("retention: checkpoints deleted, their keys shredded", "rounds", fmt.Sprint(deleted), "keep", keep)
	s.appendAudit(policy.Event{
		Type: policy.EventErasure, Principal: s.opt.Identity.Principal.URI(),
		Resource: policy.Ref{Type: "Task", ID: s.cfg.Task.Name}.String(),
		Details: map[string]string{
			"kind":   "retention",
			"rounds": joinRounds(deleted),
			"what":   fmt.Sprintf("checkpoints beyond the newest %d deleted and their data keys shredded", keep),
		},
	})
}

func joinRounds(rs []uint64) string {
	parts := make([]string, len(rs))
	for i, r := range rs {
		parts[i] = strconv.FormatUint(r, 10)
	}
	return strings.Join(parts, " ")
}
