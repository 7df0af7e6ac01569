package secagg

import (
	"errors"
	"fmt"
	"slices"
	"sort"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/quant"
)

// NewServer returns the server's side of a round of a cohort of the given size, at least 2 (a
// sum of one input is that input: a cohort of 1 fails with agg.ErrTooFewClients).
func (pr *protocol) NewServer(p agg.Params, cohort int) (agg.Server, error) {
	if err := pr.cfg.validate(); err != nil {
		return nil, err
	}
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if cohort < 1 {
		return nil, fmt.Errorf("secagg: cohort of %d", cohort)
	}
	k, t, err := pr.cfg.Shape(cohort)
	if err != nil {
		return nil, err
	}
	layout, err := pr.cfg.layout(p, cohort)
	if err != nil {
		return nil, fmt.Errorf("secagg: %w", err)
	}
	s, _ := suiteFor(pr.cfg.KEM)
	n := cohort
	return &server{
		verify: pr.verify, suite: s, p: p, n: n, k: k, t: t,
		g:       newGraph(p.Round, p.LayoutHash, n, k),
		layout:  layout,
		seen:    make([]bool, n+1),
		adverts: make([]*advert, n+1),
		pending: make([][]sealedEntry, n+1),
	}, nil
}

type server struct {
	verify  Verifier
	suite   suite
	p       agg.Params
	n, k, t int
	g       graph
	layout  quant.Layout

	phase int   // the phase whose messages Receive takes
	done  bool  // the result is ready
	err   error // why the round failed, if it did
	seen  []bool

	adverts    []*advert       // phase 0, by sender
	A, B, C, R []bool          // who is in after phases 0 to 3
	pending    [][]sealedEntry // phase 1, by sender
	inbox      [][]sealedEntry // phase 1, by recipient, entries from the senders in B
	sum        quant.Vector    // phase 2: the sum of the masked inputs
	shares     [][]heldShare   // phase 3, by owner of the secret
	raw        quant.Vector    // the sum of the contributors' encodings, once unmasked
	result     agg.Sum

	// Which secrets the server rebuilt, by owner. Tests check that no member is in both.
	rebuiltB, rebuiltSigma []bool
}

// heldShare is a share a holder revealed: its position among the owner's holders and value.
type heldShare struct {
	pos int
	s   scalar
}

var _ agg.Server = (*server)(nil)

// Format prints the round's state, never a secret.
func (s *server) Format(f fmt.State, verb rune) {
	fmt.Fprintf(f, "secagg.server(round %d, cohort %d, k %d, t %d, phase %d)", s.p.Round, s.n, s.k, s.t, s.phase)
}

func (s *server) header(typ msgType, index int) header { return headerOf(s.p, typ, index) }

func (s *server) Receive(from int, msg []byte) error {
	if s.done || s.err != nil {
		return fmt.Errorf("%w: secagg: round %d is closed", agg.ErrBadMessage, s.p.Round)
	}
	if from < 1 || from > s.n {
		return fmt.Errorf("%w: secagg: no cohort member %d", agg.ErrBadMessage, from)
	}
	if s.seen[from] {
		return fmt.Errorf("%w: secagg: a second message from member %d in phase %d", agg.ErrBadMessage, from, s.phase)
	}
	if !s.asked(from) {
		return fmt.Errorf("%w: secagg: member %d was not asked for a message in phase %d", agg.ErrBadMessage, from, s.phase)
	}
	s.seen[from] = true // a refused member does not get a second try in the same phase
	var err error
	switch s.phase {
	case 0:
		err = s.receiveAdvert(from, msg)
	case 1:
		err = s.receiveShares(from, msg)
	case 2:
		err = s.receiveMasked(from, msg)
	case 3:
		err = s.receiveUnmask(from, msg)
	}
	if err != nil {
		return fmt.Errorf("secagg: member %d, phase %d: %w", from, s.phase, err)
	}
	return nil
}

// asked reports whether member i was asked for a message in the current phase: anyone in
// phase 0, then those the server sent a message.
func (s *server) asked(i int) bool {
	switch s.phase {
	case 1:
		return s.A[i]
	case 2:
		return s.B[i]
	case 3:
		return s.C[i]
	}
	return true
}

