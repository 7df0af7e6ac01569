package secagg

import (
	"bytes"
	"crypto/ed25519"
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
)

// The package's own tests use a toy certificate authority, far cheaper than X.509, so that
// they can play thousands of rounds: a "certificate" is a magic tag, the member's Ed25519
// public key and the CA's signature of both. The conformance test and the example use the
// real one (package pki).
const toyCertTag = "toy-cert"

type toyCA struct {
	priv ed25519.PrivateKey
	pub  ed25519.PublicKey
	keys map[int]ed25519.PrivateKey
}

func newToyCA(name string) *toyCA {
	seed := sha256.Sum256([]byte("toy CA " + name))
	priv := ed25519.NewKeyFromSeed(seed[:])
	return &toyCA{priv: priv, pub: priv.Public().(ed25519.PublicKey), keys: make(map[int]ed25519.PrivateKey)}
}

func (ca *toyCA) key(i int) ed25519.PrivateKey {
	if k, ok := ca.keys[i]; ok {
		return k
	}
	seed := sha256.Sum256(fmt.Appendf(nil, "toy member %d of %x", i, ca.pub))
	k := ed25519.NewKeyFromSeed(seed[:])
	ca.keys[i] = k
	return k
}

func (ca *toyCA) cert(pub ed25519.PublicKey) []byte {
	c := append([]byte(toyCertTag), pub...)
	return append(c, ed25519.Sign(ca.priv, c)...)
}

func (ca *toyCA) identity(i int) *Identity {
	k := ca.key(i)
	return &Identity{CertDER: ca.cert(k.Public().(ed25519.PublicKey)), Sign: func(m []byte) []byte { return ed25519.Sign(k, m) }}
}

func (ca *toyCA) verifier() Verifier {
	return func(der []byte) (ed25519.PublicKey, error) {
		n := len(toyCertTag) + ed25519.PublicKeySize
		if len(der) != n+ed25519.SignatureSize || !bytes.HasPrefix(der, []byte(toyCertTag)) {
			return nil, errors.New("not a toy certificate")
		}
		if !ed25519.Verify(ca.pub, der[:n], der[n:]) {
			return nil, errors.New("toy certificate not signed by the toy CA")
		}
		return ed25519.PublicKey(der[len(toyCertTag):n]), nil
	}
}

// cohort makes the server's and the clients' protocols of one configuration, each client with
// its own identity.
type cohort struct {
	cfg Config
	ca  *toyCA
}

func newCohort(cfg Config) *cohort { return &cohort{cfg: cfg, ca: newToyCA("test")} }

func (c *cohort) Name() string { return "secagg" }

func (c *cohort) NewClient(p agg.Params, index int, in agg.Input) (agg.Client, error) {
	return New(c.cfg, c.ca.identity(index), c.ca.verifier()).NewClient(p, index, in)
}

func (c *cohort) NewServer(p agg.Params, n int) (agg.Server, error) {
	return New(c.cfg, nil, c.ca.verifier()).NewServer(p, n)
}

func testParams(n, groups int) agg.Params {
	p := agg.Params{
		Round:      7,
		LayoutHash: sha256.Sum256([]byte("secagg test layout")),
		NumValues:  n,
		NumGroups:  groups,
		Groups:     make([]uint8, n),
	}
	for i := range p.Groups {
		p.Groups[i] = uint8(i * groups / n)
	}
	return p
}

func randomInputs(rng *rand.Rand, p agg.Params, n int) []agg.Input {
	inputs := make([]agg.Input, n)
	for i := range inputs {
		in := agg.Input{Values: make([]float32, p.NumValues), Weights: make([]float64, p.NumGroups)}
		for j := range in.Values {
			in.Values[j] = float32(2*rng.Float64() - 1)
		}
		for g := range in.Weights {
			in.Weights[g] = float64(rng.IntN(100))
		}
		inputs[i] = in
	}
	return inputs
}

// trace is a round played step by step, with its internals at hand.
type trace struct {
	srv     *server
	clients map[int]*client // those still in the round
	all     map[int]*client
	sent    []map[int][]byte // what the clients sent, by phase
	told    []map[int][]byte // what the server sent, by phase it is answered in
	sum     agg.Sum
	err     error // of Next
}

// play runs a round of the inputs in which the members in drop[p] vanish before answering
// phase p (drop[0]: they send nothing at all). tamper, if not nil, may change the server's
// messages before the clients see them. Clients keep their encodings for the tests.
func play(t testing.TB, proto agg.Protocol, p agg.Params, inputs []agg.Input, drop map[int][]int, tamper func(phase int, msgs map[int][]byte)) *trace {
	t.Helper()
	srv, err := proto.NewServer(p, len(inputs))
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	tr := &trace{srv: srv.(*server), clients: make(map[int]*client), all: make(map[int]*client)}
	for i, in := range inputs {
		c, err := proto.NewClient(p, i+1, in)
		if err != nil {
			t.Fatalf("NewClient %d: %v", i+1, err)
		}
		tr.clients[i+1] = c.(*client)
		tr.clients[i+1].keepEncoding = true
		tr.all[i+1] = tr.clients[i+1]
	}
	var from map[int][]byte
	for phase := 0; ; phase++ {
		for _, i := range drop[phase] {
			delete(tr.clients, i)
		}
		if tamper != nil && phase > 0 {
			tamper(phase, from)
		}
		tr.told = append(tr.told, from)
		sent := make(map[int][]byte)
		for _, i := range slices.Sorted(maps.Keys(tr.clients)) {
			msg, ok := from[i]
			if phase > 0 && !ok {
				continue
			}
			out, err := tr.clients[i].Phase(phase, msg)
			if err != nil {
				t.Fatalf("member %d, phase %d: %v", i, phase, err)
			}
			sent[i] = out
			if err := tr.srv.Receive(i, out); err != nil {
				t.Fatalf("server refused member %d in phase %d: %v", i, phase, err)
			}
		}
		tr.sent = append(tr.sent, sent)
		out, done, err := tr.srv.Next()
		if err != nil {
			tr.err = err
			return tr
		}
		if done {
			tr.sum, err = tr.srv.Result()
			if err != nil {
				t.Fatalf("Result: %v", err)
			}
			return tr
		}
		from = out
	}
}
