package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ed25519"
	"crypto/rand"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/dp"
	"github.com/fedweave/fedweave/crypto/quant"
)

// NewClient returns the side of cohort member index of a round. It checks in (agg.ErrBadInput
// for non-finite values, and for weights that are not whole numbers within p.MaxWeight, or
// within what 64-bit sums allow when p.MaxWeight is 0) and keeps it, unchanged, until phase 2:
// the caller must not modify in.Values or in.Weights before then.
func (pr *protocol) NewClient(p agg.Params, index int, in agg.Input) (agg.Client, error) {
	if err := pr.cfg.validate(); err != nil {
		return nil, err
	}
	s, _ := suiteFor(pr.cfg.KEM)
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if index < 1 || index > MaxCohort {
		return nil, fmt.Errorf("secagg: cohort index %d, want 1 to %d", index, MaxCohort)
	}
	if err := in.Check(p); err != nil {
		return nil, err
	}
	if err := checkWeights(pr.cfg.Quant, p.MaxWeight, in.Weights); err != nil {
		return nil, err
	}
	if pr.self == nil || pr.self.Sign == nil || len(pr.self.CertDER) == 0 || len(pr.self.CertDER) > maxCert {
		return nil, errors.New("secagg: a client needs an identity: a certificate of at most 16 KiB and a signing function")
	}
	if pr.verify == nil {
		return nil, errors.New("secagg: a client needs a Verifier for its neighbours' certificates")
	}
	own, err := pr.verify(pr.self.CertDER)
	if err != nil {
		return nil, fmt.Errorf("secagg: the client's own certificate is refused by its Verifier: %w", err)
	}
	return &client{cfg: pr.cfg, self: pr.self, verify: pr.verify, suite: s, p: p, index: index, in: in, ownPub: own}, nil
}

// checkWeights refuses weights that no layout of this round can encode, before the client
// knows the cohort size.
func checkWeights(cfg quant.Config, maxWeight uint64, weights []float64) error {
	if maxWeight == 0 {
		bitsV := cfg.Bits
		if bitsV == 0 {
			bitsV = quant.DefaultBits
		}
		maxWeight = min(uint64(1)<<(64-bitsV), 1<<53)
	}
	for g, w := range weights {
		if w != math.Trunc(w) || w > float64(maxWeight) {
			return fmt.Errorf("%w: weight %d is %v, want a whole number from 0 to %d", agg.ErrBadInput, g, w, maxWeight)
		}
	}
	return nil
}

type client struct {
	cfg    Config
	self   *Identity
	verify Verifier
	suite  suite
	p      agg.Params
	index  int
	in     agg.Input
	ownPub ed25519.PublicKey

	next int   // the phase due next
	err  error // why the client stopped, if it did: it then refuses every phase

	// Phase 0.
	cPriv, sPriv privKey
	cPub, sPub   []byte
	sigma        scalar

	// Phase 1.
	n, k, t   int
	peers     map[int]*peer // the neighbours that advertised
	ownB      scalar        // the client's own share of b_i
	ownSigma  scalar        // and of σ_i
	b         scalar
	sharedSet map[int]bool // phase 2: the neighbours that shared

	// Phase 2.
	shared []int // the neighbours that shared, ascending
	held   map[int]*heldShares

	// Tests: the client's encoded input, before masking, when keepEncoding is set.
	keepEncoding bool
	plain        quant.Vector // tests: the encoding before noise, when Config.Noise is set
	encoding     quant.Vector
}

// peer is what a client knows of one neighbour.
type peer struct {
	cpk, spk []byte
	cSecret  []byte   // X25519: the agreement of the c keys, which seals and opens shares
	pairKey  *maskKey // the key of the pairwise mask, once known
}

// heldShares are a client's shares of one neighbour's secrets.
type heldShares struct{ b, sigma scalar }

var _ agg.Client = (*client)(nil)

// Format prints the client's index and phase, never its secrets.
func (c *client) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, "secagg.client(member %d, round %d, phase %d)", c.index, c.p.Round, c.next)
}

func (c *client) Phase(phase int, fromServer []byte) ([]byte, error) {
	if c.err != nil {
		return nil, fmt.Errorf("secagg: member %d stopped in phase %d: %w", c.index, c.next, c.err)
	}
	if phase != c.next {
		// A phase again, or out of order, is refused without stopping the client: its state
		// is unchanged and it still answers the phase that is due.
		return nil, fmt.Errorf("%w: secagg: phase %d asked of member %d, which is due to answer phase %d", agg.ErrBadMessage, phase, c.index, c.next)
	}
	var out []byte
	var err error
	switch phase {
	case 0:
		out, err = c.advertise(fromServer)
	case 1:
		out, err = c.share(fromServer)
	case 2:
		out, err = c.mask(fromServer)
	case 3:
		out, err = c.unmask(fromServer)
	default:
		err = fmt.Errorf("secagg: no phase %d", phase)
	}
	if err != nil {
		c.err = err
		c.wipe()
		return nil, err
	}
	c.next++
	if phase == 3 {
		c.wipe()
	}
	return out, nil
}

