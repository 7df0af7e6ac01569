package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math/bits"
)

// A Hash is a SHA-256 hash of the audit log's Merkle tree: a leaf, a node or a root.
type Hash [32]byte

// String returns h in hex.
func (h Hash) String() string { return hex.EncodeToString(h[:]) }

// LeafHash returns the RFC 6962 hash of a log entry, SHA-256(0x00 || entry).
func LeafHash(entry []byte) Hash {
	h := sha256.New()
	h.Write([]byte{0})
	h.Write(entry)
	return Hash(h.Sum(nil))
}

// NodeHash returns the RFC 6962 hash of an interior node, SHA-256(0x01 || left || right).
func NodeHash(left, right Hash) Hash {
	var buf [1 + 2*sha256.Size]byte
	buf[0] = 1
	copy(buf[1:], left[:])
	copy(buf[1+sha256.Size:], right[:])
	return sha256.Sum256(buf[:])
}

// emptyRoot is the root of the empty tree, SHA-256 of nothing.
var emptyRoot = Hash(sha256.Sum256(nil))

// ErrProof means that a proof does not verify: the log is not what the root says it is, or
// the proof is malformed.
var ErrProof = errors.New("policy: audit proof does not verify")

// VerifyInclusion checks that proof proves that the entry with leaf hash leaf is entry index
// of the tree of size entries whose root is root, with the algorithm of RFC 9162 §2.1.3.2
// for the audit paths of RFC 6962 §2.1.1. The error wraps [ErrProof].
func VerifyInclusion(leaf Hash, index, size uint64, proof []Hash, root Hash) error {
	if index >= size {
		return fmt.Errorf("%w: entry %d is not in a tree of size %d", ErrProof, index, size)
	}
	fn, sn := index, size-1
	r := leaf
	for _, p := range proof {
		if sn == 0 {
			return fmt.Errorf("%w: inclusion proof of %d hashes is too long", ErrProof, len(proof))
		}
		if fn&1 == 1 || fn == sn {
			r = NodeHash(p, r)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			r = NodeHash(r, p)
		}
		fn >>= 1
		sn >>= 1
	}
	if sn != 0 {
		return fmt.Errorf("%w: inclusion proof of %d hashes is too short", ErrProof, len(proof))
	}
	if r != root {
		return fmt.Errorf("%w: entry %d is not in the tree of size %d with root %s", ErrProof, index, size, root)
	}
	return nil
}

// VerifyConsistency checks that proof proves that the tree of size oldSize with root oldRoot
// is a prefix of the tree of size newSize with root newRoot, with the algorithm of RFC 9162
// §2.1.4.2 for the consistency proofs of RFC 6962 §2.1.2: nothing logged before was changed
// or removed. Equal sizes need an empty proof and equal roots; the empty tree (oldSize 0,
// whose root is SHA-256 of nothing) is a prefix of every tree, with an empty proof. The error
// wraps [ErrProof].
func VerifyConsistency(oldSize, newSize uint64, oldRoot, newRoot Hash, proof []Hash) error {
	switch {
	case oldSize > newSize:
		return fmt.Errorf("%w: a tree of size %d cannot grow into one of size %d", ErrProof, oldSize, newSize)
	case oldSize == newSize:
		if len(proof) != 0 {
			return fmt.Errorf("%w: consistency proof between equal sizes is not empty", ErrProof)
		}
		if oldRoot != newRoot {
			return fmt.Errorf("%w: two different roots for size %d", ErrProof, oldSize)
		}
		return nil
	case oldSize == 0:
		if len(proof) != 0 {
			return fmt.Errorf("%w: consistency proof from the empty tree is not empty", ErrProof)
		}
		if oldRoot != emptyRoot {
			return fmt.Errorf("%w: wrong root for the empty tree", ErrProof)
		}
		return nil
	case len(proof) == 0:
		return fmt.Errorf("%w: consistency proof is empty", ErrProof)
	}
	path := proof
	if oldSize&(oldSize-1) == 0 { // a power of 2: the old tree is a node of the new one
		path = append([]Hash{oldRoot}, proof...)
	}
	fn, sn := oldSize-1, newSize-1
	for fn&1 == 1 {
		fn >>= 1
		sn >>= 1
	}
	fr, sr := path[0], path[0]
	for _, c := range path[1:] {
		if sn == 0 {
			return fmt.Errorf("%w: consistency proof of %d hashes is too long", ErrProof, len(proof))
		}
		if fn&1 == 1 || fn == sn {
			fr = NodeHash(c, fr)
			sr = NodeHash(c, sr)
			for fn&1 == 0 && fn != 0 {
				fn >>= 1
				sn >>= 1
			}
		} else {
			sr = NodeHash(sr, c)
		}
		fn >>= 1
		sn >>= 1
	}
	switch {
	case sn != 0:
		return fmt.Errorf("%w: consistency proof of %d hashes is too short", ErrProof, len(proof))
	case fr != oldRoot:
		return fmt.Errorf("%w: the tree of size %d is not a prefix of the tree of size %d (old root differs)", ErrProof, oldSize, newSize)
	case sr != newRoot:
		return fmt.Errorf("%w: the tree of size %d is not a prefix of the tree of size %d (new root differs)", ErrProof, oldSize, newSize)
	}
	return nil
}