func (s *server) receiveAdvert(from int, msg []byte) error {
	a, err := decodeAdvert(msg, s.header(typeAdvert, from), s.suite)
	if err != nil {
		return err
	}
	if s.verify != nil {
		if _, err := a.verify(s.verify); err != nil {
			return err
		}
	}
	a.raw = slices.Clone(msg)
	a.cpk, a.spk = slices.Clone(a.cpk), slices.Clone(a.spk)
	a.cert, a.sig, a.signed = nil, nil, nil
	s.adverts[from] = a
	return nil
}

func (s *server) receiveShares(from int, msg []byte) error {
	hybrid := s.suite.ctSize() > 0
	entries, err := decodeEntries(msg, s.header(typeShares, from), s.k, func(to int) int {
		if !s.A[to] || !s.g.adjacent(from, to) {
			return 0
		}
		return sealedSize(s.suite, hybrid && from < to)
	})
	if err != nil {
		return err
	}
	if want := s.g.count(from, s.A); len(entries) != want {
		return fmt.Errorf("%w: shares for %d neighbours, want %d", agg.ErrBadMessage, len(entries), want)
	}
	for i := range entries {
		entries[i].data = slices.Clone(entries[i].data)
	}
	s.pending[from] = entries
	return nil
}

func (s *server) receiveMasked(from int, msg []byte) error {
	body, err := decodeMasked(msg, s.header(typeMasked, from), s.layout.Len()*s.layout.WordSize())
	if err != nil {
		return err
	}
	if s.sum.Len() == 0 {
		s.sum = s.layout.NewVector()
	}
	addWords(s.sum, body)
	s.C[from] = true
	return nil
}

// expectedUnmask returns the shares member i must reveal: for itself and every neighbour that
// shared, of b if it sent its masked input, else of σ.
func (s *server) expectedUnmask(i int) []unmaskEntry {
	var want []unmaskEntry
	for _, j := range s.g.holders(i) {
		switch {
		case s.C[j]:
			want = append(want, unmaskEntry{owner: j, kind: kindB})
		case s.B[j]:
			want = append(want, unmaskEntry{owner: j, kind: kindSigma})
		}
	}
	return want
}

func (s *server) receiveUnmask(from int, msg []byte) error {
	entries, err := decodeUnmask(msg, s.header(typeUnmask, from), s.expectedUnmask(from))
	if err != nil {
		return err
	}
	vals := make([]scalar, len(entries))
	for i, e := range entries {
		v, ok := scalarFrom(e.share[:])
		clear(entries[i].share[:])
		if !ok {
			for _, v := range vals[:i] {
				v.zero()
			}
			return fmt.Errorf("%w: share for member %d is not a scalar", agg.ErrBadMessage, e.owner)
		}
		vals[i] = v
	}
	for i, e := range entries {
		s.shares[e.owner] = append(s.shares[e.owner], heldShare{pos: s.g.position(e.owner, from), s: vals[i]})
	}
	s.R[from] = true
	return nil
}

func (s *server) Next() (map[int][]byte, bool, error) {
	if s.err != nil {
		return nil, false, s.err
	}
	if s.done {
		return nil, false, errors.New("secagg: the round is done")
	}
	var out map[int][]byte
	var err error
	switch s.phase {
	case 0:
		out, err = s.closeAdverts()
	case 1:
		out, err = s.closeShares()
	case 2:
		out, err = s.closeMasked()
	case 3:
		err = s.closeUnmask()
	}
	if err != nil {
		s.err = err
		s.wipe()
		return nil, false, err
	}
	if s.done {
		s.wipe()
		return nil, true, nil
	}
	s.phase++
	clear(s.seen)
	return out, false, nil
}

func (s *server) tooFew(format string, args ...any) error {
	return fmt.Errorf("secagg: round %d: %s: %w", s.p.Round, fmt.Sprintf(format, args...), agg.ErrTooFewClients)
}

