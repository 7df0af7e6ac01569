package mhe

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"slices"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	lmhe "github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"

	"github.com/fedweave/fedweave/crypto/agg"
)

func (pr *protocol) NewClient(p agg.Params, index int, in agg.Input) (agg.Client, error) {
	r, err := pr.shape(p)
	if err != nil {
		return nil, err
	}
	if err := in.Check(p); err != nil {
		return nil, err
	}
	if err := r.layout.CheckWeights(in.Weights); err != nil {
		return nil, fmt.Errorf("%w: %w", agg.ErrBadInput, err)
	}
	if index < 1 || index > len(r.cohort) {
		return nil, fmt.Errorf("mhe: cohort member %d of %d", index, len(r.cohort))
	}
	member := r.cohort[index-1]
	km := pr.keys.material(member)
	if km == nil {
		return nil, fmt.Errorf("mhe: cohort member %d is set-up member %d, whose key material is not here", index, member)
	}
	return &client{r: r, km: km, in: in, member: member, answered: map[[32]byte]bool{}}, nil
}

var _ agg.Client = (*client)(nil)

// client is one cohort member's side of a round: it sends its encrypted input in phase 0 and
// answers each decryption request addressed to it with a decryption share.
type client struct {
	r      *roundShape
	km     *KeyMaterial
	in     agg.Input
	member int
	next   int // the least phase it may answer
	err    error
	// answered holds the digests of the aggregates it has given a share of: it never gives
	// two shares of one aggregate (see the package doc).
	answered map[[32]byte]bool
	rng      io.Reader // the rounding's randomness (tests); nil: a fresh AES-CTR stream
}

func (c *client) Phase(p int, fromServer []byte) ([]byte, error) {
	if c.err != nil {
		return nil, c.err
	}
	if p < c.next {
		return nil, fmt.Errorf("mhe: phase %d after phase %d", p, c.next-1)
	}
	var out []byte
	var err error
	if p == 0 {
		out, err = c.encrypt()
	} else {
		if c.next == 0 {
			return nil, errors.New("mhe: a decryption request before phase 0")
		}
		out, err = c.decryptShare(p, fromServer)
	}
	if err != nil {
		if !errors.Is(err, agg.ErrBadMessage) {
			c.err = err
		}
		return nil, err
	}
	c.next = p + 1
	return out, nil
}

// encrypt returns the phase-0 message: the input's encoding, encrypted.
func (c *client) encrypt() ([]byte, error) {
	r := c.r
	rng := c.rng
	if rng == nil {
		rng = newPRNG()
	}
	vec, err := r.layout.Encode(c.in.Values, c.in.Weights, rng)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", agg.ErrBadInput, err)
	}
	msg := make([]byte, roundHeaderLen+r.ctBytes())
	r.header(msgCiphertext, 0, c.member).put(msg)
	body := msg[roundHeaderLen:]
	half := len(body) / 2
	pk := r.pub.publicKey()
	k := workers(r.numCT)
	encs := make([]*encryptor, k)
	bufs := make([][3][]uint64, k)
	err = parallel(r.numCT, func(w, i int) error {
		if encs[w] == nil {
			encs[w] = newEncryptor(r.pub.p, pk)
			bufs[w] = [3][]uint64{make([]uint64, ringN), make([]uint64, ringN), make([]uint64, ringN)}
		}
		slots, c0, c1 := bufs[w][0], bufs[w][1], bufs[w][2]
		r.toSlots(vec, i, slots)
		if err := encs[w].encrypt(slots, c0, c1); err != nil {
			return err
		}
		putWords(body[8*ringN*i:], c0)
		putWords(body[half+8*ringN*i:], c1)
		return nil
	})
	if err != nil {
		return nil, fmt.Errorf("mhe: encrypt: %w", err)
	}
	return msg, nil
}

// request is a decoded decryption request.
type request struct {
	phase   int
	members []int    // the t members whose shares the server combines, ascending
	c1      []uint64 // the aggregate's second halves, numCT polynomials
	digest  [32]byte // of the whole message
	c1Hash  [32]byte // of the polynomials alone
}