// A subtrees gives the hash of the perfect subtree of 2^level leaves that starts at leaf
// index<<level. Every subtree that the RFC 6962 recursion visits on the left is such an
// aligned perfect subtree, so mth, path and subproof need nothing else.
type subtrees func(level int, index uint64) (Hash, error)

// largestPow2Below returns the largest power of 2 smaller than n, for n > 1.
func largestPow2Below(n uint64) uint64 { return 1 << (bits.Len64(n-1) - 1) }

// mth returns MTH(D[lo:lo+n]) of RFC 6962 §2.1, for n > 0 and lo aligned as the recursion
// from the root aligns it.
func mth(get subtrees, lo, n uint64) (Hash, error) {
	if n&(n-1) == 0 {
		level := bits.TrailingZeros64(n)
		return get(level, lo>>level)
	}
	k := largestPow2Below(n)
	left, err := get(bits.TrailingZeros64(k), lo/k)
	if err != nil {
		return Hash{}, err
	}
	right, err := mth(get, lo+k, n-k)
	if err != nil {
		return Hash{}, err
	}
	return NodeHash(left, right), nil
}

// rootOf returns the root of the tree of size n.
func rootOf(get subtrees, n uint64) (Hash, error) {
	if n == 0 {
		return emptyRoot, nil
	}
	return mth(get, 0, n)
}

// path returns PATH(m, D[lo:lo+n]) of RFC 6962 §2.1.1, leaf side first.
func path(get subtrees, m, lo, n uint64) ([]Hash, error) {
	if n <= 1 {
		return nil, nil
	}
	k := largestPow2Below(n)
	var sub []Hash
	var sib Hash
	var err error
	if m < k {
		if sub, err = path(get, m, lo, k); err == nil {
			sib, err = mth(get, lo+k, n-k)
		}
	} else {
		if sub, err = path(get, m-k, lo+k, n-k); err == nil {
			sib, err = mth(get, lo, k)
		}
	}
	if err != nil {
		return nil, err
	}
	return append(sub, sib), nil
}

// subproof returns SUBPROOF(m, D[lo:lo+n], b) of RFC 6962 §2.1.2.
func subproof(get subtrees, m, lo, n uint64, b bool) ([]Hash, error) {
	if m == n {
		if b {
			return nil, nil
		}
		h, err := mth(get, lo, n)
		if err != nil {
			return nil, err
		}
		return []Hash{h}, nil
	}
	k := largestPow2Below(n)
	var sub []Hash
	var sib Hash
	var err error
	if m <= k {
		if sub, err = subproof(get, m, lo, k, b); err == nil {
			sib, err = mth(get, lo+k, n-k)
		}
	} else {
		if sub, err = subproof(get, m-k, lo+k, n-k, false); err == nil {
			sib, err = mth(get, lo, k)
		}
	}
	if err != nil {
		return nil, err
	}
	return append(sub, sib), nil
}

// inclusionProof returns the audit path of entry index in the tree of size size.
func inclusionProof(get subtrees, index, size uint64) ([]Hash, error) {
	if index >= size {
		return nil, fmt.Errorf("policy: audit: entry %d is not in a tree of size %d", index, size)
	}
	return path(get, index, 0, size)
}

// consistencyProof returns the consistency proof between the trees of sizes oldSize and
// newSize: empty when oldSize is 0 or equal to newSize.
func consistencyProof(get subtrees, oldSize, newSize uint64) ([]Hash, error) {
	if oldSize > newSize {
		return nil, fmt.Errorf("policy: audit: no consistency proof from size %d to the smaller size %d", oldSize, newSize)
	}
	if oldSize == 0 || oldSize == newSize {
		return nil, nil
	}
	return subproof(get, oldSize, 0, newSize, true)
}

// A frontier is the compact form of a growing tree: the roots of its perfect subtrees, largest
// (leftmost) first. Adding a leaf merges equal-sized subtrees, as a binary counter carries.
type frontier struct {
	size  uint64
	nodes []Hash
}

// add appends a leaf and calls done (if not nil) for every perfect subtree it completes,
// leaf included, with its level and index.
func (f *frontier) add(leaf Hash, done func(level int, index uint64, h Hash) error) error {
	h := leaf
	idx := f.size
	level := 0
	if done != nil {
		if err := done(0, idx, h); err != nil {
			return err
		}
	}
	for idx&1 == 1 {
		h = NodeHash(f.nodes[len(f.nodes)-1], h)
		f.nodes = f.nodes[:len(f.nodes)-1]
		idx >>= 1
		level++
		if done != nil {
			if err := done(level, idx, h); err != nil {
				return err
			}
		}
	}
	f.nodes = append(f.nodes, h)
	f.size++
	return nil
}

// root returns the root of the tree so far.
func (f *frontier) root() Hash {
	if len(f.nodes) == 0 {
		return emptyRoot
	}
	r := f.nodes[len(f.nodes)-1]
	for i := len(f.nodes) - 2; i >= 0; i-- {
		r = NodeHash(f.nodes[i], r)
	}
	return r
}
