package mhe

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/schemes/bgv"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/quant"
)

func (pr *protocol) NewServer(p agg.Params, cohort int) (agg.Server, error) {
	r, err := pr.shape(p)
	if err != nil {
		return nil, err
	}
	if cohort != len(r.cohort) {
		return nil, fmt.Errorf("mhe: a cohort of %d, but the config maps %d cohort members to the set-up", cohort, len(r.cohort))
	}
	return &server{
		r:       r,
		seen:    make([]bool, cohort+1),
		gone:    make([]bool, cohort+1),
		in:      make([]bool, cohort+1),
		acc:     make([]uint64, 2*r.numCT*ringN),
		pending: map[int]bool{},
	}, nil
}

var _ agg.Server = (*server)(nil)

// server is the server's side of a round: it adds the ciphertexts up as they arrive (phase 0),
// then asks t members for decryption shares and adds those up (phase 1, and further phases if
// some of them do not answer), and decrypts.
type server struct {
	r     *roundShape
	phase int
	done  bool
	err   error
	sum   agg.Sum

	seen []bool // cohort members that sent a message in this phase
	gone []bool // cohort members that were asked and did not answer, or were refused
	in   []bool // cohort members whose ciphertext is in the aggregate
	n    int    // how many

	// acc is the aggregate: the first halves c0 of the numCT ciphertexts, then the second
	// halves c1, modulo q0, in coefficient form.
	acc []uint64

	// The decryption attempt of this phase.
	asked    []int        // cohort members asked, ascending
	pending  map[int]bool // those of them that have not answered
	digest   [32]byte     // of the request
	shares   []uint64     // the sum of the shares received
	answered []int        // cohort members that answered the previous attempt

	// Test hooks.
	choose func(candidates []int, t int) []int // picks the members to ask; nil: chooseFirst
	vec    quant.Vector                        // the decrypted encoding
}

func (s *server) Receive(from int, msg []byte) error {
	if s.done || s.err != nil {
		return fmt.Errorf("%w: round %d is closed", agg.ErrBadMessage, s.r.p.Round)
	}
	if from < 1 || from >= len(s.seen) {
		return fmt.Errorf("%w: no cohort member %d", agg.ErrBadMessage, from)
	}
	if len(msg) >= 8 && [4]byte(msg[:4]) == roundMagic {
		if p := int(binary.LittleEndian.Uint16(msg[6:])); p < s.phase {
			// Late, from an earlier phase: refused, without costing the sender its turn.
			return fmt.Errorf("%w: a message for phase %d, this is phase %d", agg.ErrBadMessage, p, s.phase)
		}
	}
	if s.phase > 0 && !s.pending[from] {
		if slices.Contains(s.asked, from) {
			return fmt.Errorf("%w: a second message from the same client in phase %d", agg.ErrBadMessage, s.phase)
		}
		return fmt.Errorf("%w: cohort member %d was not asked for a share in phase %d", agg.ErrBadMessage, from, s.phase)
	}
	if s.seen[from] {
		return fmt.Errorf("%w: a second message from the same client in phase %d", agg.ErrBadMessage, s.phase)
	}
	s.seen[from] = true // a refused client does not get a second try in the same phase
	member := s.r.cohort[from-1]
	if s.phase == 0 {
		if err := s.r.header(msgCiphertext, 0, member).check(msg); err != nil {
			return err
		}
		if len(msg) != roundHeaderLen+s.r.ctBytes() {
			return fmt.Errorf("%w: ciphertext message of %d bytes, want %d", agg.ErrBadMessage, len(msg), roundHeaderLen+s.r.ctBytes())
		}
		if !addWire(s.acc, msg[roundHeaderLen:]) {
			return fmt.Errorf("%w: ciphertext coefficient of more than 61 bits", agg.ErrBadMessage)
		}
		s.in[from] = true
		s.n++
		return nil
	}
	delete(s.pending, from)
	if err := s.receiveShare(member, msg); err != nil {
		s.gone[from] = true
		return err
	}
	return nil
}

// receiveShare adds a decryption share to the attempt's sum.
func (s *server) receiveShare(member int, msg []byte) error {
	if err := s.r.header(msgShare, s.phase, member).check(msg); err != nil {
		return err
	}
	if want := roundHeaderLen + 32 + s.r.numCT*ringN*8; len(msg) != want {
		return fmt.Errorf("%w: share of %d bytes, want %d", agg.ErrBadMessage, len(msg), want)
	}
	if [32]byte(msg[roundHeaderLen:]) != s.digest {
		return fmt.Errorf("%w: a share for another request", agg.ErrBadMessage)
	}
	if !addWire(s.shares, msg[roundHeaderLen+32:]) {
		return fmt.Errorf("%w: share coefficient of more than 61 bits", agg.ErrBadMessage)
	}
	return nil
}

