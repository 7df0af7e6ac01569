package mhe

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/quant"
)

// setups caches in-memory set-ups by config, so that tests share them.
var setups sync.Map // SetupConfig -> *setupResult

type setupResult struct {
	once sync.Once
	pub  *PublicSetup
	kms  []*KeyMaterial
	err  error
}

func setupFor(t testing.TB, cfg SetupConfig) (*PublicSetup, KeyRing) {
	t.Helper()
	v, _ := setups.LoadOrStore(cfg, &setupResult{})
	r := v.(*setupResult)
	r.once.Do(func() { r.pub, r.kms, r.err = RunSetup(cfg) })
	if r.err != nil {
		t.Fatalf("RunSetup(%+v): %v", cfg, r.err)
	}
	return r.pub, r.kms
}

// testParams returns a round of n values in g groups.
func testParams(round uint64, n, g int) agg.Params {
	p := agg.Params{
		Round: round, LayoutHash: sha256.Sum256([]byte("mhe test layout")),
		NumValues: n, NumGroups: g, Groups: make([]uint8, n),
	}
	for i := range p.Groups {
		p.Groups[i] = uint8(i * g / n)
	}
	return p
}

// testInputs returns n inputs with values in [-1, 1) and weights from 1 to maxWeight.
func testInputs(seed uint64, p agg.Params, n int, maxWeight int) []agg.Input {
	rng := rand.New(rand.NewPCG(seed, 99))
	inputs := make([]agg.Input, n)
	for i := range inputs {
		in := agg.Input{Values: make([]float32, p.NumValues), Weights: make([]float64, p.NumGroups)}
		for j := range in.Values {
			in.Values[j] = float32(2*rng.Float64() - 1)
		}
		for g := range in.Weights {
			in.Weights[g] = float64(1 + rng.IntN(maxWeight))
		}
		inputs[i] = in
	}
	return inputs
}

// roundRun is one round played step by step in memory: the server holds only the public
// set-up, each client its own key material, and each client's rounding draws from a seeded
// stream, so that the test knows its encoding.
type roundRun struct {
	srv     *server
	clients map[int]*client
	layout  quant.Layout
	want    quant.Vector // the sum of the contributors' encodings, modulo the word size
	phases  int
}

// newRound makes the server and the clients of a round of inputs, cohort member i being
// set-up member kr[i-1].Member().
func newRound(t testing.TB, cfg Config, kr KeyRing, p agg.Params, inputs []agg.Input) *roundRun {
	t.Helper()
	srv, err := New(cfg, kr[0].Public()).NewServer(p, len(inputs))
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	r := &roundRun{srv: srv.(*server), clients: map[int]*client{}}
	r.layout = r.srv.r.layout
	r.want = r.layout.NewVector()
	for i, in := range inputs {
		c, err := New(cfg, kr[i]).NewClient(p, i+1, in)
		if err != nil {
			t.Fatalf("NewClient %d: %v", i+1, err)
		}
		r.clients[i+1] = c.(*client)
	}
	return r
}

// seed makes client i's rounding draw from a stream of seed s.
func rounding(s uint64, i int) *rand.ChaCha8 {
	var k [32]byte
	k[0], k[1] = byte(s), byte(i)
	return rand.NewChaCha8(k)
}

// play runs the round: the clients in absent send nothing, those outside online vanish
// before decryption (nil: all stay). It returns the error of Next, if any.
func (r *roundRun) play(t testing.TB, seed uint64, inputs []agg.Input, absent, online []int) error {
	t.Helper()
	msgs := map[int][]byte{}
	for i, c := range r.clients {
		if slices.Contains(absent, i) {
			continue
		}
		c.rng = rounding(seed, i)
		m, err := c.Phase(0, nil)
		if err != nil {
			t.Fatalf("client %d, phase 0: %v", i, err)
		}
		msgs[i] = m
		v, err := r.layout.Encode(inputs[i-1].Values, inputs[i-1].Weights, rounding(seed, i))
		if err != nil {
			t.Fatal(err)
		}
		r.want.Add(v)
	}
	for phase := 0; ; phase++ {
		for _, i := range slices.Sorted(mapKeys(msgs)) {
			if err := r.srv.Receive(i, msgs[i]); err != nil {
				t.Fatalf("phase %d: server refused client %d: %v", phase, i, err)
			}
		}
		out, done, err := r.srv.Next()
		r.phases = phase + 1
		if err != nil || done {
			return err
		}
		msgs = map[int][]byte{}
		for i, req := range out {
			if online != nil && !slices.Contains(online, i) {
				continue
			}
			m, err := r.clients[i].Phase(phase+1, req)
			if err != nil {
				t.Fatalf("client %d, phase %d: %v", i, phase+1, err)
			}
			msgs[i] = m
		}
	}
}

func mapKeys[V any](m map[int]V) func(func(int) bool) {
	return func(yield func(int) bool) {
		for k := range m {
			if !yield(k) {
				return
			}
		}
	}
}

// split is a protocol whose server holds only the public set-up and whose clients each hold
// their own key material, as in a real federation.
type split struct {
	cfg Config
	pub *PublicSetup
	kr  KeyRing
}

func (s split) Name() string { return "mhe" }
func (s split) NewServer(p agg.Params, n int) (agg.Server, error) {
	return New(s.cfg, s.pub).NewServer(p, n)
}
func (s split) NewClient(p agg.Params, i int, in agg.Input) (agg.Client, error) {
	if i < 1 || i > len(s.kr) {
		return nil, fmt.Errorf("no client %d", i)
	}
	return New(s.cfg, s.kr[i-1]).NewClient(p, i, in)
}

func isBad(err error) bool { return errors.Is(err, agg.ErrBadMessage) }
