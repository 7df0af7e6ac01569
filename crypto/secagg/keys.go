package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/ecdh"
	"crypto/hkdf"
	"crypto/rand"
	"crypto/sha256"
	"crypto/subtle"
	"encoding/binary"
	"errors"
	"fmt"
	"io"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/kem"
	"github.com/cloudflare/circl/kem/hybrid"
)

// Secrets are opaque: they print as "secagg.secret(redacted)" with every verb, compare in
// constant time, and are zeroed when the round is over.

// A scalar is a secret Ristretto255 scalar: a self-mask seed b, a key secret σ, or a share.
type scalar struct{ s group.Scalar }

func randomScalar() scalar { return scalar{group.Ristretto255.RandomScalar(rand.Reader)} }

// scalarFrom parses a canonical encoding.
func scalarFrom(b []byte) (scalar, bool) {
	s := group.Ristretto255.NewScalar()
	if err := s.UnmarshalBinary(b); err != nil {
		return scalar{}, false
	}
	return scalar{s}, true
}

func (s scalar) bytes() (b [32]byte) {
	enc, err := s.s.MarshalBinary()
	if err != nil || len(enc) != 32 {
		panic("secagg: Ristretto255 scalar does not encode in 32 bytes")
	}
	copy(b[:], enc)
	clear(enc)
	return b
}

// Equal reports whether s and x are the same scalar, in constant time.
func (s scalar) Equal(x scalar) bool {
	a, b := s.bytes(), x.bytes()
	defer clear(a[:])
	defer clear(b[:])
	return subtle.ConstantTimeCompare(a[:], b[:]) == 1
}

func (s scalar) zero() {
	if s.s != nil {
		s.s.SetUint64(0)
	}
}

func (scalar) Format(f fmt.State, verb rune) { io.WriteString(f, "secagg.secret(redacted)") }

// A maskKey is the AES-128 key of a mask stream.
type maskKey struct{ k [16]byte }

// Equal reports whether k and x are the same key, in constant time.
func (k *maskKey) Equal(x *maskKey) bool { return subtle.ConstantTimeCompare(k.k[:], x.k[:]) == 1 }

func (*maskKey) Format(f fmt.State, verb rune) { io.WriteString(f, "secagg.secret(redacted)") }

// A privKey is the private half of a c or s key pair, of either suite.
type privKey struct {
	x   *ecdh.PrivateKey
	kem kem.PrivateKey
}

func (privKey) Format(f fmt.State, verb rune) { io.WriteString(f, "secagg.secret(redacted)") }

// Key derivation: HKDF-SHA256 with an info string that names the purpose and binds the round,
// the layout and the parties.
func info(label string, round uint64, layout [32]byte, a, b int) string {
	buf := make([]byte, 0, 64+len(label))
	buf = append(buf, "fedweave/secagg/v1 "...)
	buf = append(buf, label...)
	buf = append(buf, 0)
	buf = binary.LittleEndian.AppendUint64(buf, round)
	buf = append(buf, layout[:]...)
	buf = binary.LittleEndian.AppendUint32(buf, uint32(a))
	buf = binary.LittleEndian.AppendUint32(buf, uint32(b))
	return string(buf)
}

func derive(secret []byte, info string, n int) []byte {
	k, err := hkdf.Key(sha256.New, secret, nil, info, n)
	if err != nil {
		panic("secagg: HKDF: " + err.Error()) // only for lengths beyond 255·32 bytes
	}
	return k
}

func deriveMaskKey(secret []byte, info string) maskKey {
	var k maskKey
	b := derive(secret, info, len(k.k))
	copy(k.k[:], b)
	clear(b)
	return k
}

// selfMaskKey is the key of client i's self mask, from its seed b_i.
func selfMaskKey(b scalar, round uint64, layout [32]byte, i int) maskKey {
	sb := b.bytes()
	defer clear(sb[:])
	return deriveMaskKey(sb[:], info("self mask", round, layout, i, 0))
}

// pairMaskKey is the key of the pairwise mask of clients i and j, from their shared secret.
func pairMaskKey(ss []byte, round uint64, layout [32]byte, i, j int) maskKey {
	return deriveMaskKey(ss, info("pairwise mask", round, layout, min(i, j), max(i, j)))
}

