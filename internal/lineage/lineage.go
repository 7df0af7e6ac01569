// Package lineage is the signed commitment a client makes to the dataset version it trains a
// round on, and that the server records in the round's lineage (server.RoundRecord.Lineage).
//
// The commitment is SHA-256 over a canonical encoding of the training records: their ids, in
// ascending order, each with the SHA-256 of the record's content (label, text, image, tabular
// fields). The same records give the same commitment whatever their order; any change to one
// record, one more or one less, gives another. The client signs, with its certificate's
// Ed25519 key, a domain-separated message binding the commitment to the task, the round and
// the model's layout hash, so that a commitment cannot be replayed into another round.
package lineage

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"crypto/x509"
	"encoding/binary"
	"errors"
	"math"
	"slices"

	"github.com/fedweave/fedweave/dataset"
)

// Size is the length of a commitment.
const Size = sha256.Size

const (
	commitDomain  = "fedweave/dataset-commitment/v1\x00"
	recordDomain  = "fedweave/dataset-record/v1\x00"
	messageDomain = "fedweave/lineage/v1\x00"
)

// Commit returns the commitment to the records of d (nil d: no records).
func Commit(d *dataset.Dataset) []byte {
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
	h := sha256.New()
	h.Write([]byte(commitDomain))
	h.Write(binary.BigEndian.AppendUint64(nil, uint64(len(entries))))
	for _, e := range entries {
		h.Write(lenPrefixed(nil, []byte(e.id)))
		h.Write(e.hash[:])
	}
	return h.Sum(nil)
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