func (s *server) Next() (map[int][]byte, bool, error) {
	if s.err != nil {
		return nil, false, s.err
	}
	if s.done {
		return nil, true, nil
	}
	t := s.r.pub.cfg.Threshold
	if s.phase > 0 {
		if len(s.pending) == 0 && !slices.ContainsFunc(s.asked, func(i int) bool { return s.gone[i] }) {
			if err := s.decrypt(); err != nil {
				return nil, false, s.fail(err)
			}
			s.done = true
			return nil, true, nil
		}
		for i := range s.pending {
			s.gone[i] = true
		}
		if s.phase == maxAttempts {
			return nil, false, s.fail(fmt.Errorf("mhe: round %d: no %d members answered in %d attempts: %w", s.r.p.Round, t, maxAttempts, agg.ErrTooFewClients))
		}
	}
	// Ask t of the contributors that are still around, those that answered first.
	var fresh, known []int
	for i := 1; i < len(s.in); i++ {
		switch {
		case !s.in[i] || s.gone[i]:
		case slices.Contains(s.asked, i):
			known = append(known, i)
		default:
			fresh = append(fresh, i)
		}
	}
	if len(fresh)+len(known) < t {
		return nil, false, s.fail(fmt.Errorf("mhe: round %d: %d members can decrypt, the threshold is %d: %w", s.r.p.Round, len(fresh)+len(known), t, agg.ErrTooFewClients))
	}
	if s.phase > 0 {
		// The members asked before see a new aggregate: add an encryption of zero.
		if err := s.rerandomize(); err != nil {
			return nil, false, s.fail(err)
		}
	}
	choose := s.choose
	if choose == nil {
		choose = chooseFirst
	}
	rand.Shuffle(len(fresh), func(i, j int) { fresh[i], fresh[j] = fresh[j], fresh[i] })
	s.asked = slices.Sorted(slices.Values(choose(append(known, fresh...), t)))
	s.phase++
	clear(s.seen)
	clear(s.pending)
	for _, i := range s.asked {
		s.pending[i] = true
	}
	if s.shares == nil {
		s.shares = make([]uint64, s.r.numCT*ringN)
	} else {
		clear(s.shares)
	}
	req := s.request()
	out := make(map[int][]byte, t)
	for _, i := range s.asked {
		out[i] = req // shared: clients must not change it
	}
	return out, false, nil
}

// chooseFirst picks the first t candidates: those that answered the previous attempt, then
// the others, in random order.
func chooseFirst(candidates []int, t int) []int { return candidates[:t] }

func (s *server) fail(err error) error {
	s.err = err
	s.acc, s.shares = nil, nil
	return err
}

// request encodes the decryption request of this phase: the members asked and the aggregate's
// second halves.
func (s *server) request() []byte {
	r := s.r
	half := r.numCT * ringN
	w := writer{b: make([]byte, roundHeaderLen, roundHeaderLen+4+4*len(s.asked)+8*half)}
	r.header(msgRequest, s.phase, 0).put(w.b)
	normalize(s.acc[half:])
	w.u32(len(s.asked))
	members := make([]int, len(s.asked))
	for i, idx := range s.asked {
		members[i] = r.cohort[idx-1]
	}
	slices.Sort(members)
	for _, m := range members {
		w.u32(m)
	}
	w.words(s.acc[half:])
	s.digest = sha256.Sum256(w.b)
	return w.b
}

// rerandomize adds an encryption of zero to the aggregate.
func (s *server) rerandomize() error {
	r := s.r
	half := r.numCT * ringN
	pk := r.pub.publicKey()
	encs := make([]*encryptor, workers(r.numCT))
	return parallel(r.numCT, func(w, i int) error {
		if encs[w] == nil {
			encs[w] = newEncryptor(r.pub.p, pk)
		}
		c0, c1 := make([]uint64, ringN), make([]uint64, ringN)
		if err := encs[w].encrypt(nil, c0, c1); err != nil {
			return err
		}
		addWords(s.acc[i*ringN:(i+1)*ringN], c0)
		addWords(s.acc[half+i*ringN:half+(i+1)*ringN], c1)
		return nil
	})
}

// decrypt adds the shares to the aggregate's first halves, decodes every ciphertext, checks
// it and decodes the sum.
func (s *server) decrypt() error {
	r := s.r
	half := r.numCT * ringN
	c0 := s.acc[:half]
	normalize(s.shares)
	addWords(c0, s.shares)
	normalize(c0)
	vec := r.layout.NewVector()
	params := r.pub.p.bgv
	contributors := uint64(s.n)
	k := workers(r.numCT)
	ecds := make([]*bgv.Encoder, k)
	pts := make([]*rlwe.Plaintext, k)
	slots := make([][]uint64, k)
	bad := make([]int, k)
	for w := range bad {
		bad[w] = -1
	}
	err := parallel(r.numCT, func(w, i int) error {
		if ecds[w] == nil {
			ecds[w] = bgv.NewEncoder(params)
			slots[w] = make([]uint64, ringN)
			pts[w] = bgv.NewPlaintext(params, 0)
			pts[w].IsBatched = false
			pts[w].IsNTT = false
		}
		pts[w].Value = ring.Poly{Coeffs: [][]uint64{c0[i*ringN : (i+1)*ringN]}}
		if err := ecds[w].Decode(pts[w], slots[w]); err != nil {
			return err
		}
		if slots[w][slotsPerCT] != contributors && bad[w] < 0 {
			bad[w] = i
		}
		r.fromSlots(slots[w], i, vec)
		return nil
	})
	if err != nil {
		return fmt.Errorf("mhe: decode: %w", err)
	}
	for _, i := range bad {
		if i >= 0 {
			return fmt.Errorf("mhe: round %d: %w: ciphertext %d does not count the %d contributors; a decryption share is wrong", r.p.Round, ErrDecryption, i, contributors)
		}
	}
	values, weights, err := r.layout.Decode(vec)
	if err != nil {
		return err
	}
	s.vec = vec
	s.sum = agg.Sum{Values: values, Weights: weights}
	for i := 1; i < len(s.in); i++ {
		if s.in[i] {
			s.sum.Contributors = append(s.sum.Contributors, i)
		}
	}
	s.acc, s.shares = nil, nil
	return nil
}

func (s *server) Result() (agg.Sum, error) {
	if !s.done {
		return agg.Sum{}, errors.New("mhe: result before the round is done")
	}
	return agg.Sum{
		Values:       slices.Clone(s.sum.Values),
		Weights:      slices.Clone(s.sum.Weights),
		Contributors: slices.Clone(s.sum.Contributors),
	}, nil
}
