package envelope

import (
	"bytes"
	"crypto/aes"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"slices"
	"sync"
)

// A Keyring holds the middle of the hierarchy: the epoch key trees that wrap data keys, and
// the pseudonym key. It lives in one small file, wrapped by a [RootKey], which every change
// replaces atomically. Its methods are safe for concurrent use; a keyring file is used by one
// process at a time (the store beside it enforces that).
type Keyring struct {
	path string

	mu   sync.RWMutex
	root RootKey
	st   ringState
}

// String names the keyring by its file; its keys are never printed.
func (r *Keyring) String() string { return "envelope.Keyring(" + r.path + ")" }

// Format prints what String returns for every verb, so that %+v never shows the keys.
func (r *Keyring) Format(f fmt.State, _ rune) { f.Write([]byte(r.String())) }

// ringState is what the keyring file holds.
type ringState struct {
	id     [16]byte   // binds wrapped data keys to this keyring
	pseudo [32]byte   // the pseudonym key; survives shredding and rotation
	epochs []epochKey // ascending; the last is current; more than one: a rotation in progress
}

// epochKey is one epoch's key tree: the nodes that cover every slot not shredded.
type epochKey struct {
	epoch uint32
	nodes []node // sorted by first slot, disjoint
}

// node is a node of a GGM tree over 64-bit slots: at depth d it covers the 2^(64-d) slots whose
// top d bits are prefix. Its children's keys are AES-256 under its key of two fixed blocks
// each; a slot's key-encryption key is the key of its leaf (depth 64).
type node struct {
	depth  uint8
	prefix uint64
	key    [KeySize]byte
}

// first is the first slot the node covers (Go's shifts by 64 give 0, which depth 0 needs).
func (n *node) first() uint64 { return n.prefix << (64 - uint(n.depth)) }

// last is the last slot the node covers.
func (n *node) last() uint64 {
	if n.depth == 0 {
		return ^uint64(0)
	}
	return n.first() + (^uint64(0) >> uint(n.depth))
}

func (n *node) covers(slot uint64) bool { return slot>>(64-uint(n.depth)) == n.prefix }

var ggmLabel = [15]byte{'f', 'e', 'd', 'w', 'e', 'a', 'v', 'e', ' ', 'g', 'g', 'm', ' ', 'v', '1'}

// child returns the child of n on side b (0 or 1).
func (n *node) child(b uint64) node {
	c, err := aes.NewCipher(n.key[:])
	if err != nil {
		panic(err)
	}
	var in [16]byte
	copy(in[:], ggmLabel[:])
	out := node{depth: n.depth + 1, prefix: n.prefix<<1 | b}
	in[15] = byte(2 * b)
	c.Encrypt(out.key[:16], in[:])
	in[15] = byte(2*b + 1)
	c.Encrypt(out.key[16:], in[:])
	return out
}

// bitAt is the bit of slot that chooses the child below depth d.
func bitAt(slot uint64, d uint8) uint64 { return slot >> (63 - uint(d)) & 1 }

// find returns the index of the node that covers slot, or -1.
func (e *epochKey) find(slot uint64) int {
	i, _ := slices.BinarySearchFunc(e.nodes, slot, func(n node, s uint64) int {
		switch {
		case n.last() < s:
			return -1
		case n.first() > s:
			return 1
		}
		return 0
	})
	if i < len(e.nodes) && e.nodes[i].covers(slot) {
		return i
	}
	return -1
}

// kek derives the key-encryption key of slot, if it is not shredded.
func (e *epochKey) kek(slot uint64) (Key, bool) {
	i := e.find(slot)
	if i < 0 {
		return Key{}, false
	}
	n := e.nodes[i]
	for n.depth < 64 {
		next := n.child(bitAt(slot, n.depth))
		clear(n.key[:])
		n = next
	}
	k := Key{k: n.key, set: true}
	clear(n.key[:])
	return k, true
}

