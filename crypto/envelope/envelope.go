// Package envelope is fedweave's key hierarchy for data at rest, and its erasure by
// crypto-shredding: data is erased by destroying the one key that could decrypt it, so that
// every copy of its ciphertext, stale copies and backups included, becomes unreadable.
//
// Start with [NewRootKeyFile] and [CreateKeyring] (once), then [OpenKeyring]. A store asks the
// keyring for a data key per data subject, org, round or checkpoint ([Keyring.NewDataKey]),
// keeps the wrapped data key beside its data, and seals records and blobs with [Seal] under
// that data key, with the record's storage key as associated data. To erase, it calls
// [Keyring.Shred] on the wrapped data key, then deletes the data.
//
// # Hierarchy
//
//	root key               RootKey: a key file (FileRootKey), or a KMS behind the same interface
//	└─ keyring file        the epoch key trees and the pseudonym key, wrapped by the root key;
//	   │                   a small file of its own, kept apart from the store and its backups
//	   └─ epoch key tree   a GGM tree over 2^64 slots: slot s of epoch e yields the
//	      │                key-encryption key KEK(e, s) (AES-256 as the tree's PRG)
//	      └─ data key      random 256 bits, wrapped under KEK(e, s) at a random slot s; the
//	         │             wrapped form (77 bytes) is stored beside the data
//	         └─ data       AES-256-GCM under the data key, random 96-bit nonce, the storage
//	                       key (or another name the caller fixes) as associated data
//
// Under all of it, fedweave's stores (internal/store) keep badger's own encryption on, with a
// master key from another key file: a second layer, which erases nothing (a store's deleted
// values stay on disk, readable with the master key, until compaction).
//
// # Shredding
//
// [Keyring.Shred] punctures the current epoch's tree at the data key's slot: the tree node that
// covered the slot is replaced by the siblings of the path from that node down to the slot (at
// most 64 nodes), and the keyring file is replaced (a new file written and synced beside it,
// renamed over it, its directory synced). The old node, from which KEK(e, s) could be derived,
// existed in the old keyring file and in memory only; after Shred it exists nowhere. The store
// and every copy of it hold the data key only wrapped under KEK(e, s); the root key wraps only
// the keyring file; so neither the store's master key, nor the root key, nor both together
// with the current keyring, yield the shredded data key or the data it sealed. Every other
// slot is still derivable: a copy of the store taken before the erasure (a backup) still
// opens with the current keys, except for what was shredded. Shred is idempotent, and a crash
// leaves the old keyring file or the new one, never a mix, and never loses another key.
//
// Rotation ([Keyring.BeginRotation], [Keyring.Rewrap], [Keyring.FinishRotation]) re-wraps
// every surviving data key under a fresh epoch tree and then drops the old epoch from the
// keyring. It compacts the punctures (a keyring grows by up to 64 nodes of 41 bytes per shred),
// and it makes every copy of the store taken before it wholly unreadable with the current
// keys, which is what to do when old backups must go too. During a rotation the keyring holds
// both epochs, so a crash in the middle loses nothing: reopen, see [Keyring.Rotating], and
// finish.
//
// # What shredding does not reach
//
//   - Old keyring files. Replacing a file frees its blocks without overwriting them (and a
//     journaling file system, an SSD's wear levelling or a snapshot may keep more copies);
//     so does a backup of the keyring file. Whoever recovers a keyring file from before a
//     shred and holds the root key can derive the shredded key again. Keep the keyring out of
//     backups (or back it up with the retention the erasure promises), and after an erasure
//     that must also defeat such copies, move the keyring to a new root key
//     ([Keyring.SetRoot]) and destroy the old one (in a KMS: destroy the key version).
//   - The pseudonym key ([Keyring.Pseudonym]) survives shredding and rotation, so that
//     pseudonymous storage keys stay stable. Whoever holds it can confirm a guessed
//     identifier against a stale copy's keys (that a record of it existed), not read it.
//   - Plaintext that was in memory, in a process's swap, or that already left (a model
//     trained on the data, a file someone exported). Shredding erases stored ciphertext only.
//
// Keys are opaque: a [Key] prints as a placeholder, compares in constant time with
// [Key.Equal], and has no accessor for its bytes. No error of this package carries key
// material.
package envelope

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"crypto/subtle"
	"errors"
	"fmt"
)