// closeAdverts keeps the advertisers that can go on, and sends each its neighbours' adverts.
func (s *server) closeAdverts() (map[int][]byte, error) {
	got := make([]bool, s.n+1)
	for i, a := range s.adverts {
		got[i] = a != nil
	}
	s.A = s.g.prune(got, s.t)
	if !slices.Contains(s.A, true) {
		return nil, s.tooFew("too few clients advertised keys")
	}
	out := make(map[int][]byte)
	for i := 1; i <= s.n; i++ {
		if !s.A[i] {
			s.adverts[i] = nil
			continue
		}
		m := &neighboursMsg{n: s.n, k: s.k, t: s.t, kem: s.suite.id(), adverts: make(map[int][]byte)}
		for _, j := range s.g[i] {
			if s.A[j] {
				m.adverts[j] = s.adverts[j].raw
				m.order = append(m.order, j)
			}
		}
		out[i] = encodeNeighbours(s.header(typeNeighbours, i), m)
	}
	return out, nil
}

// closeShares keeps the members that shared and can go on, and routes their shares.
func (s *server) closeShares() (map[int][]byte, error) {
	got := make([]bool, s.n+1)
	for i, e := range s.pending {
		got[i] = e != nil
	}
	s.B = s.g.prune(got, s.t)
	if !slices.Contains(s.B, true) {
		return nil, s.tooFew("too few clients shared their secrets")
	}
	s.inbox = make([][]sealedEntry, s.n+1)
	for from := 1; from <= s.n; from++ {
		if !s.B[from] {
			continue
		}
		for _, e := range s.pending[from] {
			if s.B[e.peer] {
				s.inbox[e.peer] = append(s.inbox[e.peer], sealedEntry{peer: from, data: e.data})
			}
		}
	}
	s.pending = nil
	out := make(map[int][]byte)
	for i := 1; i <= s.n; i++ {
		if s.B[i] {
			out[i] = encodeEntries(s.header(typeRouted, i), s.inbox[i])
		}
	}
	s.C = make([]bool, s.n+1)
	return out, nil
}

// closeMasked checks that the masked inputs can be unmasked, and asks the survivors for the
// shares that do it. It reveals nothing when they cannot.
func (s *server) closeMasked() (map[int][]byte, error) {
	if !slices.Contains(s.C, true) {
		return nil, s.tooFew("no masked input arrived")
	}
	for i := 1; i <= s.n; i++ {
		switch {
		case s.C[i] && 1+s.g.count(i, s.C) < s.t:
			return nil, s.tooFew("member %d has %d live holders of its self mask, fewer than %d", i, 1+s.g.count(i, s.C), s.t)
		case s.B[i] && !s.C[i]:
			if c := s.g.count(i, s.C); c > 0 && c < s.t {
				return nil, s.tooFew("dropped member %d has %d live holders of its key secret, fewer than %d", i, c, s.t)
			}
		}
	}
	if !s.g.connected(s.C) {
		return nil, s.tooFew("the survivors' graph fell apart")
	}
	out := make(map[int][]byte)
	for i := 1; i <= s.n; i++ {
		if !s.C[i] {
			continue
		}
		var alive []int
		for _, j := range s.g[i] {
			if s.C[j] {
				alive = append(alive, j)
			}
		}
		out[i] = encodeSurvivors(s.header(typeSurvivors, i), alive)
	}
	s.shares = make([][]heldShare, s.n+1)
	s.R = make([]bool, s.n+1)
	return out, nil
}

