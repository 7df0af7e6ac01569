package mhe

import (
	"fmt"
	"math"
	"math/bits"
	"sync"

	"github.com/tuneinsight/lattigo/v5/core/rlwe"
	"github.com/tuneinsight/lattigo/v5/ring"
	"github.com/tuneinsight/lattigo/v5/schemes/bgv"
)

// The fixed part of the parameters; see the package doc for the reasoning.
const (
	logN  = 12
	ringN = 1 << logN // coefficients of a polynomial, and slots of a plaintext
	// slotsPerCT is how many words of an encoding one ciphertext carries; its last slot carries
	// the check (see the package doc).
	slotsPerCT = ringN - 1

	// q0 is the ciphertext modulus: the largest prime below 2^61 that is 1 mod 2N.
	q0 uint64 = 0x1ffffffffffde001
	// p0 is the special modulus of key generation and encryption, the largest 30-bit prime
	// that is 1 mod 2N: encryption works modulo q0·p0 and divides by p0 before it sends.
	p0 uint64 = 1073692673

	// xeSigma is the standard deviation of fresh errors (lattigo's default, the HE standard's).
	xeSigma = rlwe.DefaultNoise
	// marginSigmas: the total decryption noise is kept within budget/marginSigmas standard
	// deviations, so that one coefficient overflows with probability erfc(12/√2) < 2^-108.
	marginSigmas = 12
	// minFloodRatio is the least ratio of the flooding noise to the encryption noise it hides
	// that a set-up accepts.
	minFloodRatio = 1 << 10
	// maxAttempts bounds the decryption attempts of a round (phases 1 to maxAttempts); each
	// attempt after the first adds the server's encryption of zero to the aggregate.
	maxAttempts = 8
	// maxCapBits bounds the width of the sums a set-up is sized for.
	maxCapBits = 48
)

// params are the parameters of a set-up, derived from its SetupConfig alone.
type params struct {
	bgv        bgv.Parameters
	t          uint64  // plaintext modulus T: prime, 1 mod 2N, > 2^capBits
	capBits    int     // every sum of the set-up lies in (-2^(capBits-1), 2^(capBits-1))
	budget     uint64  // decryption is exact while the noise is at most this, coefficient by coefficient
	noiseCT    float64 // standard deviation of the encryption noise of an aggregate (upper estimate)
	noiseTotal float64 // standard deviation of the total decryption noise, budget / marginSigmas
	sigma      float64 // standard deviation of each decryption share's flooding noise
}

// derive computes the parameters of a normalized config.
func derive(c SetupConfig) (*params, error) {
	n, th := c.Members, c.Threshold
	capBits := c.Bits + ceilLog2(uint64(n)*c.MaxWeight)
	if capBits > maxCapBits {
		return nil, fmt.Errorf("mhe: %d members with weights up to %d need %d-bit sums of %d-bit values, more than %d", n, c.MaxWeight, capBits, c.Bits, maxCapBits)
	}
	t, err := plaintextModulus(capBits)
	if err != nil {
		return nil, err
	}
	p := &params{t: t, capBits: capBits}
	// Decryption computes T·(c0 + c1·s) = m + T·e mod q0 with m in [0, T): it is exact while
	// |m + T·e| < q0/2.
	p.budget = (q0/2 - t) / t
	// Encryption noise of one client: encryption runs modulo q0·p0 and divides by p0, so what
	// is left is the rounding r0 + r1·s (r uniform in [-1/2, 1/2], variance 1/12) plus the
	// fresh noise over p0, with s the sum of n ternary secrets (variance 2/3 each).
	// Before the division, u·e + e0 + e1·s has variance σ²(1 + N·(2/3)·n + N·(2n/3)), with u
	// ternary and e the sum of the n members' errors.
	vs := 2 * float64(n) / 3
	fresh := xeSigma * xeSigma * (1 + 2*float64(ringN)*vs)
	client := 1.0/12 + float64(ringN)/12*vs + fresh/(float64(p0)*float64(p0))
	// An aggregate adds at most n clients and maxAttempts-1 re-randomizations.
	p.noiseCT = math.Sqrt(float64(n+maxAttempts-1) * client)
	p.noiseTotal = float64(p.budget) / marginSigmas
	if p.noiseTotal < minFloodRatio*p.noiseCT {
		return nil, fmt.Errorf("mhe: a plaintext modulus of %d bits leaves room for flooding noise only %.0f times the encryption noise of %d members, want %d: declare smaller weights or fewer bits", bits.Len64(t), p.noiseTotal/p.noiseCT, n, minFloodRatio)
	}
	// The t shares' flooding noise (each Gaussian of variance sigma² + xeSigma², the fresh
	// noise lattigo adds) and the encryption noise add up to noiseTotal².
	v := (p.noiseTotal*p.noiseTotal-p.noiseCT*p.noiseCT)/float64(th) - xeSigma*xeSigma
	p.sigma = math.Floor(math.Sqrt(v))
	p.bgv, err = bgvParams(t)
	if err != nil {
		return nil, err
	}
	return p, nil
}

// plaintextModulus returns the least prime T = 1 mod 2N above 2^capBits.
func plaintextModulus(capBits int) (uint64, error) {
	const step = 2 * ringN
	t := uint64(1)<<capBits + 1
	t += (step - (t-1)%step) % step // the first candidate that is 1 mod 2N
	for ; t < q0/4; t += step {
		if ring.IsPrime(t) {
			return t, nil
		}
	}
	return 0, fmt.Errorf("mhe: no plaintext modulus for %d-bit sums", capBits)
}

// ceilLog2 returns the least L with x <= 2^L (0 for x <= 1).
func ceilLog2(x uint64) int {
	if x <= 1 {
		return 0
	}
	return bits.Len64(x - 1)
}

var bgvCache sync.Map // uint64 T -> bgv.Parameters

// bgvParams returns the BGV parameters of plaintext modulus t: N = 4096, Q = {q0}, P = {p0}.
func bgvParams(t uint64) (bgv.Parameters, error) {
	if p, ok := bgvCache.Load(t); ok {
		return p.(bgv.Parameters), nil
	}
	p, err := bgv.NewParametersFromLiteral(bgv.ParametersLiteral{
		LogN:             logN,
		Q:                []uint64{q0},
		P:                []uint64{p0},
		Xe:               rlwe.DefaultXe,
		Xs:               rlwe.DefaultXs,
		PlaintextModulus: t,
	})
	if err != nil {
		return bgv.Parameters{}, fmt.Errorf("mhe: BGV parameters: %w", err)
	}
	if p.MaxSlots() != ringN {
		return bgv.Parameters{}, fmt.Errorf("mhe: plaintext modulus %d gives %d slots, want %d", t, p.MaxSlots(), ringN)
	}
	bgvCache.Store(t, p)
	return p, nil
}
