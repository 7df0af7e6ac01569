package mhe

import (
	"crypto/sha256"
	"crypto/subtle"
	"fmt"
	"slices"
	"sync"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	lmhe "github.com/tuneinsight/lattigo/v5/mhe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/ring/ringqp"
	"github.com/tuneinsight/lattigo/v5/utils/sampling"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/quant"
)

// SetupConfig is a task's choice of key set-up. The server and every member must use the same
// one: its ID goes into every set-up message.
type SetupConfig struct {
	// Task names the task; the common reference string, from which the public key's random
	// half is drawn, derives from it and Epoch (it is public). At most MaxTaskLen bytes.
	Task string `json:"task"`
	// Epoch counts the set-ups of the task: a new set-up of the same task takes a new epoch.
	Epoch uint32 `json:"epoch"`
	// Members is the number of members n, 1 to MaxMembers; members are numbered 1 to n, and
	// member i's Shamir point is i.
	Members int `json:"members"`
	// Threshold is the number t of members that decrypt together, 1 to n. 0 means a strict
	// majority, n/2 + 1. Any t members and the server can decrypt anything encrypted under
	// the set-up's key; fewer learn nothing. A threshold of 1 is the usual single-key set-up.
	Threshold int `json:"threshold"`
	// MaxWeight bounds the weight a client gives a parameter group (the number of its samples
	// that fed it) in every round of the task, and with Members and Bits it sizes the plaintext
	// modulus. 0 means 2^16/n: sums of 32 bits at 16 bits a value, as in package quant.
	MaxWeight uint64 `json:"max_weight"`
	// Bits is the width of a quantized value the modulus is sized for, 2 to 32. 0 means
	// quant.DefaultBits.
	Bits int `json:"bits"`
}

// Settings are what a server tells the clients about a key set-up or a round, as JSON in the
// round's protocol settings: a set-up's Config, or a round's key set (hex of the set-up's ID)
// and the set-up member of each cohort position.
type Settings struct {
	Setup  bool         `json:"setup,omitempty"`
	Config *SetupConfig `json:"config,omitempty"`
	Quant  quant.Config `json:"quant"`
	KeySet string       `json:"key_set,omitempty"`
	Cohort []int        `json:"cohort,omitempty"`
}

// Limits of a set-up.
const (
	MaxMembers = 1024
	MaxTaskLen = 256
)

// normalize fills in the defaults and validates c.
func (c SetupConfig) normalize() (SetupConfig, error) {
	if len(c.Task) > MaxTaskLen {
		return c, fmt.Errorf("mhe: task name of %d bytes, at most %d", len(c.Task), MaxTaskLen)
	}
	if c.Members < 1 || c.Members > MaxMembers {
		return c, fmt.Errorf("mhe: %d members, want 1 to %d", c.Members, MaxMembers)
	}
	if c.Threshold == 0 {
		c.Threshold = c.Members/2 + 1
	}
	if c.Threshold < 1 || c.Threshold > c.Members {
		return c, fmt.Errorf("mhe: threshold %d of %d members, want 1 to %d", c.Threshold, c.Members, c.Members)
	}
	if c.Bits == 0 {
		c.Bits = quant.DefaultBits
	}
	if c.Bits < 2 || c.Bits > 32 {
		return c, fmt.Errorf("mhe: %d bits a value, want 2 to 32", c.Bits)
	}
	if c.MaxWeight == 0 {
		c.MaxWeight = max(1, (1<<16)/uint64(c.Members))
	}
	if c.MaxWeight > 1<<40 {
		return c, fmt.Errorf("mhe: weights up to %d, at most 2^40", c.MaxWeight)
	}
	return c, nil
}

// ID returns the set-up's identifier, a hash of the normalized config, which binds every
// set-up message to it. It is the zero array for a config that does not validate.
func (c SetupConfig) ID() [32]byte {
	c, err := c.normalize()
	if err != nil {
		return [32]byte{}
	}
	return setupID(c)
}