// wipe zeroes the client's secrets and drops its state.
func (c *client) wipe() {
	c.sigma.zero()
	c.b.zero()
	c.ownB.zero()
	c.ownSigma.zero()
	c.cPriv, c.sPriv = privKey{}, privKey{}
	for _, p := range c.peers {
		if p.pairKey != nil {
			clear(p.pairKey.k[:])
		}
		clear(p.cSecret)
	}
	for _, h := range c.held {
		h.b.zero()
		h.sigma.zero()
	}
	c.peers, c.held = nil, nil
	c.in = agg.Input{}
}

func (c *client) header(typ msgType) header { return headerOf(c.p, typ, c.index) }

// advertise draws the client's keys and returns its signed advertisement.
func (c *client) advertise(fromServer []byte) ([]byte, error) {
	if len(fromServer) != 0 {
		return nil, fmt.Errorf("%w: secagg: a server message in phase 0", agg.ErrBadMessage)
	}
	var err error
	c.cPriv, c.cPub, err = c.suite.newKey()
	if err != nil {
		return nil, fmt.Errorf("secagg: key generation: %w", err)
	}
	c.sigma = randomScalar()
	c.sPriv, c.sPub = sKeyPair(c.suite, c.sigma, c.p.Round, c.p.LayoutHash, c.index)
	return encodeAdvert(c.header(typeAdvert), c.suite.id(), c.cPub, c.sPub, c.self.CertDER, c.self.Sign), nil
}

// Cohort returns the cohort size the server runs the round with, as its neighbours message
// says (0 before that message): a caller that was told the cohort another way checks the two
// agree before anything of its input leaves.
func (c *client) Cohort() int { return c.n }

