// Package lineage is the signed commitment a client makes to the dataset version it trains a
// round on, and that the server records in the round's lineage (server.RoundRecord.Lineage).
//
// The commitment is HMAC-SHA-256, keyed by a secret 32-byte salt the client keeps (NewSalt),
// over a canonical encoding of the training records: their ids, in ascending order, each with
// the SHA-256 of the record's content (label, text, image, tabular fields). The same records
// and the same salt give the same commitment whatever the records' order; any change to one
// record, one more or one less, gives another.
//
// Hiding: without the salt the commitment says nothing about the records. The server, or
// whoever reads the lineage, cannot confirm a guessed dataset, nor whether one particular
// record is in it, by recomputing the commitment: that needs the salt. What it does tell, since
// the same records and the same salt give the same commitment, is whether a client's records
// changed or not between rounds (for a client that keeps its salt).
//
// Binding: a commitment opens to one set of records only. Opening it to two, with the same
// salt or with two salts, would need two inputs with the same HMAC-SHA-256 output, which
// comes down to a collision of SHA-256 (HMAC-SHA-256's collision resistance, which holds for
// every key, so choosing its own salt does not help a client either).
//
// Opening: to prove which dataset version it trained a round on, a partner reveals the salt
// and the records (to an auditor, say); the verifier recomputes the commitment with Open and
// compares it with the one in the round's lineage, whose signature (Verify) ties it to the
// partner, the task, the round and the model. Revealing the salt gives up the hiding of every
// commitment made with it, so a partner reveals it only to those who may see the records
// anyway.
//
// The client signs, with its certificate's Ed25519 key, a domain-separated message binding the
// commitment to the task, the round and the model's layout hash (Message), so that a
// commitment cannot be replayed into another round. The server verifies the signature only: it
// never recomputes the commitment, and never sees the salt.
package lineage

import (
	"bytes"
	"crypto/ed25519"
	"crypto/hmac"
	"crypto/rand"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"

	"github.com/fedweave/fedweave/dataset"
)

// Size is the length of a commitment.
const Size = sha256.Size

// SaltSize is the length of the salt that keys a commitment.
const SaltSize = 32

const (
	commitDomain  = "fedweave/dataset-commitment/v2\x00"
	recordDomain  = "fedweave/dataset-record/v1\x00"
	messageDomain = "fedweave/lineage/v1\x00"
)

// ErrSalt: Commit was given a salt that is not SaltSize bytes.
var ErrSalt = errors.New("lineage: the salt of a dataset commitment must be 32 bytes")

// NewSalt returns a new random salt (SaltSize bytes from crypto/rand). The client keeps it
// secret, and keeps it as long as it may have to open its commitments.
func NewSalt() ([]byte, error) {
	salt := make([]byte, SaltSize)
	if _, err := rand.Read(salt); err != nil {
		return nil, fmt.Errorf("lineage: new salt: %w", err)
	}
	return salt, nil
}

// Commit returns the commitment to the records of d (nil d: no records) under salt, which
// must be SaltSize bytes (else ErrSalt).
func Commit(d *dataset.Dataset, salt []byte) ([]byte, error) {
	if len(salt) != SaltSize {
		return nil, ErrSalt
	}
	type entry struct {
		id   string
		hash [32]byte
	}
	var entries []entry
	if d != nil {
		entries = make([]entry, len(d.Records))
		for i := range d.Records {
			entries[i] = entry{d.Records[i].ID, recordHash(&d.Records[i])}
		}
	}
	slices.SortFunc(entries, func(a, b entry) int {
		if c := bytes.Compare([]byte(a.id), []byte(b.id)); c != 0 {
			return c
		}
		return bytes.Compare(a.hash[:], b.hash[:])
	})
	h := hmac.New(sha256.New, salt)
	h.Write([]byte(commitDomain))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(entries))))
	for _, e := range entries {
		h.Write(lenPrefixed(nil, []byte(e.id)))
		h.Write(e.hash[:])
	}
	return h.Sum(nil), nil
}

// Open reports whether commitment is the commitment to the records of d under salt: how a
// partner that reveals its salt proves the dataset version it committed to. The comparison
// takes constant time. A salt of the wrong length opens nothing.
func Open(d *dataset.Dataset, salt, commitment []byte) bool {
	c, err := Commit(d, salt)
	if err != nil || len(commitment) != Size {
		return false
	}
	return hmac.Equal(c, commitment)
}

// recordHash hashes the content of one record.
func recordHash(r *dataset.Record) [32]byte {
	b := []byte(recordDomain)
	b = binary.BigEndian.AppendUint64(b, uint64(int64(r.Label)))
	b = lenPrefixed(b, []byte(r.Text))
	if im := r.Image; im != nil {
		b = append(b, 1)
		for _, v := range []int{im.C, im.H, im.W} {
			b = binary.BigEndian.AppendUint64(b, uint64(int64(v)))
		}
		b = floats(b, im.Pix)
	} else {
		b = append(b, 0)
	}
	if r.Tabular != nil {
		b = append(b, 1)
		b = floats(b, r.Tabular)
	} else {
		b = append(b, 0)
	}
	return sha256.Sum256(b)
}

func floats(b []byte, v []float32) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(v)))
	for _, x := range v {
		b = binary.BigEndian.AppendUint32(b, math.Float32bits(x))
	}
	return b
}

func lenPrefixed(b, v []byte) []byte {
	b = binary.BigEndian.AppendUint64(b, uint64(len(v)))
	return append(b, v...)
}

// Message is what a client signs: the commitment bound to the task, the round and the model's
// layout hash (as RoundStart carries it).
func Message(task string, round uint64, layoutHash string, commitment []byte) []byte {
	b := []byte(messageDomain)
	b = lenPrefixed(b, []byte(task))
	b = binary.BigEndian.AppendUint64(b, round)
	b = lenPrefixed(b, []byte(layoutHash))
	return lenPrefixed(b, commitment)
}

// Errors Verify returns.
var (
	ErrMalformed = errors.New("lineage: the dataset commitment must be 32 bytes, with a signature")
	ErrKey       = errors.New("lineage: the certificate has no Ed25519 key")
	ErrSignature = errors.New("lineage: the signature of the dataset commitment does not verify")
)

// Verify checks sig, a signature of Message(task, round, layoutHash, commitment), against the
// public key of cert.
func Verify(cert *x509.Certificate, task string, round uint64, layoutHash string, commitment, sig []byte) error {
	if len(commitment) != Size || len(sig) != ed25519.SignatureSize {
		return ErrMalformed
	}
	if cert == nil {
		return ErrKey
	}
	pub, ok := cert.PublicKey.(ed25519.PublicKey)
	if !ok {
		return ErrKey
	}
	if !ed25519.Verify(pub, Message(task, round, layoutHash, commitment), sig) {
		return ErrSignature
	}
	return nil
}