func setupID(c SetupConfig) [32]byte {
	w := writer{b: []byte("fedweave/mhe/setup/v1\x00")}
	c.put(&w)
	return sha256.Sum256(w.b)
}

func (c SetupConfig) put(w *writer) {
	w.blob([]byte(c.Task))
	w.u32(int(c.Epoch))
	w.u32(c.Members)
	w.u32(c.Threshold)
	w.u64(c.MaxWeight)
	w.u32(c.Bits)
}

func readConfig(r *reader) SetupConfig {
	var c SetupConfig
	c.Task = string(r.blob(MaxTaskLen))
	c.Epoch = uint32(r.u32())
	c.Members = r.u32()
	c.Threshold = r.u32()
	c.MaxWeight = r.u64()
	c.Bits = r.u32()
	return c
}

// crp returns the random half of the collective public key, drawn from the common reference
// string of set-up id.
func crp(p *params, id [32]byte) lmhe.PublicKeyGenCRP {
	seed := sha256.Sum256(append([]byte("fedweave/mhe/crs/v1\x00"), id[:]...))
	crs, err := sampling.NewKeyedPRNG(seed[:])
	if err != nil {
		panic(err) // blake2b accepts a 32-byte key
	}
	return lmhe.NewPublicKeyGenProtocol(p.bgv).SampleCRP(crs)
}

// PublicSetup is what the server keeps of a key set-up, and persists: the collective public
// key, the members and the threshold. It holds no secret.
type PublicSetup struct {
	cfg     SetupConfig // normalized
	members []int       // ascending set-up member indices
	pk0     ringqp.Poly // first half of the collective public key; the second is crp
	id      [32]byte    // key set id
	p       *params

	once sync.Once
	pk   *rlwe.PublicKey
}

func newPublicSetup(cfg SetupConfig, p *params, members []int, pk0 ringqp.Poly) *PublicSetup {
	ps := &PublicSetup{cfg: cfg, members: members, pk0: pk0, p: p}
	w := writer{b: []byte("fedweave/mhe/keyset/v1\x00")}
	sid := setupID(cfg)
	w.raw(sid[:])
	w.u32(len(members))
	for _, m := range members {
		w.u32(m)
	}
	w.words(pk0.Q.Coeffs[0])
	w.words(pk0.P.Coeffs[0])
	ps.id = sha256.Sum256(w.b)
	return ps
}

// ID identifies the key set: a hash of the set-up's config, its members and its public key.
// Every round message carries it.
func (ps *PublicSetup) ID() [32]byte { return ps.id }

// Config returns the set-up's config, defaults filled in.
func (ps *PublicSetup) Config() SetupConfig { return ps.cfg }

// Members returns the set-up's members, ascending. Normally 1 to Config().Members; fewer when
// some did not take part in the set-up.
func (ps *PublicSetup) Members() []int { return slices.Clone(ps.members) }

// Threshold returns the number of members that decrypt together.
func (ps *PublicSetup) Threshold() int { return ps.cfg.Threshold }

// PlaintextModulus returns T, the modulus of the sums.
func (ps *PublicSetup) PlaintextModulus() uint64 { return ps.p.t }

// FloodingSigma returns the standard deviation of the noise each decryption share carries.
func (ps *PublicSetup) FloodingSigma() float64 { return ps.p.sigma }

// publicKey returns the collective public key (pk0, crp), in lattigo's form.
func (ps *PublicSetup) publicKey() *rlwe.PublicKey {
	ps.once.Do(func() {
		pk := rlwe.NewPublicKey(ps.p.bgv)
		pk.Value[0].Copy(ps.pk0)
		pk.Value[1].Copy(crp(ps.p, setupID(ps.cfg)).Value)
		ps.pk = pk
	})
	return ps.pk
}

func (ps *PublicSetup) hasMember(m int) bool {
	_, ok := slices.BinarySearch(ps.members, m)
	return ok
}