// decodeRequest decodes and validates a decryption request of phase for member.
func (r *roundShape) decodeRequest(phase, member int, msg []byte) (*request, error) {
	if err := r.header(msgRequest, phase, 0).check(msg); err != nil {
		return nil, err
	}
	rd := reader{b: msg[roundHeaderLen:]}
	t := r.pub.cfg.Threshold
	if n := rd.u32(); rd.err == nil && n != t {
		return nil, fmt.Errorf("%w: a request for %d shares, the threshold is %d", agg.ErrBadMessage, n, t)
	}
	req := &request{phase: phase, members: make([]int, t)}
	for i := range req.members {
		m := rd.u32()
		if rd.err == nil && (!r.pub.hasMember(m) || i > 0 && m <= req.members[i-1]) {
			return nil, fmt.Errorf("%w: a request with member %d out of place", agg.ErrBadMessage, m)
		}
		req.members[i] = m
	}
	if rd.err != nil {
		return nil, rd.err
	}
	if len(rd.b) != r.numCT*ringN*8 {
		return nil, fmt.Errorf("%w: request of %d bytes, want %d", agg.ErrBadMessage, len(msg), len(msg)-len(rd.b)+r.numCT*ringN*8)
	}
	req.c1Hash = sha256.Sum256(rd.b)
	req.c1 = rd.words(r.numCT*ringN, q0)
	if err := rd.end(); err != nil {
		return nil, err
	}
	if _, ok := slices.BinarySearch(req.members, member); !ok {
		return nil, fmt.Errorf("%w: a request that does not count this member", agg.ErrBadMessage)
	}
	req.digest = sha256.Sum256(msg)
	return req, nil
}

// decryptShare answers a decryption request with the member's share: for every ciphertext,
// λ·s_i·c1 + e, where λ·s_i is its Shamir share with the Lagrange coefficient of the request's
// members (lattigo's Combiner) and e the flooding noise (lattigo's KeySwitchProtocol, to the
// zero key).
func (c *client) decryptShare(phase int, msg []byte) ([]byte, error) {
	r := c.r
	req, err := r.decodeRequest(phase, c.member, msg)
	if err != nil {
		return nil, err
	}
	if c.answered[req.c1Hash] {
		// A second share of the same aggregate, for another set of members, would let the
		// server solve for the flooding noise and then for this member's key share.
		return nil, fmt.Errorf("%w: a second request for the same aggregate", agg.ErrBadMessage)
	}
	c.answered[req.c1Hash] = true

	params := r.pub.p.bgv
	roster := make([]lmhe.ShamirPublicPoint, len(r.pub.members))
	for i, m := range r.pub.members {
		roster[i] = lmhe.ShamirPublicPoint(m)
	}
	active := make([]lmhe.ShamirPublicPoint, len(req.members))
	for i, m := range req.members {
		active[i] = lmhe.ShamirPublicPoint(m)
	}
	own := lmhe.ShamirPublicPoint(c.member)
	cmb := lmhe.NewCombiner(params.Parameters, own, roster, r.pub.cfg.Threshold)
	sk := rlwe.NewSecretKey(params)
	defer clear(sk.Value.Q.Coeffs[0])
	defer clear(sk.Value.P.Coeffs[0])
	if err := cmb.GenAdditiveShare(active, own, lmhe.ShamirSecretShare{Poly: c.km.share}, sk); err != nil {
		return nil, fmt.Errorf("mhe: %w", err)
	}
	zero := rlwe.NewSecretKey(params)
	sigma := r.pub.p.sigma
	cks, err := lmhe.NewKeySwitchProtocol(params, ring.DiscreteGaussian{Sigma: sigma, Bound: 6 * sigma})
	if err != nil {
		return nil, fmt.Errorf("mhe: %w", err)
	}

	out := make([]byte, roundHeaderLen+32+r.numCT*ringN*8)
	r.header(msgShare, phase, c.member).put(out)
	copy(out[roundHeaderLen:], req.digest[:])
	body := out[roundHeaderLen+32:]
	ringQ := params.RingQ()
	k := workers(r.numCT)
	protos := make([]*lmhe.KeySwitchProtocol, k)
	shares := make([][]uint64, k)
	err = parallel(r.numCT, func(w, i int) error {
		if protos[w] == nil {
			p := cks.ShallowCopy()
			protos[w] = &p
			shares[w] = make([]uint64, ringN)
		}
		c1 := ring.Poly{Coeffs: [][]uint64{req.c1[i*ringN : (i+1)*ringN]}}
		ct := &rlwe.Ciphertext{Element: rlwe.Element[ring.Poly]{
			Value:    []ring.Poly{c1, c1},
			MetaData: &rlwe.MetaData{CiphertextMetaData: rlwe.CiphertextMetaData{IsNTT: false}},
		}}
		share := lmhe.KeySwitchShare{Value: ring.Poly{Coeffs: [][]uint64{shares[w]}}}
		protos[w].GenShare(sk, zero, ct, &share)
		ringQ.Reduce(share.Value, share.Value)
		putWords(body[8*ringN*i:], shares[w])
		return nil
	})
	if err != nil {
		return nil, err
	}
	return out, nil
}