// KeySize is the size of every key of this package, in bytes (AES-256).
const KeySize = 32

// Errors. Callers compare with [errors.Is].
var (
	// ErrDecrypt means a sealed value or a wrapped key does not authenticate: another key,
	// other associated data, or changed bytes.
	ErrDecrypt = errors.New("envelope: authentication failed: wrong key, wrong associated data or changed bytes")

	// ErrShredded means a wrapped data key was shredded (or its epoch retired by a
	// rotation): nothing that exists can unwrap it any more.
	ErrShredded = errors.New("envelope: data key shredded")

	// ErrMalformed means a sealed value, a wrapped key, a key file or a keyring file is not
	// in this package's format.
	ErrMalformed = errors.New("envelope: malformed input")
)

// A Key is a 256-bit symmetric key. Its zero value is not a usable key; make one with
// [NewKey] or get one from a [Keyring]. It prints as a placeholder with every fmt verb.
type Key struct {
	k   [KeySize]byte
	set bool
}

// NewKey returns a fresh random key.
func NewKey() Key {
	var k Key
	rand.Read(k.k[:]) // never fails (crypto/rand crashes the program instead)
	k.set = true
	return k
}

// Equal reports whether k and o are the same key, in constant time.
func (k Key) Equal(o Key) bool {
	return subtle.ConstantTimeCompare(k.k[:], o.k[:]) == 1 && k.set == o.set
}

// IsZero reports whether k is the zero Key, which is no key.
func (k Key) IsZero() bool { return !k.set }

// String returns a placeholder: keys are never printed.
func (k Key) String() string { return "envelope.Key(redacted)" }

// GoString returns the same placeholder as String.
func (k Key) GoString() string { return k.String() }

// Format prints the placeholder for every verb, so that %x or %v never show the bytes.
func (k Key) Format(f fmt.State, _ rune) { f.Write([]byte(k.String())) }

// Sealed values: version byte, 96-bit nonce, AES-256-GCM ciphertext and tag.
const (
	sealVersion = 1
	nonceSize   = 12
	tagSize     = 16
	// Overhead is how many bytes Seal adds to a plaintext.
	Overhead = 1 + nonceSize + tagSize
)

func gcm(k Key) cipher.AEAD {
	if !k.set {
		panic("envelope: use of the zero Key")
	}
	b, err := aes.NewCipher(k.k[:])
	if err != nil {
		panic(err) // the key size is fixed
	}
	a, err := cipher.NewGCM(b)
	if err != nil {
		panic(err)
	}
	return a
}

// Seal encrypts and authenticates plaintext under k with AES-256-GCM and a random nonce, binding
// ad (associated data: the storage key under which the result is kept, say), and returns a new
// slice of len(plaintext)+[Overhead] bytes. It panics on the zero Key. A random 96-bit nonce
// keeps the chance of a repeat negligible up to about 2^32 seals under one key.
func Seal(k Key, plaintext, ad []byte) []byte {
	a := gcm(k)
	out := make([]byte, 1+nonceSize, Overhead+len(plaintext))
	out[0] = sealVersion
	rand.Read(out[1:])
	return a.Seal(out, out[1:1+nonceSize], plaintext, ad)
}

// Open decrypts what [Seal] returned, with the same key and associated data, into a new slice.
// It fails with [ErrDecrypt] when sealed does not authenticate, and [ErrMalformed] when it is not
// a sealed value at all.
func Open(k Key, sealed, ad []byte) ([]byte, error) {
	if len(sealed) < Overhead || sealed[0] != sealVersion {
		return nil, fmt.Errorf("%w: not a sealed value", ErrMalformed)
	}
	pt, err := gcm(k).Open(nil, sealed[1:1+nonceSize], sealed[1+nonceSize:], ad)
	if err != nil {
		return nil, ErrDecrypt
	}
	return pt, nil
}