// share checks the neighbours' adverts and returns the client's shares, sealed for each.
func (c *client) share(fromServer []byte) ([]byte, error) {
	m, err := decodeNeighbours(fromServer, c.header(typeNeighbours))
	if err != nil {
		return nil, err
	}
	k, t, err := c.cfg.Shape(m.n)
	if err != nil {
		return nil, err
	}
	if m.k != k || m.t != t || m.kem != c.suite.id() {
		return nil, fmt.Errorf("%w: secagg: the server runs %d neighbours, %d shares and KEM %d; this client's configuration says %d, %d and %s for a cohort of %d",
			agg.ErrBadMessage, m.k, m.t, m.kem, k, t, c.suite.name(), m.n)
	}
	c.n, c.k, c.t = m.n, k, t
	g := newGraph(c.p.Round, c.p.LayoutHash, c.n, c.k)
	if 1+len(m.order) < t {
		return nil, fmt.Errorf("secagg: %d of member %d's neighbours advertised keys, fewer than the %d it needs: %w", len(m.order), c.index, t-1, agg.ErrTooFewClients)
	}

	// Every advert must be a neighbour's, verify, and bring keys nobody else has.
	c.peers = make(map[int]*peer, len(m.order))
	keys := map[string]bool{string(c.cPub): true, string(c.sPub): true}
	certKeys := map[string]bool{string(c.ownPub): true}
	for _, j := range m.order {
		if !g.adjacent(c.index, j) {
			return nil, fmt.Errorf("%w: secagg: the advert of member %d, not a neighbour of %d", agg.ErrBadMessage, j, c.index)
		}
		a, err := decodeAdvert(m.adverts[j], headerOf(c.p, typeAdvert, j), c.suite)
		if err != nil {
			return nil, fmt.Errorf("secagg: advert of neighbour %d: %w", j, err)
		}
		pub, err := a.verify(c.verify)
		if err != nil {
			return nil, err
		}
		if certKeys[string(pub)] {
			return nil, fmt.Errorf("%w: %w: neighbour %d presents a certificate that another member presents too", agg.ErrBadMessage, ErrForgedAdvert, j)
		}
		if keys[string(a.cpk)] || keys[string(a.spk)] {
			return nil, fmt.Errorf("%w: %w: neighbour %d advertises a key that another member advertises too", agg.ErrBadMessage, ErrForgedAdvert, j)
		}
		certKeys[string(pub)] = true
		keys[string(a.cpk)], keys[string(a.spk)] = true, true
		c.peers[j] = &peer{cpk: slices.Clone(a.cpk), spk: slices.Clone(a.spk)}
	}

	// Share b_i and σ_i over the holders; keep the client's own shares.
	c.b = randomScalar()
	holders := g.holders(c.index)
	bShares := split(c.b, t, len(holders))
	sShares := split(c.sigma, t, len(holders))
	defer func() {
		for i := range bShares {
			bShares[i].zero()
			sShares[i].zero()
		}
	}()
	own := g.position(c.index, c.index)
	c.ownB = scalar{bShares[own-1].s.Copy()}
	c.ownSigma = scalar{sShares[own-1].s.Copy()}

	entries := make([]sealedEntry, 0, len(m.order))
	var box [shareBox]byte
	defer clear(box[:])
	for _, j := range m.order {
		pr := c.peers[j]
		pos := g.position(c.index, j)
		bb, sb := bShares[pos-1].bytes(), sShares[pos-1].bytes()
		copy(box[:32], bb[:])
		copy(box[32:], sb[:])
		clear(bb[:])
		clear(sb[:])
		var pairCT []byte
		if c.suite.ctSize() > 0 && c.index < j {
			seed := encapSeed(c.suite, c.sigma, c.p.Round, c.p.LayoutHash, c.index, j)
			ct, ss, err := c.suite.sendSeeded(pr.spk, seed)
			clear(seed)
			if err != nil {
				return nil, fmt.Errorf("%w: %w: neighbour %d's s key: %v", agg.ErrBadMessage, ErrForgedAdvert, j, err)
			}
			k := pairMaskKey(ss, c.p.Round, c.p.LayoutHash, c.index, j)
			clear(ss)
			pr.pairKey, pairCT = &k, ct
		}
		ct, ss, err := c.suite.send(c.cPriv, pr.cpk)
		if err != nil {
			return nil, fmt.Errorf("%w: %w: neighbour %d's c key: %v", agg.ErrBadMessage, ErrForgedAdvert, j, err)
		}
		entries = append(entries, sealedEntry{peer: j, data: seal(ss, ct, c.p.Round, c.p.LayoutHash, c.index, j, &box, pairCT)})
		if c.suite.ctSize() == 0 {
			// X25519 agreements are static: the same secret opens j's shares in phase 2, and
			// the pairwise secret is already known.
			pr.cSecret = ss
			ss, err := c.suite.receive(c.sPriv, pr.spk, nil)
			if err != nil {
				return nil, fmt.Errorf("%w: %w: neighbour %d's s key: %v", agg.ErrBadMessage, ErrForgedAdvert, j, err)
			}
			k := pairMaskKey(ss, c.p.Round, c.p.LayoutHash, c.index, j)
			clear(ss)
			pr.pairKey = &k
		} else {
			clear(ss)
		}
	}
	return encodeEntries(c.header(typeShares), entries), nil
}

