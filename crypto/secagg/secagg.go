// Package secagg implements SecAgg+, the secure aggregation of Bell, Bonawitz, Gascón, Lepoint
// and Raykova ("Secure Single-Server Aggregation with (Poly)Logarithmic Overhead", CCS 2020),
// as an agg.Protocol named "secagg": the server learns the sum of the cohort's inputs and
// nothing else, even when clients drop out in the middle of a round. The complete graph, the
// default for cohorts of up to 100 clients, is the protocol of Bonawitz et al. ("Practical
// Secure Aggregation for Privacy-Preserving Machine Learning", CCS 2017).
//
// Where to start: [New] returns the protocol; the server calls it with a nil [Identity], each
// client with its own (see [FromPKI]) and a [Verifier] of its peers' certificates (see
// [PKIVerifier]). Both sides then run as package agg describes: NewServer and NewClient, and
// the four phases below. Package crypto/quant encodes the inputs.
//
// # The round
//
// Each client i has k neighbours N(i) in a graph that everyone derives from the round, the
// layout hash, the cohort size n and k (see [Config.K]). Its holders H(i) = {i} ∪ N(i) each
// get one Shamir share, t of which rebuild a secret, as in Bonawitz et al., where a client keeps
// a share of its own secrets too.
//
//  0. Advertise. Client i draws a key pair c for encrypting shares and a secret scalar σ_i from
//     which its key pair s for pairwise masks is derived, and sends both public keys signed with
//     its certificate key (Ed25519, domain-separated, over the round, the layout, its index and
//     the keys). The server forwards to each client the adverts of its neighbours.
//
//  1. Share. Client i checks every advert (certificate through the Verifier, signature,
//     round, index, distinct keys) and refuses to go on if one fails. It draws a self-mask seed
//     b_i (a scalar), splits b_i and σ_i t-of-(k+1) over Ristretto255, and sends each
//     neighbour its two shares encrypted to that neighbour's c key (X25519: static ECDH, HKDF,
//     AES-256-GCM; hybrid: an encapsulation to X25519MLKEM768, HKDF, AES-256-GCM), bound to the
//     round, the layout, sender and recipient. With the hybrid KEM, for each neighbour j > i it
//     also encapsulates to j's s key, deterministically from σ_i and j, and the ciphertext goes
//     along: the pairwise secret of i and j is then recoverable from σ of either.
//
//  2. Mask. Client i decrypts the shares it received and sends its masked input
//
//     y_i = x_i + PRG(b_i) + Σ_{j ∈ N(i) ∩ U2} ±PRG(s_ij)  mod 2^32 (or 2^64)
//
//     where x_i is its input encoded by package quant, U2 the clients that shared, s_ij the
//     pairwise secret (X25519 of the s keys, or the hybrid KEM's), + when i < j and − when i > j,
//     and PRG an AES-128-CTR stream under a key derived with HKDF-SHA256 from the seed, the
//     round, the layout and the parties (self and pairwise masks are domain-separated).
//
//  3. Unmask. The server tells each client which of its neighbours sent a masked input (U3). For
//     each neighbour j that shared, the client sends its share of b_j if j is in U3 and its share
//     of σ_j otherwise — never both, and never twice. The server rebuilds b_i for every i in U3
//     and σ_j for every j that shared but sent no masked input, recomputes the dropped clients'
//     pairwise masks from σ_j, removes all masks and decodes the sum. The Lagrange coefficients
//     of a set of share positions are computed once and reused for every secret shared over
//     the same positions (in a round without dropouts, one set for the whole round).
//
// The server closes each phase on its own schedule (agg.Server.Next). At every phase it keeps
// only clients whose holders still count t among the live ones and that are connected to the
// rest, and aborts with agg.ErrTooFewClients, before anything is unmasked, when no such set is
// left, when the survivors' graph is not connected (the server would learn the sums of the
// pieces), or when a secret it needs has fewer than t shares. A round of a cohort of n survives
// any Config.Threshold(n) clients; for the complete graph that is t.
//
// # Driving it
//
// The server makes its side with New(cfg, nil, verify).NewServer(p, cohort), and each client
// with New(cfg, FromPKI(id), PKIVerifier(pool, federation)).NewClient(p, index, in): cfg (K,
// T, KEM, Quant) must reach the clients with the round's settings, and each client checks the
// server's k and t against its own; [Config.Threshold] is the least cohort survival a round
// needs (a floor for the server's min_clients). The key advertisement does not bind the cohort
// size, which a client learns only in phase 1. Messages are sized as follows: the masked input
// is the 56-byte header and 4 bytes a value and a group (8 when the sum needs 64 bits, see
// package quant), so 1.00005 times float32 for a million values; the others are small (an
// advert is some 620 bytes with a federation certificate, 3 KB with the hybrid KEM, and the
// server's phase-1 message holds k of them). Receive never keeps a reference to a message;
// NewClient keeps the input until phase 2. A refused message of phase 3 leaves the client's
// masked input in the sum: its self mask is rebuilt from its neighbours' shares. Neither side
// is safe for concurrent use, and both use all processors on long vectors. A round's secrets
// are zeroed once it is done or has failed; masked inputs are summed on arrival and not kept.
//
// # Security
//
// Inputs stay private against an honest-but-curious server that colludes with fewer than t of
// any client's holders: it sees only masked inputs, and for each client it rebuilds either the
// self mask or the pairwise secrets, never both; clients check this on their side too (they
// refuse a request for both shares of one neighbour, or about a neighbour that never shared).
// The default t is a strict majority of the k+1 holders, so that even a server that tells
// different clients different stories about who dropped cannot collect t shares of both of one
// client's secrets. Clients detect a server that forges, alters or substitutes key
// advertisements, since each is signed with the key of its client's certificate and checked
// against the federation CA.
//
// What it does not do: the further checks of Bonawitz et al. §6 against a fully malicious
// server (signed consistency rounds on the list of survivors), so a malicious server could give
// different clients different views of a round; authentication of the routed shares to their
// sender in hybrid mode (the server could swap them, which breaks the sum, not privacy); and
// protection against clients that send wrong inputs or wrong shares (which garble the sum: the
// server detects only shares that contradict a client's advertised key). The server learns
// the sum of the survivors' inputs, by design, and who survived.
package secagg

