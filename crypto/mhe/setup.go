package mhe

import (
	"crypto/hpke"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	lmhe "github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring/ringqp"

	"github.com/fedweave/fedweave/crypto/agg"
)

// The set-up wraps each Shamir share to its recipient with HPKE (RFC 9180) over the hybrid
// ML-KEM-768 + X25519 KEM, so that recorded set-ups stay secret against a future quantum
// computer, as the lattice key they share does.
var (
	shareKEM  = hpke.MLKEM768X25519()
	shareKDF  = hpke.HKDFSHA256()
	shareAEAD = hpke.AES256GCM()
)

const (
	maxKEMKey    = 4096    // bytes of an HPKE public key
	maxSealed    = 1 << 20 // bytes of a sealed share
	polyQPBytes  = 2 * 8 * ringN
	setupPhases  = 3
	confirmBytes = 32
)

// shareInfo binds a sealed share to its set-up, sender and recipient.
func shareInfo(id [32]byte, from, to int) []byte {
	b := append([]byte("fedweave/mhe/share/v1\x00"), id[:]...)
	b = binary.LittleEndian.AppendUint32(b, uint32(from))
	return binary.LittleEndian.AppendUint32(b, uint32(to))
}

// SetupMember is one member's side of a key set-up: three phases, each answering the server's
// message of the phase before (nil in phase 0).
//
//   - Phase 0: draw a secret key share s_i and an HPKE key pair; send the public key share
//     -a·s_i + e_i (a from the common reference string) and the HPKE public key.
//   - Phase 1, given the roster (the members that took part, with their HPKE keys): split
//     s_i t-of-n with Shamir (lattigo's Thresholdizer) and send each other member its share,
//     sealed to its HPKE key.
//   - Phase 2, given the collective public key and the shares sealed to it: open them, add
//     them up into its threshold share of s = Σ s_i, and confirm the key set's ID.
//
// After phase 2, KeyMaterial returns what the member must persist. Any error is final: the
// set-up must start again.
type SetupMember struct {
	cfg    SetupConfig
	id     [32]byte
	p      *params
	member int
	next   int   // the phase expected next
	err    error // the first failure

	sk     *rlwe.SecretKey
	kemKey hpke.PrivateKey
	roster []int
	own    lmhe.ShamirSecretShare // the share of its own secret
	km     *KeyMaterial
}

var _ agg.Client = (*SetupMember)(nil)

// NewSetupMember returns the side of set-up member (1 to cfg.Members).
func NewSetupMember(cfg SetupConfig, member int) (*SetupMember, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	if member < 1 || member > cfg.Members {
		return nil, fmt.Errorf("mhe: member %d of a set-up of %d", member, cfg.Members)
	}
	p, err := derive(cfg)
	if err != nil {
		return nil, err
	}
	return &SetupMember{cfg: cfg, id: setupID(cfg), p: p, member: member}, nil
}

// Phase returns the member's message for phase p of the set-up, given the server's message.
// Errors about the server's message wrap agg.ErrBadMessage.
func (m *SetupMember) Phase(p int, fromServer []byte) ([]byte, error) {
	if m.err != nil {
		return nil, m.err
	}
	if p != m.next {
		return nil, fmt.Errorf("mhe: set-up phase %d, want phase %d", p, m.next)
	}
	var out []byte
	var err error
	switch p {
	case 0:
		out, err = m.keys()
	case 1:
		out, err = m.shares(fromServer)
	case 2:
		out, err = m.finish(fromServer)
	}
	if err != nil {
		m.err = fmt.Errorf("mhe: set-up phase %d: %w", p, err)
		m.wipe()
		return nil, m.err
	}
	m.next++
	return out, nil
}

// KeyMaterial returns the member's key material once phase 2 is done.
func (m *SetupMember) KeyMaterial() (*KeyMaterial, error) {
	if m.km == nil {
		return nil, errors.New("mhe: the set-up is not done")
	}
	return m.km, nil
}

// wipe drops the member's secrets: its key share s_i and its HPKE private key.
func (m *SetupMember) wipe() {
	m.wipeSecret()
	m.kemKey = nil
}

func (m *SetupMember) wipeSecret() {
	if m.sk != nil {
		clear(m.sk.Value.Q.Coeffs[0])
		clear(m.sk.Value.P.Coeffs[0])
		m.sk = nil
	}
}