// puncture removes slot from the tree: the node that covers it is replaced by the siblings of
// the path down to the slot. It reports whether the slot was covered.
func (e *epochKey) puncture(slot uint64) bool {
	i := e.find(slot)
	if i < 0 {
		return false
	}
	n := e.nodes[i]
	e.nodes = slices.Delete(e.nodes, i, i+1)
	var sibs []node
	for n.depth < 64 {
		b := bitAt(slot, n.depth)
		sibs = append(sibs, n.child(1-b))
		next := n.child(b)
		clear(n.key[:])
		n = next
	}
	clear(n.key[:])
	e.nodes = append(e.nodes, sibs...)
	slices.SortFunc(e.nodes, func(a, b node) int {
		switch fa, fb := a.first(), b.first(); {
		case fa < fb:
			return -1
		case fa > fb:
			return 1
		}
		return 0
	})
	return true
}

func (st *ringState) current() *epochKey { return &st.epochs[len(st.epochs)-1] }

func (st *ringState) epoch(e uint32) *epochKey {
	for i := range st.epochs {
		if st.epochs[i].epoch == e {
			return &st.epochs[i]
		}
	}
	return nil
}

// clone returns a deep copy, so that a change is made on the copy and adopted once saved.
func (st *ringState) clone() ringState {
	c := *st
	c.epochs = make([]epochKey, len(st.epochs))
	for i, e := range st.epochs {
		c.epochs[i] = epochKey{epoch: e.epoch, nodes: slices.Clone(e.nodes)}
	}
	return c
}

func newEpoch(number uint32) epochKey {
	root := node{}
	rand.Read(root.key[:])
	return epochKey{epoch: number, nodes: []node{root}}
}

// CreateKeyring creates a new keyring file at path, wrapped by root, with a first epoch and a
// fresh pseudonym key, and returns it open. It refuses to replace an existing file (the error
// wraps [fs.ErrExist]).
func CreateKeyring(path string, root RootKey) (*Keyring, error) {
	if _, err := os.Lstat(path); err == nil {
		return nil, fmt.Errorf("envelope: keyring %s already exists; refusing to replace it: %w", path, fs.ErrExist)
	}
	r := &Keyring{path: path, root: root}
	rand.Read(r.st.id[:])
	rand.Read(r.st.pseudo[:])
	r.st.epochs = []epochKey{newEpoch(1)}
	b, err := r.encode(&r.st, root)
	if err != nil {
		return nil, err
	}
	if err := writeFile(path, b, true); err != nil {
		return nil, err
	}
	return r, nil
}

// OpenKeyring opens the keyring file at path with root. A missing file is an error that wraps
// [fs.ErrNotExist]; a root key that does not open the file, one that wraps [ErrDecrypt].
func OpenKeyring(path string, root RootKey) (*Keyring, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, fmt.Errorf("envelope: keyring: %w", err)
	}
	defer f.Close()
	b, err := io.ReadAll(io.LimitReader(f, maxKeyringFile+1))
	if err != nil {
		return nil, fmt.Errorf("envelope: keyring: %w", err)
	}
	if len(b) > maxKeyringFile {
		return nil, fmt.Errorf("%w: keyring %s is larger than %d bytes", ErrMalformed, path, maxKeyringFile)
	}
	body, ok := bytes.CutPrefix(b, []byte(keyringHeader))
	if !ok {
		return nil, fmt.Errorf("%w: %s is not a fedweave keyring", ErrMalformed, path)
	}
	plain, err := root.Unwrap(body, []byte(keyringHeader))
	if err != nil {
		if errors.Is(err, ErrDecrypt) {
			return nil, fmt.Errorf("envelope: keyring %s: the root key does not open it: %w", path, ErrDecrypt)
		}
		return nil, fmt.Errorf("envelope: keyring %s: %w", path, err)
	}
	defer clear(plain)
	r := &Keyring{path: path, root: root}
	if err := r.st.decode(plain); err != nil {
		return nil, fmt.Errorf("%w: keyring %s: %v", ErrMalformed, path, err)
	}
	return r, nil
}