import (
	"crypto/ed25519"
	"errors"
	"fmt"
	"math"
	"math/bits"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/dp"
	"github.com/fedweave/fedweave/crypto/quant"
)

// Config is a task's choice of SecAgg+ parameters. The server and every client must use the
// same one: each client checks the server's k and t against its own.
type Config struct {
	// K is the number of neighbours of each client. 0 picks the complete graph (k = n-1,
	// Bonawitz et al.) for cohorts of up to 100 clients, and for larger ones the SecAgg+ graph
	// of 4·ceil(log2 n) neighbours, where the complete graph would cost each client n-1 key
	// agreements and mask streams. With the default T, 98 to 100 % of simulated rounds of 101
	// to 5,000 clients complete when 20 % of them drop at the worst time (after sharing), and
	// most fail at 30 %: raise K, or lower T, for flakier cohorts. A K of n-1 or more means
	// the complete graph.
	// A sparse graph needs at least 4 neighbours (fewer would fall apart into pieces whose sums
	// the server would learn), and n·k even: an odd K in an odd cohort counts as K+1.
	K int `json:"k,omitempty"`
	// T is the number of shares that rebuild a secret, out of the k+1 holders (a client and its
	// neighbours). 0 means a strict majority, floor((k+1)/2) + 1, the least that keeps a
	// server from rebuilding both secrets of one client. It must be at least 2 and is capped at
	// k+1, so that tiny cohorts need everyone.
	T int `json:"t,omitempty"`
	// KEM names the key agreement: "x25519" (the default, "") or "hybrid" (X25519 with
	// ML-KEM-768, circl's X25519MLKEM768, for protection against a future quantum computer
	// that records today's rounds).
	KEM string `json:"kem,omitempty"`
	// Quant is how inputs are encoded. Its Clip must cover the inputs' range; see package quant.
	Quant quant.Config `json:"quant"`
	// Noise is distributed differential privacy: the variance, in quantization steps squared,
	// of the symmetric Skellam noise (crypto/dp.AddSkellam) each client adds to every quantized
	// value word (not the weight words) of its encoding before masking, so that the sum carries
	// the noise of the whole cohort and nobody sees a less noisy input. 0 means none. With
	// noise, the layout is crypto/dp.NoisyLayout's: the modulus leaves room for the cohort's
	// noise, exceeded with probability 2^-64 a value, so the modular sum does not wrap.
	Noise float64 `json:"noise,omitempty"`
}

