package mhe

import (
	"crypto/aes"
	"crypto/cipher"
	"crypto/rand"
	"encoding/binary"
	"runtime"
	"slices"
	"sync"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/ring/ringqp"
	"github.com/tuneinsight/lattigo/v5/schemes/bgv"
)

// ctrPRNG is AES-128-CTR under a fresh random key: the randomness of encryption, several
// times faster than the BLAKE2b stream lattigo's samplers use by default.
type ctrPRNG struct{ s cipher.Stream }

func newPRNG() *ctrPRNG {
	var key [16]byte
	rand.Read(key[:]) // never fails
	b, err := aes.NewCipher(key[:])
	if err != nil {
		panic(err) // a 16-byte key is always valid
	}
	return &ctrPRNG{s: cipher.NewCTR(b, make([]byte, aes.BlockSize))}
}

func (p *ctrPRNG) Read(b []byte) (int, error) {
	clear(b)
	p.s.XORKeyStream(b, b)
	return len(b), nil
}

// encryptor encrypts under a collective public key, in coefficient form modulo q0, as
// lattigo's rlwe.Encryptor does with a special modulus: an encryption of zero modulo q0·p0,
// divided by p0, plus the plaintext. One encryptor serves one goroutine.
type encryptor struct {
	p      *params
	ringQP ringqp.Ring
	pk     [2]ringqp.Poly // NTT and Montgomery form, as lattigo keeps public keys
	prng   *ctrPRNG
	xe     ring.Sampler
	be     *ring.BasisExtender
	ecd    *bgv.Encoder
	pt     *rlwe.Plaintext
	u, e   ringqp.Poly
	c      [2]ringqp.Poly
	rnd    []byte
}

func newEncryptor(p *params, pk *rlwe.PublicKey) *encryptor {
	ringQP := *p.bgv.RingQP()
	prng := newPRNG()
	xe, err := ring.NewSampler(prng, p.bgv.RingQ(), p.bgv.Xe(), false)
	if err != nil {
		panic(err) // the parameters' own distribution
	}
	pt := bgv.NewPlaintext(p.bgv, 0)
	// Words go into coefficients, not slots: the protocol only adds, which both encodings
	// support alike, and the coefficient encoding spares a transform on either side.
	pt.IsBatched = false
	pt.IsNTT = false
	return &encryptor{
		p:      p,
		ringQP: ringQP,
		pk:     [2]ringqp.Poly{pk.Value[0], pk.Value[1]},
		prng:   prng,
		xe:     xe,
		be:     ring.NewBasisExtender(p.bgv.RingQ(), p.bgv.RingP()),
		ecd:    bgv.NewEncoder(p.bgv),
		pt:     pt,
		u:      ringQP.NewPoly(),
		e:      ringQP.NewPoly(),
		c:      [2]ringqp.Poly{ringQP.NewPoly(), ringQP.NewPoly()},
		rnd:    make([]byte, ringN+ringN/8),
	}
}

// encrypt encrypts the plaintext whose ringN coefficients are slots (each below T) into c0
// and c1 (ringN words each). slots == nil encrypts zero.
func (enc *encryptor) encrypt(slots []uint64, c0, c1 []uint64) error {
	enc.encryptZero()
	out := [2]ring.Poly{{Coeffs: [][]uint64{c0}}, {Coeffs: [][]uint64{c1}}}
	for i := range out {
		enc.be.ModDownQPtoQ(0, 0, enc.c[i].Q, enc.c[i].P, out[i])
	}
	ringQ := enc.ringQP.RingQ
	if slots != nil {
		if err := enc.ecd.Encode(slots, enc.pt); err != nil {
			return err
		}
		ringQ.Add(out[0], enc.pt.Value, out[0])
	}
	ringQ.Reduce(out[0], out[0])
	ringQ.Reduce(out[1], out[1])
	return nil
}

// encryptZero leaves in enc.c an encryption of zero modulo q0·p0 in coefficient form:
// (u·pk0 + e0, u·pk1 + e1), u ternary, e0 and e1 Gaussian.
func (enc *encryptor) encryptZero() {
	r := enc.ringQP
	enc.ternary(enc.u)
	r.NTT(enc.u, enc.u)
	for i := range enc.c {
		r.MulCoeffsMontgomery(enc.u, enc.pk[i], enc.c[i])
		r.INTT(enc.c[i], enc.c[i])
		enc.xe.Read(enc.e.Q)
		r.ExtendBasisSmallNormAndCenter(enc.e.Q, 0, enc.e.Q, enc.e.P)
		r.Add(enc.c[i], enc.e, enc.c[i])
	}
}