func (m *SetupMember) keys() ([]byte, error) {
	m.sk = rlwe.NewKeyGenerator(m.p.bgv).GenSecretKeyNew()
	var err error
	if m.kemKey, err = shareKEM.GenerateKey(); err != nil {
		return nil, err
	}
	ckg := lmhe.NewPublicKeyGenProtocol(m.p.bgv)
	share := ckg.AllocateShare()
	ckg.GenShare(m.sk, crp(m.p, m.id), &share)

	w := writer{b: make([]byte, setupHeaderLen, setupHeaderLen+4+maxKEMKey+polyQPBytes)}
	setupHeader{typ: msgKeys, setupID: m.id, member: m.member}.put(w.b)
	w.blob(m.kemKey.PublicKey().Bytes())
	w.words(share.Value.Q.Coeffs[0])
	w.words(share.Value.P.Coeffs[0])
	return w.b, nil
}

func (m *SetupMember) shares(msg []byte) ([]byte, error) {
	roster, kemKeys, err := decodeRoster(m.cfg, m.id, msg)
	if err != nil {
		return nil, err
	}
	i, ok := slices.BinarySearch(roster, m.member)
	if !ok {
		return nil, fmt.Errorf("%w: the roster leaves this member out", agg.ErrBadMessage)
	}
	if !slices.Equal(kemKeys[i].Bytes(), m.kemKey.PublicKey().Bytes()) {
		return nil, fmt.Errorf("%w: the roster carries another key for this member", agg.ErrBadMessage)
	}
	m.roster = roster

	thr := lmhe.NewThresholdizer(m.p.bgv)
	poly, err := thr.GenShamirPolynomial(m.cfg.Threshold, m.sk)
	if err != nil {
		return nil, err
	}
	defer func() {
		for _, c := range poly.Value {
			clear(c.Q.Coeffs[0])
			clear(c.P.Coeffs[0])
		}
	}()
	share := thr.AllocateThresholdSecretShare()
	plain := make([]byte, polyQPBytes)
	defer clear(plain)
	w := writer{b: make([]byte, setupHeaderLen, setupHeaderLen+4+len(roster)*(polyQPBytes+1200))}
	setupHeader{typ: msgShares, setupID: m.id, member: m.member}.put(w.b)
	w.u32(len(roster) - 1)
	for j, to := range roster {
		if to == m.member {
			m.own = thr.AllocateThresholdSecretShare()
			thr.GenShamirSecretShare(lmhe.ShamirPublicPoint(to), poly, &m.own)
			continue
		}
		thr.GenShamirSecretShare(lmhe.ShamirPublicPoint(to), poly, &share)
		putWords(plain, share.Q.Coeffs[0])
		putWords(plain[8*ringN:], share.P.Coeffs[0])
		sealed, err := hpke.Seal(kemKeys[j], shareKDF, shareAEAD, shareInfo(m.id, m.member, to), plain)
		if err != nil {
			return nil, err
		}
		w.u32(to)
		w.blob(sealed)
	}
	clear(share.Q.Coeffs[0])
	clear(share.P.Coeffs[0])
	m.wipeSecret() // s_i lives on only in the shares
	return w.b, nil
}