// Keyring file: a header line, then the serialized state wrapped by the root key with the
// header as associated data.
const (
	keyringHeader  = "fedweave-keyring-v1\n"
	stateVersion   = 1
	maxKeyringFile = 64 << 20
	maxEpochs      = 16
	nodeSize       = 1 + 8 + KeySize
)

func (r *Keyring) encode(st *ringState, root RootKey) ([]byte, error) {
	b := []byte{stateVersion}
	b = append(b, st.id[:]...)
	b = append(b, st.pseudo[:]...)
	b = binary.BigEndian.AppendUint32(b, uint32(len(st.epochs)))
	for _, e := range st.epochs {
		b = binary.BigEndian.AppendUint32(b, e.epoch)
		b = binary.BigEndian.AppendUint32(b, uint32(len(e.nodes)))
		for _, n := range e.nodes {
			b = append(b, n.depth)
			b = binary.BigEndian.AppendUint64(b, n.prefix)
			b = append(b, n.key[:]...)
		}
	}
	defer clear(b)
	w, err := root.Wrap(b, []byte(keyringHeader))
	if err != nil {
		return nil, fmt.Errorf("envelope: wrap the keyring: %w", err)
	}
	return append([]byte(keyringHeader), w...), nil
}

func (st *ringState) decode(b []byte) error {
	if len(b) < 1+16+32+4 || b[0] != stateVersion {
		return errors.New("unknown version")
	}
	copy(st.id[:], b[1:])
	copy(st.pseudo[:], b[17:])
	ne := binary.BigEndian.Uint32(b[49:])
	b = b[53:]
	if ne < 1 || ne > maxEpochs {
		return fmt.Errorf("%d epochs", ne)
	}
	for range ne {
		if len(b) < 8 {
			return errors.New("truncated")
		}
		e := epochKey{epoch: binary.BigEndian.Uint32(b)}
		nn := binary.BigEndian.Uint32(b[4:])
		b = b[8:]
		if uint64(len(b)) < uint64(nn)*nodeSize {
			return errors.New("truncated")
		}
		e.nodes = make([]node, nn)
		for i := range e.nodes {
			n := &e.nodes[i]
			n.depth, n.prefix = b[0], binary.BigEndian.Uint64(b[1:])
			copy(n.key[:], b[9:nodeSize])
			b = b[nodeSize:]
			if n.depth > 64 || (n.depth < 64 && n.prefix>>n.depth != 0) {
				return errors.New("bad tree node")
			}
			if i > 0 && e.nodes[i-1].last() >= n.first() {
				return errors.New("tree nodes out of order")
			}
		}
		if k := len(st.epochs); k > 0 && st.epochs[k-1].epoch >= e.epoch {
			return errors.New("epochs out of order")
		}
		st.epochs = append(st.epochs, e)
	}
	if len(b) != 0 {
		return errors.New("trailing bytes")
	}
	return nil
}

// save writes st as the keyring file, under root, and adopts both. The caller holds r.mu.
func (r *Keyring) save(st ringState, root RootKey) error {
	b, err := r.encode(&st, root)
	if err != nil {
		return err
	}
	if err := writeFile(r.path, b, false); err != nil {
		return err
	}
	r.st, r.root = st, root
	return nil
}

// writeFile writes b to path through a temporary file beside it: written, synced, then renamed
// over path (or, with exclusive, linked to path, which fails if path exists), and the directory
// synced. A crash leaves the old file or the new one.
func writeFile(path string, b []byte, exclusive bool) error {
	tmp := path + ".tmp"
	os.Remove(tmp)
	f, err := os.OpenFile(tmp, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("envelope: write keyring: %w", err)
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		if exclusive {
			if err = os.Link(tmp, path); err == nil {
				err = os.Remove(tmp)
			}
		} else {
			err = os.Rename(tmp, path)
		}
	}
	if err != nil {
		os.Remove(tmp)
		return fmt.Errorf("envelope: write keyring: %w", err)
	}
	return syncDir(path)
}

// Wrapped data keys: magic, epoch, slot, then the data key sealed under KEK(epoch, slot).
const (
	wrappedMagic = "FWK1"
	// WrappedSize is the size of a wrapped data key, in bytes.
	WrappedSize = 4 + 4 + 8 + Overhead + KeySize
)