var (
	publicMagic = [4]byte{'F', 'W', 'M', 'P'}
	keyMagic    = [4]byte{'F', 'W', 'M', 'K'}
)

// MarshalBinary encodes ps: magic "FWMP", version, the config, the members and the public
// key (some 64 KiB).
func (ps *PublicSetup) MarshalBinary() ([]byte, error) {
	w := writer{b: make([]byte, 0, 5+2*8*ringN+64+4*len(ps.members)+len(ps.cfg.Task))}
	w.raw(publicMagic[:])
	w.b = append(w.b, version)
	ps.put(&w)
	return w.b, nil
}

func (ps *PublicSetup) put(w *writer) {
	ps.cfg.put(w)
	w.u32(len(ps.members))
	for _, m := range ps.members {
		w.u32(m)
	}
	w.words(ps.pk0.Q.Coeffs[0])
	w.words(ps.pk0.P.Coeffs[0])
}

// UnmarshalPublicSetup decodes what PublicSetup.MarshalBinary encoded, and validates it.
// Errors wrap agg.ErrBadMessage.
func UnmarshalPublicSetup(b []byte) (*PublicSetup, error) {
	r := reader{b: b}
	if m := r.take(5); m == nil || [4]byte(m[:4]) != publicMagic || m[4] != version {
		return nil, fmt.Errorf("%w: not an mhe public set-up (version %d)", agg.ErrBadMessage, version)
	}
	ps, err := readPublicSetup(&r)
	if err != nil {
		return nil, err
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return ps, nil
}

func readPublicSetup(r *reader) (*PublicSetup, error) {
	cfg := readConfig(r)
	n := r.u32()
	if r.err != nil {
		return nil, r.err
	}
	norm, err := cfg.normalize()
	if err != nil || norm != cfg {
		return nil, fmt.Errorf("%w: public set-up with an invalid config", agg.ErrBadMessage)
	}
	if n < cfg.Threshold || n > cfg.Members {
		return nil, fmt.Errorf("%w: public set-up of %d members, want %d to %d", agg.ErrBadMessage, n, cfg.Threshold, cfg.Members)
	}
	members := make([]int, n)
	for i := range members {
		members[i] = r.u32()
		if r.err == nil && (members[i] < 1 || members[i] > cfg.Members || i > 0 && members[i] <= members[i-1]) {
			return nil, fmt.Errorf("%w: public set-up with member list out of order", agg.ErrBadMessage)
		}
	}
	pq := r.words(ringN, q0)
	pp := r.words(ringN, p0)
	if r.err != nil {
		return nil, r.err
	}
	p, err := derive(cfg)
	if err != nil {
		return nil, fmt.Errorf("%w: %w", agg.ErrBadMessage, err)
	}
	return newPublicSetup(cfg, p, members, qpPoly(pq, pp)), nil
}

// qpPoly wraps two coefficient slices as a polynomial modulo q0·p0.
func qpPoly(q, p []uint64) ringqp.Poly {
	return ringqp.Poly{Q: ring.Poly{Coeffs: [][]uint64{q}}, P: ring.Poly{Coeffs: [][]uint64{p}}}
}

// KeyMaterial is what a member keeps of a key set-up: its t-of-n share of the collective
// secret key, with the public set-up. It is a secret: persist it only encrypted (MarshalBinary
// encodes it for that), and never print it; String and GoString show only public data.
type KeyMaterial struct {
	pub    *PublicSetup
	member int
	share  ringqp.Poly // Shamir share of the collective secret key at point member
}

// Member returns the holder's set-up member index, its Shamir point.
func (km *KeyMaterial) Member() int { return km.member }

// Public returns the public part of the set-up.
func (km *KeyMaterial) Public() *PublicSetup { return km.pub }

func (km *KeyMaterial) String() string {
	return fmt.Sprintf("mhe.KeyMaterial{member %d of key set %x, %d-of-%d}", km.member, km.pub.id[:6], km.pub.cfg.Threshold, len(km.pub.members))
}

func (km *KeyMaterial) GoString() string { return km.String() }

// Equal reports whether km and other hold the same key material, in constant time for the
// secret part.
func (km *KeyMaterial) Equal(other *KeyMaterial) bool {
	a, _ := km.MarshalBinary()
	b, _ := other.MarshalBinary()
	return subtle.ConstantTimeCompare(a, b) == 1
}

// MarshalBinary encodes km for the member's store, which must encrypt it: magic "FWMK",
// version, the public set-up, the member index, the secret share (64 KiB), and a SHA-256 of
// all that, which catches accidental corruption (it is no MAC). The caller owns the bytes and
// should clear them once they are encrypted.
func (km *KeyMaterial) MarshalBinary() ([]byte, error) {
	w := writer{b: make([]byte, 0, 5+4*8*ringN+256+4*len(km.pub.members)+len(km.pub.cfg.Task))}
	w.raw(keyMagic[:])
	w.b = append(w.b, version)
	km.pub.put(&w)
	w.u32(km.member)
	w.words(km.share.Q.Coeffs[0])
	w.words(km.share.P.Coeffs[0])
	sum := sha256.Sum256(w.b)
	w.raw(sum[:])
	return w.b, nil
}

// UnmarshalKeyMaterial decodes what KeyMaterial.MarshalBinary encoded, and validates it.
// Errors wrap agg.ErrBadMessage; they never quote the secret.
func UnmarshalKeyMaterial(b []byte) (*KeyMaterial, error) {
	if len(b) < 5+sha256.Size {
		return nil, fmt.Errorf("%w: key material of %d bytes is too short", agg.ErrBadMessage, len(b))
	}
	body := b[:len(b)-sha256.Size]
	if sum := sha256.Sum256(body); subtle.ConstantTimeCompare(sum[:], b[len(body):]) != 1 {
		return nil, fmt.Errorf("%w: key material is corrupt (checksum mismatch)", agg.ErrBadMessage)
	}
	r := reader{b: body}
	if m := r.take(5); [4]byte(m[:4]) != keyMagic || m[4] != version {
		return nil, fmt.Errorf("%w: not mhe key material of version %d", agg.ErrBadMessage, version)
	}
	pub, err := readPublicSetup(&r)
	if err != nil {
		return nil, err
	}
	member := r.u32()
	if r.err == nil && !pub.hasMember(member) {
		return nil, fmt.Errorf("%w: key material of member %d, not in the set-up", agg.ErrBadMessage, member)
	}
	sq := r.words(ringN, q0)
	sp := r.words(ringN, p0)
	if err := r.end(); err != nil {
		return nil, err
	}
	return &KeyMaterial{pub: pub, member: member, share: qpPoly(sq, sp)}, nil
}

// Keys are what a party holds of a set-up: the server its *PublicSetup, a member its
// *KeyMaterial, and an in-memory federation (tests, the demo) a KeyRing of all members'.
type Keys interface {
	public() *PublicSetup
	// material returns the key material of set-up member m, or nil.
	material(m int) *KeyMaterial
}

func (ps *PublicSetup) public() *PublicSetup      { return ps }
func (ps *PublicSetup) material(int) *KeyMaterial { return nil }

func (km *KeyMaterial) public() *PublicSetup { return km.pub }
func (km *KeyMaterial) material(m int) *KeyMaterial {
	if m == km.member {
		return km
	}
	return nil
}

// KeyRing holds the key material of several members of one set-up, for a federation that
// runs in one process: tests, examples and the demo.
type KeyRing []*KeyMaterial

func (kr KeyRing) public() *PublicSetup {
	for _, km := range kr {
		if km != nil {
			return km.pub
		}
	}
	return nil
}

func (kr KeyRing) material(m int) *KeyMaterial {
	for _, km := range kr {
		if km != nil && km.member == m {
			return km
		}
	}
	return nil
}