// layout returns the encoding of a round of a cohort of n under c: quant.NewLayout, or with
// Noise, dp.NoisyLayout. The server and every client compute it alike.
func (c Config) layout(p agg.Params, n int) (quant.Layout, error) {
	if c.Noise > 0 {
		return dp.NoisyLayout(c.Quant, p.Groups, p.NumGroups, n, p.MaxWeight, c.Noise)
	}
	return quant.NewLayout(c.Quant, p.Groups, p.NumGroups, n, p.MaxWeight)
}

// Limits of the protocol, so that decoders bound what they accept.
const (
	// MaxCohort is the largest cohort a round may have.
	MaxCohort = 1 << 16
	// maxCert bounds the certificate in a key advertisement.
	maxCert = 16 << 10
)

// Shape returns the neighbours per client and the shares needed to rebuild a secret for a
// cohort of n clients.
func (c Config) Shape(n int) (k, t int, err error) {
	if err := c.validate(); err != nil {
		return 0, 0, err
	}
	if n < 2 || n > MaxCohort {
		return 0, 0, fmt.Errorf("secagg: a cohort of %d, want 2 to %d: %w", n, MaxCohort, agg.ErrTooFewClients)
	}
	k = c.K
	if k == 0 {
		k = n - 1
		if n > 100 {
			k = 4 * bits.Len(uint(n-1)) // 4·ceil(log2 n)
		}
	}
	if k >= n-1 {
		k = n - 1
	} else {
		if k < 4 {
			return 0, 0, fmt.Errorf("secagg: %d neighbours, want at least 4 or the complete graph", k)
		}
		if n*k%2 == 1 {
			k = min(k+1, n-1)
		}
	}
	t = c.T
	if t == 0 {
		t = (k+1)/2 + 1
	}
	t = min(t, k+1)
	return k, t, nil
}

// Threshold returns the fewest clients that must survive a round of a cohort of n for it to
// complete whoever drops, n - (k+1) + t: each secret then keeps t live holders. For the
// complete graph that is t. A SecAgg+ graph also needs the survivors to stay connected, as
// random graphs do with high probability. It returns n+1 when no round of n can complete.
func (c Config) Threshold(n int) int {
	k, t, err := c.Shape(n)
	if err != nil {
		return n + 1
	}
	return n - (k + 1) + t
}

func (c Config) validate() error {
	if c.K < 0 {
		return fmt.Errorf("secagg: %d neighbours", c.K)
	}
	if c.T < 0 || c.T == 1 {
		return fmt.Errorf("secagg: threshold of %d shares, want at least 2", c.T)
	}
	if _, err := suiteFor(c.KEM); err != nil {
		return err
	}
	if !(c.Noise >= 0) || math.IsInf(c.Noise, 0) {
		return fmt.Errorf("secagg: noise variance %v, want 0 or a positive finite number", c.Noise)
	}
	return c.Quant.Validate()
}

// An Identity is what a client signs its key advertisement with: its certificate (DER, the
// leaf the federation CA issued) and a function that signs with the certificate's Ed25519 key.
type Identity struct {
	CertDER []byte
	Sign    func(msg []byte) []byte
}

// A Verifier checks a peer's certificate (DER): that it chains to the federation CA, is valid
// now and names a client. It returns the certificate's Ed25519 public key, which must then
// verify the peer's advertisement.
type Verifier func(certDER []byte) (ed25519.PublicKey, error)

// ErrForgedAdvert means a key advertisement failed verification: its certificate was refused,
// its signature does not match it, or its keys repeat another's. A client that receives one
// refuses to go on with the round; the error also matches agg.ErrBadMessage.
var ErrForgedAdvert = errors.New("secagg: key advertisement fails verification")

// New returns the SecAgg+ protocol of cfg. A client passes its identity and a Verifier, both
// required by NewClient; the server passes a nil self, and a Verifier if it wants to refuse
// bad adverts early (clients check them regardless). New keeps self and verify.
//
// A Config that cannot work makes NewClient and NewServer fail.
func New(cfg Config, self *Identity, verify Verifier) agg.Protocol {
	return &protocol{cfg: cfg, self: self, verify: verify}
}

type protocol struct {
	cfg    Config
	self   *Identity
	verify Verifier
}

var _ agg.Protocol = (*protocol)(nil)

func (*protocol) Name() string { return "secagg" }