// sKeyPair derives client i's s key pair from its secret σ_i.
func sKeyPair(s suite, sigma scalar, round uint64, layout [32]byte, i int) (privKey, []byte) {
	sb := sigma.bytes()
	defer clear(sb[:])
	seed := derive(sb[:], info("s key", round, layout, i, 0), s.seedSize())
	defer clear(seed)
	return s.deriveKey(seed)
}

// encapSeed is the randomness of i's encapsulation to j's s key (hybrid suite, i < j).
func encapSeed(s suite, sigma scalar, round uint64, layout [32]byte, i, j int) []byte {
	sb := sigma.bytes()
	defer clear(sb[:])
	return derive(sb[:], info("pairwise encapsulation", round, layout, i, j), s.encapSeedSize())
}

// A suite is a choice of key agreement: X25519, or the hybrid X25519MLKEM768 KEM.
type suite interface {
	id() byte
	name() string
	publicKeySize() int
	// ctSize is the size of a KEM ciphertext: 0 for X25519, whose agreements are static.
	ctSize() int
	seedSize() int
	encapSeedSize() int
	// newKey draws a c key pair.
	newKey() (privKey, []byte, error)
	// deriveKey derives an s key pair from a seed of seedSize bytes.
	deriveKey(seed []byte) (privKey, []byte)
	// send returns a secret shared with the holder of peer, and the ciphertext that conveys it
	// (nil for X25519, where the secret is the agreement of priv and peer).
	send(priv privKey, peer []byte) (ct, ss []byte, err error)
	// sendSeeded is send for the hybrid KEM with the encapsulation's randomness given.
	sendSeeded(peer, seed []byte) (ct, ss []byte, err error)
	// receive returns the secret of send(peer's key, pub(priv)) with ciphertext ct.
	receive(priv privKey, peer, ct []byte) ([]byte, error)
}

func suiteFor(name string) (suite, error) {
	switch name {
	case "", "x25519":
		return x25519Suite{}, nil
	case "hybrid":
		return hybridSuite{hybrid.X25519MLKEM768()}, nil
	}
	return nil, fmt.Errorf("secagg: unknown KEM %q, want x25519 or hybrid", name)
}

type x25519Suite struct{}

func (x25519Suite) id() byte           { return 1 }
func (x25519Suite) name() string       { return "x25519" }
func (x25519Suite) publicKeySize() int { return 32 }
func (x25519Suite) ctSize() int        { return 0 }
func (x25519Suite) seedSize() int      { return 32 }
func (x25519Suite) encapSeedSize() int { return 0 }

func (x25519Suite) newKey() (privKey, []byte, error) {
	k, err := ecdh.X25519().GenerateKey(rand.Reader)
	if err != nil {
		return privKey{}, nil, err
	}
	return privKey{x: k}, k.PublicKey().Bytes(), nil
}

func (x25519Suite) deriveKey(seed []byte) (privKey, []byte) {
	k, err := ecdh.X25519().NewPrivateKey(seed)
	if err != nil {
		panic("secagg: X25519 key of 32 bytes refused: " + err.Error())
	}
	return privKey{x: k}, k.PublicKey().Bytes()
}

func (s x25519Suite) send(priv privKey, peer []byte) ([]byte, []byte, error) {
	ss, err := s.receive(priv, peer, nil)
	return nil, ss, err
}

func (x25519Suite) sendSeeded(peer, seed []byte) ([]byte, []byte, error) {
	return nil, nil, errors.New("secagg: X25519 has no encapsulation")
}

func (x25519Suite) receive(priv privKey, peer, _ []byte) ([]byte, error) {
	pub, err := ecdh.X25519().NewPublicKey(peer)
	if err != nil {
		return nil, err
	}
	return priv.x.ECDH(pub) // fails on a low-order point
}

type hybridSuite struct{ s kem.Scheme }

func (hybridSuite) id() byte             { return 2 }
func (hybridSuite) name() string         { return "hybrid" }
func (h hybridSuite) publicKeySize() int { return h.s.PublicKeySize() }
func (h hybridSuite) ctSize() int        { return h.s.CiphertextSize() }
func (h hybridSuite) seedSize() int      { return h.s.SeedSize() }
func (h hybridSuite) encapSeedSize() int { return h.s.EncapsulationSeedSize() }