// mask opens the shares the neighbours sent and returns the masked input.
func (c *client) mask(fromServer []byte) ([]byte, error) {
	hybrid := c.suite.ctSize() > 0
	entries, err := decodeEntries(fromServer, c.header(typeRouted), c.k, func(j int) int {
		if c.peers[j] == nil {
			return 0
		}
		return sealedSize(c.suite, hybrid && j < c.index)
	})
	if err != nil {
		return nil, err
	}
	if 1+len(entries) < c.t {
		return nil, fmt.Errorf("secagg: %d of member %d's neighbours shared, fewer than the %d it needs: %w", len(entries), c.index, c.t-1, agg.ErrTooFewClients)
	}
	c.held = make(map[int]*heldShares, len(entries))
	c.sharedSet = make(map[int]bool, len(entries))
	masks := make([]mask, 0, 1+len(entries))
	for _, e := range entries {
		j, pr := e.peer, c.peers[e.peer]
		ct, sealed, pairCT, _ := splitSealed(c.suite, e.data, hybrid && j < c.index) // sizes checked
		ss := pr.cSecret
		if ss == nil {
			if ss, err = c.suite.receive(c.cPriv, pr.cpk, ct); err != nil {
				return nil, fmt.Errorf("%w: secagg: the shares from neighbour %d do not decapsulate", agg.ErrBadMessage, j)
			}
			defer clear(ss)
		}
		box, err := open(ss, c.p.Round, c.p.LayoutHash, j, c.index, sealed, pairCT)
		if err != nil {
			return nil, fmt.Errorf("%w: secagg: the shares from neighbour %d fail authentication", agg.ErrBadMessage, j)
		}
		hb, ok1 := scalarFrom(box[:32])
		hs, ok2 := scalarFrom(box[32:])
		clear(box[:])
		if !ok1 || !ok2 {
			return nil, fmt.Errorf("%w: secagg: the shares from neighbour %d are not scalars", agg.ErrBadMessage, j)
		}
		c.held[j] = &heldShares{b: hb, sigma: hs}
		if pr.pairKey == nil {
			ss, err := c.suite.receive(c.sPriv, pr.spk, pairCT)
			if err != nil {
				return nil, fmt.Errorf("%w: secagg: no pairwise secret with neighbour %d: %v", agg.ErrBadMessage, j, err)
			}
			k := pairMaskKey(ss, c.p.Round, c.p.LayoutHash, c.index, j)
			clear(ss)
			pr.pairKey = &k
		}
		masks = append(masks, mask{key: pr.pairKey, neg: c.index > j})
		c.shared = append(c.shared, j)
		c.sharedSet[j] = true
	}

	layout, err := c.cfg.layout(c.p, c.n)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", agg.ErrBadInput, err)
	}
	out, x, inPlace := newMaskedMessage(c.header(typeMasked), layout)
	if err := layout.EncodeTo(x, c.in.Values, c.in.Weights, newStreamReader()); err != nil {
		return nil, fmt.Errorf("%w: %w", agg.ErrBadInput, err)
	}
	if c.cfg.Noise > 0 {
		if c.keepEncoding {
			c.plain = x.Clone()
		}
		dp.AddSkellam(x, layout.N, c.cfg.Noise, nil) // value words only, before any mask
	}
	if c.keepEncoding {
		c.encoding = x.Clone()
	}
	self := selfMaskKey(c.b, c.p.Round, c.p.LayoutHash, c.index)
	defer clear(self.k[:])
	masks = append(masks, mask{key: &self})
	applyMasks(x, masks)

	// The input, b_i, σ_i and the s key are no longer needed; the shares are.
	c.in = agg.Input{}
	c.b.zero()
	c.sigma.zero()
	c.sPriv = privKey{}
	for _, pr := range c.peers {
		if pr.pairKey != nil {
			clear(pr.pairKey.k[:])
			pr.pairKey = nil
		}
		clear(pr.cSecret)
		pr.cSecret = nil
	}
	if !inPlace {
		appendWords(out[:headerLen], x)
	}
	return out, nil
}

// unmask answers the server's list of survivors with the shares it needs: of b_j for a
// neighbour j that sent its masked input, of σ_j for one that shared and then dropped.
func (c *client) unmask(fromServer []byte) ([]byte, error) {
	alive, err := decodeSurvivors(fromServer, c.header(typeSurvivors), c.k, func(j int) bool { return c.sharedSet[j] })
	if err != nil {
		return nil, err
	}
	if 1+len(alive) < c.t {
		// Too few survivors to rebuild this client's self mask: the round cannot complete,
		// and the server has no business asking.
		return nil, fmt.Errorf("secagg: %d of member %d's neighbours sent masked inputs, fewer than the %d it needs: %w", len(alive), c.index, c.t-1, agg.ErrTooFewClients)
	}
	owners := append(slices.Clone(c.shared), c.index)
	slices.Sort(owners)
	entries := make([]unmaskEntry, 0, len(owners))
	for _, j := range owners {
		e := unmaskEntry{owner: j}
		var s scalar
		switch {
		case j == c.index:
			e.kind, s = kindB, c.ownB
		case slices.Contains(alive, j):
			e.kind, s = kindB, c.held[j].b
		default:
			e.kind, s = kindSigma, c.held[j].sigma
		}
		e.share = s.bytes()
		entries = append(entries, e)
	}
	out := encodeUnmask(c.header(typeUnmask), entries)
	for i := range entries {
		clear(entries[i].share[:])
	}
	return out, nil
}

// newStreamReader returns a fast source of randomness for stochastic rounding: AES-128-CTR
// under a fresh random key. It XORs the stream into whatever the buffer holds, which leaves
// the buffer as uniform as the stream: quant reads it into the fresh words of the message.
func newStreamReader() io.Reader {
	key := make([]byte, 16)
	rand.Read(key)
	block, err := aes.NewCipher(key)
	clear(key)
	if err != nil {
		panic(err)
	}
	return streamReader{cipher.NewCTR(block, make([]byte, aes.BlockSize))}
}

type streamReader struct{ s cipher.Stream }

func (r streamReader) Read(p []byte) (int, error) {
	r.s.XORKeyStream(p, p)
	return len(p), nil
}
