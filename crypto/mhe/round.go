package mhe

import (
	"errors"
	"fmt"
	"slices"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/quant"
)

// Config is a task's choice of round parameters. The server and every client must use the same.
type Config struct {
	// Quant is how inputs are encoded; its Bits, with the cohort size and the round's
	// MaxWeight, must fit the sums the set-up's plaintext modulus was sized for.
	Quant quant.Config
	// Cohort maps the round's cohort to the set-up's members: cohort member i (1-based, as
	// package agg numbers them) is set-up member Cohort[i-1]. nil means the set-up's members in
	// order, so that cohort member i is the i-th member of PublicSetup.Members.
	Cohort []int
}

// ErrDecryption reports a decryption that failed its check: a decryption share was wrong,
// because a member's key share is corrupt or a share was altered on the way. The round must
// be aborted; what the server holds is then noise. The check catches a random error in a
// share with probability 1 - 1/T per ciphertext; it is no proof against a member that
// crafts its share (see the package doc).
var ErrDecryption = errors.New("mhe: decryption failed its check")

// New returns the threshold BGV protocol ("mhe") of one task under the key set keys: the
// server passes its *PublicSetup, a client its *KeyMaterial, an in-memory federation a
// KeyRing. NewServer needs a cohort of the size that cfg.Cohort (or else the set-up's member
// list) gives; NewClient(p, i, in) needs the key material of the set-up member that cohort
// member i stands for. Both refuse a round whose sums the set-up's plaintext modulus cannot
// hold (see Config.Quant).
func New(cfg Config, keys Keys) agg.Protocol {
	return &protocol{cfg: cfg, keys: keys}
}

type protocol struct {
	cfg  Config
	keys Keys
}

var _ agg.Protocol = (*protocol)(nil)

func (*protocol) Name() string { return "mhe" }

// roundShape is what the server and the clients of a round derive alike.
type roundShape struct {
	pub    *PublicSetup
	p      agg.Params
	layout quant.Layout
	cohort []int // set-up member of each cohort position
	numCT  int   // ciphertexts of an encoding
}

// shape returns the shape of a round of p.
func (pr *protocol) shape(p agg.Params) (*roundShape, error) {
	if pr.keys == nil {
		return nil, errors.New("mhe: no keys")
	}
	pub := pr.keys.public()
	if pub == nil {
		return nil, errors.New("mhe: no keys")
	}
	if kr, ok := pr.keys.(KeyRing); ok {
		for _, km := range kr {
			if km != nil && km.pub.id != pub.id {
				return nil, errors.New("mhe: a key ring of several key sets")
			}
		}
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	cohort := pr.cfg.Cohort
	if cohort == nil {
		cohort = pub.members
	}
	if len(cohort) < 1 {
		return nil, errors.New("mhe: an empty cohort")
	}
	seen := make(map[int]bool, len(cohort))
	for i, m := range cohort {
		if !pub.hasMember(m) || seen[m] {
			return nil, fmt.Errorf("mhe: cohort member %d is set-up member %d, which is not a member or appears twice", i+1, m)
		}
		seen[m] = true
	}
	bits := pr.cfg.Quant.Bits
	if bits == 0 {
		bits = quant.DefaultBits
	}
	if bits > pub.p.capBits {
		return nil, fmt.Errorf("mhe: %d-bit values do not fit the set-up's %d-bit sums", bits, pub.p.capBits)
	}
	n := uint64(len(cohort))
	maxWeight := p.MaxWeight
	if maxWeight == 0 {
		// No declared bound: the widest weights the set-up's modulus holds for this cohort.
		maxWeight = (uint64(1) << (pub.p.capBits - bits)) / n
		if maxWeight == 0 {
			return nil, fmt.Errorf("mhe: a cohort of %d is too large for the set-up's %d-bit sums of %d-bit values", n, pub.p.capBits, bits)
		}
	}
	if maxWeight > 1<<40 || bits+ceilLog2(n*maxWeight) > pub.p.capBits {
		return nil, fmt.Errorf("mhe: a cohort of %d with weights up to %d needs sums of %d bits; the set-up's plaintext modulus holds %d: declare a smaller MaxWeight, or run a new set-up with a larger one", n, maxWeight, bits+ceilLog2(n*min(maxWeight, 1<<40)), pub.p.capBits)
	}
	layout, err := quant.NewLayout(pr.cfg.Quant, p.Groups, p.NumGroups, len(cohort), maxWeight)
	if err != nil {
		return nil, fmt.Errorf("mhe: %w", err)
	}
	return &roundShape{
		pub: pub, p: p, layout: layout, cohort: slices.Clone(cohort),
		numCT: (layout.Len() + slotsPerCT - 1) / slotsPerCT,
	}, nil
}

// header returns the header of a round message of type typ in phase, from member (0: the
// server).
func (r *roundShape) header(typ byte, phase, member int) roundHeader {
	return roundHeader{
		typ: typ, phase: phase, round: r.p.Round, layout: r.p.LayoutHash,
		keyID: r.pub.id, member: member, count: r.numCT,
	}
}

// ctBytes is the size of the ciphertexts of one encoding: numCT pairs of polynomials.
func (r *roundShape) ctBytes() int { return 2 * r.numCT * ringN * 8 }

// toSlots fills the slot values of ciphertext k from the words of an encoding: each word
// read as a signed integer (values) and reduced modulo T; the last slot is the check, 1.
func (r *roundShape) toSlots(v quant.Vector, k int, slots []uint64) {
	t := r.pub.p.t
	lo := k * slotsPerCT
	hi := min(lo+slotsPerCT, v.Len())
	clear(slots)
	for i := lo; i < hi; i++ {
		var x int64
		if v.Wide() {
			x = int64(v.U64[i])
		} else {
			x = int64(int32(v.U32[i]))
		}
		if x < 0 {
			slots[i-lo] = t - uint64(-x)
		} else {
			slots[i-lo] = uint64(x)
		}
	}
	slots[slotsPerCT] = 1
}

// fromSlots writes the words of ciphertext k's slots into the encoding v, each slot read as
// an integer in (-T/2, T/2).
func (r *roundShape) fromSlots(slots []uint64, k int, v quant.Vector) {
	t := r.pub.p.t
	lo := k * slotsPerCT
	hi := min(lo+slotsPerCT, v.Len())
	for i := lo; i < hi; i++ {
		x := int64(slots[i-lo])
		if slots[i-lo] > t/2 {
			x -= int64(t)
		}
		if v.Wide() {
			v.U64[i] = uint64(x)
		} else {
			v.U32[i] = uint32(x)
		}
	}
}