// ternary samples u with coefficients 0, 1 and -1, each with probability 1/3 (lattigo's
// default secret distribution, ring.Ternary{P: 2/3}), in both moduli.
func (enc *encryptor) ternary(u ringqp.Poly) {
	uq, up := u.Q.Coeffs[0], u.P.Coeffs[0]
	i := 0
	for i < ringN {
		enc.prng.Read(enc.rnd)
		for _, b := range enc.rnd {
			if b == 255 { // 255 = 3·85: reject to keep the three values equally likely
				continue
			}
			switch b % 3 {
			case 0:
				uq[i], up[i] = 0, 0
			case 1:
				uq[i], up[i] = 1, 1
			default:
				uq[i], up[i] = q0-1, p0-1
			}
			if i++; i == ringN {
				break
			}
		}
	}
}

// workers returns how many goroutines share n pieces of work.
func workers(n int) int {
	return max(1, min(runtime.GOMAXPROCS(0), n))
}

// parallel calls fn(w, i) for every i in [0, n), spread over workers(n) goroutines (w is the
// worker's number), and returns the first error.
func parallel(n int, fn func(w, i int) error) error {
	k := workers(n)
	if k == 1 {
		for i := range n {
			if err := fn(0, i); err != nil {
				return err
			}
		}
		return nil
	}
	errs := make([]error, k)
	var wg sync.WaitGroup
	for w := range k {
		wg.Go(func() {
			for i := w * n / k; i < (w+1)*n/k; i++ {
				if err := fn(w, i); err != nil {
					errs[w] = err
					return
				}
			}
		})
	}
	wg.Wait()
	for _, err := range errs {
		if err != nil {
			return err
		}
	}
	return nil
}

// The aggregates are kept lazily reduced: a word is congruent to its value modulo q0 and below
// q0 + slack, and normalize brings it below q0 when it is used. A coefficient on the wire is
// a 61-bit word, taken modulo q0: adding one keeps a word within q0 + (2^61 - q0) of its
// previous bound, so the slack grows by less than 2^18 a message, and stays below 2^30 for
// any cohort (MaxMembers ciphertexts and as many shares).
const (
	mask61 = 1<<61 - 1
	slack  = 1 << 30
)

// addWire adds the words of b (8 bytes each, little-endian) to acc, modulo q0, and reports
// whether all of them were below 2^61. If one was not, acc is left as it was (up to
// multiples of q0).
func addWire(acc []uint64, b []byte) bool {
	n := len(acc)
	k := workers(n >> 18) // a goroutine per 2 MiB or more
	if k == 1 {
		return addWireRange(acc, b)
	}
	ok := make([]bool, k)
	var wg sync.WaitGroup
	for w := range k {
		lo, hi := w*n/k, (w+1)*n/k
		wg.Go(func() { ok[w] = addWireRange(acc[lo:hi], b[8*lo:8*hi]) })
	}
	wg.Wait()
	if !slices.Contains(ok, false) {
		return true
	}
	for w := range k { // undo the parts that went through
		if ok[w] {
			lo, hi := w*n/k, (w+1)*n/k
			subWire(acc[lo:hi], b[8*lo:8*hi])
		}
	}
	return false
}

// addWireRange is addWire on one goroutine. It reads b once, and takes it back out of acc if
// a word was out of range. The check costs one operation a word: the loop runs at memory
// speed.
func addWireRange(acc []uint64, b []byte) bool {
	var bad uint64
	if x := asWords(b); x != nil {
		x = x[:len(acc)]
		for i, v := range x {
			bad |= v
			y := acc[i] + v&mask61 - q0
			acc[i] = y + q0&uint64(int64(y)>>63)
		}
	} else {
		b = b[:8*len(acc)]
		for i := range acc {
			v := binary.LittleEndian.Uint64(b[8*i:])
			bad |= v
			y := acc[i] + v&mask61 - q0
			acc[i] = y + q0&uint64(int64(y)>>63)
		}
	}
	if bad>>61 != 0 {
		subWire(acc, b)
		return false
	}
	return true
}

// subWire undoes addWireRange: for every word, of the two values below q0 + slack that the
// word had before (they differ by q0, when there are two), it restores one.
func subWire(acc []uint64, b []byte) {
	for i := range acc {
		a := acc[i] - binary.LittleEndian.Uint64(b[8*i:])&mask61
		if a >= q0+slack {
			a += q0
		}
		acc[i] = a
	}
}

// normalize reduces the words of a lazily reduced aggregate below q0.
func normalize(acc []uint64) {
	for i, a := range acc {
		y := a - q0
		acc[i] = y + q0&uint64(int64(y)>>63)
	}
}

// addWords sets acc to acc + x modulo q0, word by word (x below q0, acc lazily reduced).
func addWords(acc, x []uint64) {
	x = x[:len(acc)]
	for i := range acc {
		y := acc[i] + x[i] - q0
		acc[i] = y + q0&uint64(int64(y)>>63)
	}
}