func (st *ringState) wrapAD(epoch uint32, slot uint64, name []byte) []byte {
	ad := append([]byte("fedweave/envelope data key v1\x00"), st.id[:]...)
	ad = binary.BigEndian.AppendUint32(ad, epoch)
	ad = binary.BigEndian.AppendUint64(ad, slot)
	return append(ad, name...)
}

func parseWrapped(w []byte) (epoch uint32, slot uint64, sealed []byte, err error) {
	if len(w) != WrappedSize || string(w[:4]) != wrappedMagic {
		return 0, 0, nil, fmt.Errorf("%w: not a wrapped data key", ErrMalformed)
	}
	return binary.BigEndian.Uint32(w[4:]), binary.BigEndian.Uint64(w[8:]), w[16:], nil
}

// wrap wraps dek under a random live slot of the current epoch. The caller holds r.mu.
func (st *ringState) wrap(dek Key, name []byte) ([]byte, error) {
	e := st.current()
	for range 64 {
		var s [8]byte
		rand.Read(s[:])
		slot := binary.BigEndian.Uint64(s[:])
		kek, ok := e.kek(slot)
		if !ok {
			continue // shredded already: a chance of about shreds / 2^64
		}
		w := append([]byte(wrappedMagic), 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0, 0)
		binary.BigEndian.PutUint32(w[4:], e.epoch)
		binary.BigEndian.PutUint64(w[8:], slot)
		return append(w, Seal(kek, dek.k[:], st.wrapAD(e.epoch, slot, name))...), nil
	}
	return nil, errors.New("envelope: no live slot found")
}

// unwrap is Unwrap with r.mu held.
func (st *ringState) unwrap(wrapped, name []byte) (Key, error) {
	epoch, slot, sealed, err := parseWrapped(wrapped)
	if err != nil {
		return Key{}, err
	}
	e := st.epoch(epoch)
	if e == nil {
		return Key{}, ErrShredded
	}
	kek, ok := e.kek(slot)
	if !ok {
		return Key{}, ErrShredded
	}
	raw, err := Open(kek, sealed, st.wrapAD(epoch, slot, name))
	if err != nil {
		return Key{}, err
	}
	defer clear(raw)
	if len(raw) != KeySize {
		return Key{}, fmt.Errorf("%w: wrapped data key of %d bytes", ErrMalformed, len(raw))
	}
	k := Key{set: true}
	copy(k.k[:], raw)
	return k, nil
}

// NewDataKey returns a fresh data key and its wrapped form ([WrappedSize] bytes), wrapped under
// the current epoch at a random slot. name binds the wrapped key to its use (the storage key
// of its data, say): Unwrap needs the same name. Store the wrapped key; the keyring keeps
// nothing of it.
func (r *Keyring) NewDataKey(name []byte) (Key, []byte, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	dek := NewKey()
	w, err := r.st.wrap(dek, name)
	return dek, w, err
}

// Unwrap returns the data key of a wrapped key made for name. It fails with [ErrShredded] when
// the key was shredded or its epoch retired, [ErrDecrypt] when wrapped or name was changed (or
// belongs to another keyring), and [ErrMalformed] when wrapped is not a wrapped key.
func (r *Keyring) Unwrap(wrapped, name []byte) (Key, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.st.unwrap(wrapped, name)
}

// A WrappedKey names a data key to shred: its wrapped form and the name it was made for.
type WrappedKey struct {
	Wrapped, Name []byte
}

// Shred destroys data keys: once it returns nil, the keys (and whatever they sealed) cannot be
// unwrapped from anything, including the wrapped keys in stale copies of a store; see the
// package doc for what remains. Every key must be one of this keyring's and authenticate, or
// be shredded already (which is not an error); otherwise nothing is shredded. The keyring
// file is replaced once for all the keys; if that fails, nothing is shredded.
func (r *Keyring) Shred(keys ...WrappedKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	next := r.st.clone()
	changed := false
	for _, k := range keys {
		epoch, slot, _, err := parseWrapped(k.Wrapped)
		if err != nil {
			return err
		}
		if _, err := next.unwrap(k.Wrapped, k.Name); errors.Is(err, ErrShredded) {
			continue
		} else if err != nil {
			return fmt.Errorf("envelope: shred: %w", err)
		}
		e := next.epoch(epoch)
		if e.puncture(slot) {
			changed = true
		}
	}
	if !changed {
		return nil
	}
	return r.save(next, r.root)
}