func (m *SetupMember) finish(msg []byte) ([]byte, error) {
	if err := (setupHeader{typ: msgFinish, setupID: m.id, member: m.member}).check(msg); err != nil {
		return nil, err
	}
	r := reader{b: msg[setupHeaderLen:]}
	pq := r.words(ringN, q0)
	pp := r.words(ringN, p0)
	n := r.u32()
	if r.err == nil && n != len(m.roster)-1 {
		return nil, fmt.Errorf("%w: %d shares for a roster of %d", agg.ErrBadMessage, n, len(m.roster))
	}
	thr := lmhe.NewThresholdizer(m.p.bgv)
	got := make(map[int]bool, n)
	sum := m.own
	plain := []byte(nil)
	for range n {
		from := r.u32()
		sealed := r.blob(maxSealed)
		if r.err != nil {
			return nil, r.err
		}
		if _, ok := slices.BinarySearch(m.roster, from); !ok || from == m.member || got[from] {
			return nil, fmt.Errorf("%w: a share from member %d, not expected", agg.ErrBadMessage, from)
		}
		got[from] = true
		var err error
		plain, err = hpke.Open(m.kemKey, shareKDF, shareAEAD, shareInfo(m.id, from, m.member), sealed)
		if err != nil {
			return nil, fmt.Errorf("%w: the share from member %d does not open: %v", agg.ErrBadMessage, from, err)
		}
		pr := reader{b: plain}
		share := lmhe.ShamirSecretShare{Poly: qpPoly(pr.words(ringN, q0), pr.words(ringN, p0))}
		clear(plain)
		if err := pr.end(); err != nil {
			return nil, fmt.Errorf("the share from member %d: %w", from, err)
		}
		if err := thr.AggregateShares(sum, share, &sum); err != nil {
			return nil, err
		}
		clear(share.Q.Coeffs[0])
		clear(share.P.Coeffs[0])
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	pub := newPublicSetup(m.cfg, m.p, m.roster, qpPoly(pq, pp))
	m.km = &KeyMaterial{pub: pub, member: m.member, share: sum.Poly}
	m.wipe()
	w := writer{b: make([]byte, setupHeaderLen, setupHeaderLen+confirmBytes)}
	setupHeader{typ: msgConfirm, setupID: m.id, member: m.member}.put(w.b)
	w.raw(pub.id[:])
	return w.b, nil
}

// decodeRoster decodes the roster: the members that sent keys in phase 0, ascending, with
// their HPKE public keys.
func decodeRoster(cfg SetupConfig, id [32]byte, msg []byte) ([]int, []hpke.PublicKey, error) {
	if err := (setupHeader{typ: msgRoster, setupID: id}).check(msg); err != nil {
		return nil, nil, err
	}
	r := reader{b: msg[setupHeaderLen:]}
	n := r.u32()
	if r.err == nil && (n < cfg.Threshold || n > cfg.Members) {
		return nil, nil, fmt.Errorf("%w: a roster of %d members, want %d to %d", agg.ErrBadMessage, n, cfg.Threshold, cfg.Members)
	}
	roster := make([]int, 0, n)
	keys := make([]hpke.PublicKey, 0, n)
	for range n {
		m := r.u32()
		kb := r.blob(maxKEMKey)
		if r.err != nil {
			return nil, nil, r.err
		}
		if m < 1 || m > cfg.Members || len(roster) > 0 && m <= roster[len(roster)-1] {
			return nil, nil, fmt.Errorf("%w: roster out of order at member %d", agg.ErrBadMessage, m)
		}
		k, err := shareKEM.NewPublicKey(kb)
		if err != nil {
			return nil, nil, fmt.Errorf("%w: member %d's key: %v", agg.ErrBadMessage, m, err)
		}
		roster = append(roster, m)
		keys = append(keys, k)
	}
	if err := r.end(); err != nil {
		return nil, nil, err
	}
	return roster, keys, nil
}

// SetupServer is the server's side of a key set-up: it relays the members' messages and adds
// up the public key shares. Members that send nothing in phase 0 are left out of the set-up,
// as long as t remain; a member that drops later aborts it (ErrTooFewClients), and the set-up
// must start again.
type SetupServer struct {
	cfg   SetupConfig
	id    [32]byte
	p     *params
	phase int
	done  bool
	err   error

	seen   map[int]bool   // members that sent a message in this phase
	ok     map[int]bool   // members whose message of this phase was taken
	kemKey map[int][]byte // phase 0: each member's HPKE public key
	pk0    ringqp.Poly    // phase 0: the sum of the public key shares
	roster []int
	sealed map[int]map[int][]byte // phase 1: recipient -> sender -> sealed share
	pub    *PublicSetup
}

// NewSetupServer returns the server's side of a set-up.
func NewSetupServer(cfg SetupConfig) (*SetupServer, error) {
	cfg, err := cfg.normalize()
	if err != nil {
		return nil, err
	}
	p, err := derive(cfg)
	if err != nil {
		return nil, err
	}
	return &SetupServer{
		cfg: cfg, id: setupID(cfg), p: p,
		seen: map[int]bool{}, ok: map[int]bool{}, kemKey: map[int][]byte{}, pk0: p.bgv.RingQP().NewPoly(),
	}, nil
}

// Receive takes member from's message for the current phase. A refused message is not used,
// and the member may not send another in the same phase. Errors wrap agg.ErrBadMessage.
func (s *SetupServer) Receive(from int, msg []byte) error {
	if s.done || s.err != nil {
		return fmt.Errorf("%w: the set-up is over", agg.ErrBadMessage)
	}
	if from < 1 || from > s.cfg.Members {
		return fmt.Errorf("%w: no set-up member %d", agg.ErrBadMessage, from)
	}
	if s.phase > 0 && !slices.Contains(s.roster, from) {
		return fmt.Errorf("%w: member %d is not in the roster", agg.ErrBadMessage, from)
	}
	if s.seen[from] {
		return fmt.Errorf("%w: a second message from member %d in set-up phase %d", agg.ErrBadMessage, from, s.phase)
	}
	s.seen[from] = true
	var err error
	switch s.phase {
	case 0:
		err = s.receiveKeys(from, msg)
	case 1:
		err = s.receiveShares(from, msg)
	default:
		err = s.receiveConfirm(from, msg)
	}
	if err == nil {
		s.ok[from] = true
	}
	return err
}

func (s *SetupServer) receiveKeys(from int, msg []byte) error {
	if err := (setupHeader{typ: msgKeys, setupID: s.id, member: from}).check(msg); err != nil {
		return err
	}
	r := reader{b: msg[setupHeaderLen:]}
	kb := r.blob(maxKEMKey)
	sq := r.words(ringN, q0)
	sp := r.words(ringN, p0)
	if err := r.end(); err != nil {
		return err
	}
	if _, err := shareKEM.NewPublicKey(kb); err != nil {
		return fmt.Errorf("%w: member %d's key: %v", agg.ErrBadMessage, from, err)
	}
	s.kemKey[from] = kb
	s.p.bgv.RingQP().Add(s.pk0, qpPoly(sq, sp), s.pk0)
	return nil
}

func (s *SetupServer) receiveShares(from int, msg []byte) error {
	if err := (setupHeader{typ: msgShares, setupID: s.id, member: from}).check(msg); err != nil {
		return err
	}
	r := reader{b: msg[setupHeaderLen:]}
	n := r.u32()
	if r.err == nil && n != len(s.roster)-1 {
		return fmt.Errorf("%w: %d shares for a roster of %d", agg.ErrBadMessage, n, len(s.roster))
	}
	got := make(map[int][]byte, n)
	for range n {
		to := r.u32()
		sealed := r.blob(maxSealed)
		if r.err != nil {
			return r.err
		}
		if _, ok := slices.BinarySearch(s.roster, to); !ok || to == from || got[to] != nil {
			return fmt.Errorf("%w: a share for member %d, not expected", agg.ErrBadMessage, to)
		}
		got[to] = sealed
	}
	if err := r.end(); err != nil {
		return err
	}
	for to, sealed := range got {
		s.sealed[to][from] = sealed
	}
	return nil
}

func (s *SetupServer) receiveConfirm(from int, msg []byte) error {
	if err := (setupHeader{typ: msgConfirm, setupID: s.id, member: from}).check(msg); err != nil {
		return err
	}
	if len(msg) != setupHeaderLen+confirmBytes {
		return fmt.Errorf("%w: confirmation of %d bytes", agg.ErrBadMessage, len(msg))
	}
	if [32]byte(msg[setupHeaderLen:]) != s.pub.id {
		// The member derived another key set: a server bug, or a message altered on the way.
		s.err = fmt.Errorf("mhe: set-up: member %d confirmed another key set", from)
		return fmt.Errorf("%w: member %d confirmed another key set", agg.ErrBadMessage, from)
	}
	return nil
}

// Next closes the current phase: it returns the message for each member (a nil map once the
// set-up is done). ErrTooFewClients means the set-up failed and must start again.
func (s *SetupServer) Next() (map[int][]byte, bool, error) {
	if s.err != nil {
		return nil, false, s.err
	}
	if s.done {
		return nil, true, nil
	}
	var out map[int][]byte
	switch s.phase {
	case 0:
		s.roster = slices.Sorted(maps.Keys(s.kemKey))
		if len(s.roster) < s.cfg.Threshold {
			s.err = fmt.Errorf("mhe: set-up: %d of %d members sent keys, fewer than the threshold of %d: %w", len(s.roster), s.cfg.Members, s.cfg.Threshold, agg.ErrTooFewClients)
			return nil, false, s.err
		}
		w := writer{b: make([]byte, setupHeaderLen)}
		setupHeader{typ: msgRoster, setupID: s.id}.put(w.b)
		w.u32(len(s.roster))
		for _, m := range s.roster {
			w.u32(m)
			w.blob(s.kemKey[m])
		}
		out = make(map[int][]byte, len(s.roster))
		s.sealed = make(map[int]map[int][]byte, len(s.roster))
		for _, m := range s.roster {
			out[m] = w.b
			s.sealed[m] = make(map[int][]byte, len(s.roster)-1)
		}
		s.kemKey = nil
	case 1:
		if err := s.allSent(); err != nil {
			return nil, false, err
		}
		s.pub = newPublicSetup(s.cfg, s.p, s.roster, s.pk0)
		out = make(map[int][]byte, len(s.roster))
		for _, to := range s.roster {
			w := writer{b: make([]byte, setupHeaderLen, setupHeaderLen+polyQPBytes+4+len(s.roster)*(polyQPBytes+1200))}
			setupHeader{typ: msgFinish, setupID: s.id, member: to}.put(w.b)
			w.words(s.pk0.Q.Coeffs[0])
			w.words(s.pk0.P.Coeffs[0])
			w.u32(len(s.sealed[to]))
			for _, from := range slices.Sorted(maps.Keys(s.sealed[to])) {
				w.u32(from)
				w.blob(s.sealed[to][from])
			}
			out[to] = w.b
		}
		s.sealed = nil
	default:
		if err := s.allSent(); err != nil {
			return nil, false, err
		}
		s.done = true
		return nil, true, nil
	}
	s.phase++
	clear(s.seen)
	clear(s.ok)
	return out, false, nil
}

// allSent fails the set-up unless every member of the roster sent a message in this phase
// that was taken.
func (s *SetupServer) allSent() error {
	for _, m := range s.roster {
		if !s.ok[m] {
			s.err = fmt.Errorf("mhe: set-up phase %d: member %d sent nothing usable; run the set-up again: %w", s.phase, m, agg.ErrTooFewClients)
			return s.err
		}
	}
	return nil
}

// PublicSetup returns the outcome of the set-up once Next has reported it done.
func (s *SetupServer) PublicSetup() (*PublicSetup, error) {
	if !s.done {
		return nil, errors.New("mhe: the set-up is not done")
	}
	return s.pub, nil
}

// RunSetup runs a whole set-up in memory, every member taking part, and returns the public
// set-up and each member's key material (member i's at index i-1). Tests, examples and the
// demo use it; the server and the clients run the same state machines over gRPC.
func RunSetup(cfg SetupConfig) (*PublicSetup, []*KeyMaterial, error) {
	srv, err := NewSetupServer(cfg)
	if err != nil {
		return nil, nil, err
	}
	members := make([]*SetupMember, srv.cfg.Members)
	for i := range members {
		if members[i], err = NewSetupMember(cfg, i+1); err != nil {
			return nil, nil, err
		}
	}
	var in map[int][]byte
	for phase := 0; ; phase++ {
		// Members compute their messages in parallel, a batch at a time, and the server takes
		// them in order.
		k := workers(len(members))
		msgs := make([][]byte, k)
		for lo := 0; lo < len(members); lo += k {
			hi := min(lo+k, len(members))
			err := parallel(hi-lo, func(_, j int) error {
				i := lo + j
				var err error
				if msgs[j], err = members[i].Phase(phase, in[i+1]); err != nil {
					return fmt.Errorf("mhe: set-up member %d: %w", i+1, err)
				}
				return nil
			})
			if err != nil {
				return nil, nil, err
			}
			for j, msg := range msgs[:hi-lo] {
				if err := srv.Receive(lo+j+1, msg); err != nil {
					return nil, nil, err
				}
				delete(in, lo+j+1)
			}
		}
		out, done, err := srv.Next()
		if err != nil {
			return nil, nil, err
		}
		if done {
			break
		}
		in = out
	}
	pub, err := srv.PublicSetup()
	if err != nil {
		return nil, nil, err
	}
	kms := make([]*KeyMaterial, len(members))
	for i, m := range members {
		if kms[i], err = m.KeyMaterial(); err != nil {
			return nil, nil, err
		}
	}
	return pub, kms, nil
}