func (h hybridSuite) newKey() (privKey, []byte, error) {
	seed := make([]byte, h.s.SeedSize())
	defer clear(seed)
	rand.Read(seed)
	priv, pub := h.deriveKey(seed)
	return priv, pub, nil
}

func (h hybridSuite) deriveKey(seed []byte) (privKey, []byte) {
	pk, sk := h.s.DeriveKeyPair(seed)
	pub, err := pk.MarshalBinary()
	if err != nil {
		panic("secagg: hybrid public key does not encode: " + err.Error())
	}
	return privKey{kem: sk}, pub
}

func (h hybridSuite) send(_ privKey, peer []byte) ([]byte, []byte, error) {
	pk, err := h.s.UnmarshalBinaryPublicKey(peer)
	if err != nil {
		return nil, nil, err
	}
	return h.s.Encapsulate(pk)
}

func (h hybridSuite) sendSeeded(peer, seed []byte) ([]byte, []byte, error) {
	pk, err := h.s.UnmarshalBinaryPublicKey(peer)
	if err != nil {
		return nil, nil, err
	}
	return h.s.EncapsulateDeterministically(pk, seed)
}

func (h hybridSuite) receive(priv privKey, _, ct []byte) ([]byte, error) {
	return h.s.Decapsulate(priv.kem, ct)
}

// Shares travel sealed: AES-256-GCM under a key derived from a secret the sender shares with
// the recipient, with a zero nonce (each key seals one message), and associated data that
// binds the round, the layout, both parties and the pairwise ciphertext that rides along.

// shareBox is the plaintext of sealed shares: a share of b and a share of σ.
const shareBox = 64

// sealedSize is the size of one entry of a shares message from one client to another: the
// KEM ciphertext, the sealed shares, and the pairwise ciphertext when withPair.
func sealedSize(s suite, withPair bool) int {
	n := s.ctSize() + shareBox + 16
	if withPair {
		n += s.ctSize()
	}
	return n
}

func shareAEAD(ss []byte, inf string) cipher.AEAD {
	key := derive(ss, inf, 32)
	defer clear(key)
	block, err := aes.NewCipher(key)
	if err != nil {
		panic(err)
	}
	aead, err := cipher.NewGCM(block)
	if err != nil {
		panic(err)
	}
	return aead
}

// seal encrypts the shares of from's secrets for to, with the secret ss and KEM ciphertext ct
// that the sender shares with to (from suite.send); pairCT is the pairwise ciphertext (nil
// unless hybrid and from < to).
func seal(ss, ct []byte, round uint64, layout [32]byte, from, to int, shares *[shareBox]byte, pairCT []byte) []byte {
	inf := info("shares", round, layout, from, to)
	aead := shareAEAD(ss, inf)
	out := make([]byte, 0, len(ct)+shareBox+aead.Overhead()+len(pairCT))
	out = append(out, ct...)
	out = aead.Seal(out, make([]byte, aead.NonceSize()), shares[:], append([]byte(inf), pairCT...))
	return append(out, pairCT...)
}

// split cuts sealed shares into the KEM ciphertext, the sealed box and the pairwise
// ciphertext.
func splitSealed(s suite, sealed []byte, withPair bool) (ct, box, pairCT []byte, ok bool) {
	if len(sealed) != sealedSize(s, withPair) {
		return nil, nil, nil, false
	}
	ct, box = sealed[:s.ctSize()], sealed[s.ctSize():s.ctSize()+shareBox+16]
	if withPair {
		pairCT = sealed[s.ctSize()+shareBox+16:]
	}
	return ct, box, pairCT, true
}

// open decrypts the box of shares that from sealed for to with the secret ss they share.
func open(ss []byte, round uint64, layout [32]byte, from, to int, box, pairCT []byte) (*[shareBox]byte, error) {
	inf := info("shares", round, layout, from, to)
	aead := shareAEAD(ss, inf)
	plain, err := aead.Open(nil, make([]byte, aead.NonceSize()), box, append([]byte(inf), pairCT...))
	if err != nil {
		return nil, err
	}
	shares := new([shareBox]byte)
	copy(shares[:], plain)
	clear(plain)
	return shares, nil
}