// closeUnmask rebuilds the secrets, removes the masks and decodes the sum.
func (s *server) closeUnmask() error {
	// First check that every secret can be rebuilt, so that a failed round rebuilds none.
	var needB, needSigma []int
	for i := 1; i <= s.n; i++ {
		switch {
		case s.C[i]:
			needB = append(needB, i)
		case s.B[i] && s.g.count(i, s.C) > 0:
			needSigma = append(needSigma, i)
		default:
			continue
		}
		if c := len(s.shares[i]); c < s.t {
			return s.tooFew("%d shares of member %d's secret came, fewer than %d", c, i, s.t)
		}
	}

	s.rebuiltB = make([]bool, s.n+1)
	s.rebuiltSigma = make([]bool, s.n+1)
	lag := newLagrange(s.k + 1)
	rebuild := func(i int) scalar {
		sh := s.shares[i]
		sort.Slice(sh, func(a, b int) bool { return sh[a].pos < sh[b].pos })
		pos := make([]int, s.t)
		vals := make([]scalar, s.t)
		for j := range s.t {
			pos[j], vals[j] = sh[j].pos, sh[j].s
		}
		return lag.rebuild(pos, vals)
	}

	var keys []*maskKey
	defer func() {
		for _, k := range keys {
			clear(k.k[:])
		}
	}()
	masks := make([]mask, 0, len(needB))
	for _, i := range needB {
		b := rebuild(i)
		s.rebuiltB[i] = true
		k := selfMaskKey(b, s.p.Round, s.p.LayoutHash, i)
		b.zero()
		keys = append(keys, &k)
		masks = append(masks, mask{key: &k, neg: true})
	}
	hybrid := s.suite.ctSize() > 0
	for _, j := range needSigma {
		sigma := rebuild(j)
		s.rebuiltSigma[j] = true
		sPriv, sPub := sKeyPair(s.suite, sigma, s.p.Round, s.p.LayoutHash, j)
		if string(sPub) != string(s.adverts[j].spk) {
			sigma.zero()
			return fmt.Errorf("secagg: round %d: the shares of member %d's key secret do not match its advertised key", s.p.Round, j)
		}
		for _, l := range s.g[j] {
			if !s.C[l] {
				continue
			}
			var ss []byte
			var err error
			switch {
			case !hybrid:
				ss, err = s.suite.receive(sPriv, s.adverts[l].spk, nil)
			case j < l:
				seed := encapSeed(s.suite, sigma, s.p.Round, s.p.LayoutHash, j, l)
				_, ss, err = s.suite.sendSeeded(s.adverts[l].spk, seed)
				clear(seed)
			default:
				ss, err = s.suite.receive(sPriv, nil, s.pairCT(l, j))
			}
			if err != nil {
				sigma.zero()
				return fmt.Errorf("secagg: round %d: pairwise secret of members %d and %d: %w", s.p.Round, l, j, err)
			}
			k := pairMaskKey(ss, s.p.Round, s.p.LayoutHash, j, l)
			clear(ss)
			keys = append(keys, &k)
			// l added its mask when l < j and subtracted it otherwise.
			masks = append(masks, mask{key: &k, neg: l < j})
		}
		sigma.zero()
	}
	applyMasks(s.sum, masks)
	s.raw = s.sum

	values, weights, err := s.layout.Decode(s.raw)
	if err != nil {
		return err
	}
	s.result = agg.Sum{Values: values, Weights: weights}
	for i := 1; i <= s.n; i++ {
		if s.C[i] {
			s.result.Contributors = append(s.result.Contributors, i)
		}
	}
	s.done = true
	return nil
}

// pairCT returns the pairwise ciphertext that from (the lower index) sent to to in phase 1.
func (s *server) pairCT(from, to int) []byte {
	for _, e := range s.inbox[to] {
		if e.peer == from {
			return e.data[len(e.data)-s.suite.ctSize():]
		}
	}
	return nil
}

// wipe zeroes the shares and drops the round's state, once the round is over.
func (s *server) wipe() {
	for _, sh := range s.shares {
		for _, h := range sh {
			h.s.zero()
		}
	}
	s.shares, s.inbox, s.pending, s.adverts = nil, nil, nil, nil
	s.sum = quant.Vector{}
}

func (s *server) Result() (agg.Sum, error) {
	if s.err != nil {
		return agg.Sum{}, fmt.Errorf("secagg: the round failed: %w", s.err)
	}
	if !s.done {
		return agg.Sum{}, errors.New("secagg: result before the round is done")
	}
	return agg.Sum{
		Values:       slices.Clone(s.result.Values),
		Weights:      slices.Clone(s.result.Weights),
		Contributors: slices.Clone(s.result.Contributors),
	}, nil
}