// Pseudonym returns a stable pseudonym of id for a domain ("record", "subject", ...): HMAC-SHA256
// under the keyring's pseudonym key. Pseudonyms do not change with shredding or rotation; they
// let a store key its data by identifiers without writing the identifiers.
func (r *Keyring) Pseudonym(domain string, id []byte) [32]byte {
	r.mu.RLock()
	m := hmac.New(sha256.New, r.st.pseudo[:])
	r.mu.RUnlock()
	m.Write([]byte(domain))
	m.Write([]byte{0})
	m.Write(id)
	var out [32]byte
	m.Sum(out[:0])
	return out
}

// Epoch returns the current epoch's number (1 for a new keyring).
func (r *Keyring) Epoch() uint32 {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return r.st.current().epoch
}

// Size returns the number of tree nodes the keyring holds, over all its epochs: one per epoch
// when nothing was shredded, and up to 64 more for each shred. Rotation brings it back to one.
func (r *Keyring) Size() int {
	r.mu.RLock()
	defer r.mu.RUnlock()
	n := 0
	for _, e := range r.st.epochs {
		n += len(e.nodes)
	}
	return n
}

// Rotating reports whether a rotation was begun and not finished: the owner must re-wrap its
// data keys ([Keyring.Rewrap]) and call [Keyring.FinishRotation].
func (r *Keyring) Rotating() bool {
	r.mu.RLock()
	defer r.mu.RUnlock()
	return len(r.st.epochs) > 1
}

// BeginRotation adds a new epoch, which new and re-wrapped data keys use from now on. The old
// epochs still unwrap the keys they wrapped until [Keyring.FinishRotation]. Calling it during
// a rotation does nothing.
func (r *Keyring) BeginRotation() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.st.epochs) > 1 {
		return nil
	}
	cur := r.st.current().epoch
	if cur == ^uint32(0) {
		return errors.New("envelope: epoch numbers exhausted")
	}
	next := r.st.clone()
	next.epochs = append(next.epochs, newEpoch(cur+1))
	return r.save(next, r.root)
}

// Rewrap returns wrapped re-wrapped under the current epoch (a copy of wrapped if it is of the
// current epoch already), for the same name. Errors are those of [Keyring.Unwrap].
func (r *Keyring) Rewrap(wrapped, name []byte) ([]byte, error) {
	r.mu.RLock()
	defer r.mu.RUnlock()
	epoch, _, _, err := parseWrapped(wrapped)
	if err != nil {
		return nil, err
	}
	dek, err := r.st.unwrap(wrapped, name)
	if err != nil {
		return nil, err
	}
	if epoch == r.st.current().epoch {
		return slices.Clone(wrapped), nil
	}
	return r.st.wrap(dek, name)
}

// FinishRotation drops every epoch but the current one from the keyring file. Every data key
// still wrapped under an older epoch, wherever it is stored, is shredded by it: the caller
// must have re-wrapped, and stored durably, every key it keeps.
func (r *Keyring) FinishRotation() error {
	r.mu.Lock()
	defer r.mu.Unlock()
	if len(r.st.epochs) == 1 {
		return nil
	}
	next := r.st.clone()
	next.epochs = next.epochs[len(next.epochs)-1:]
	return r.save(next, r.root)
}

// SetRoot re-wraps the keyring file under another root key, and uses it from then on. Destroy
// the old root key afterwards to make copies of the keyring file from before useless.
func (r *Keyring) SetRoot(root RootKey) error {
	r.mu.Lock()
	defer r.mu.Unlock()
	return r.save(r.st.clone(), root)
}
