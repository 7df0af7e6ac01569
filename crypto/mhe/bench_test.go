package mhe

import (
	"crypto/sha256"
	"math/rand/v2"
	"slices"
	"sort"
	"sync"
	"testing"
	"time"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/quant"
)

// The benchmarks' shape: a cohort of benchClients clients, each with benchValues values in
// benchGroups parameter groups.
const (
	benchClients = 100
	benchValues  = 1_000_000
	benchGroups  = 4
)

// benchFixture is built once per test binary: a key set-up of benchClients members (the
// default threshold, a strict majority), the round's parameters and inputs, every client's
// phase-0 message, and the decryption shares of the first t of them.
type benchFixture struct {
	kms     []*KeyMaterial
	p       agg.Params
	inputs  []agg.Input
	msgs    [][]byte       // phase-0 messages
	asked   []int          // cohort members whose shares the server combines
	shares  map[int][]byte // their phase-1 messages
	plain   []quant.Vector // the clients' encodings, for the plaintext sum
	setupIn time.Duration
}

var (
	benchOnce sync.Once
	bench     *benchFixture
	benchErr  error
)

func benchParams() agg.Params {
	p := agg.Params{
		Round: 7, LayoutHash: sha256.Sum256([]byte("bench layout")),
		NumValues: benchValues, NumGroups: benchGroups, Groups: make([]uint8, benchValues),
	}
	for i := range p.Groups {
		p.Groups[i] = uint8(i * benchGroups / benchValues)
	}
	return p
}

// benchInputs returns n inputs: a few distinct random vectors (values in [-0.1, 0.1)), shared
// among clients to save memory, with weights of up to 655 (the set-up's default bound for
// 100 members: 32-bit sums).
func benchInputs(p agg.Params, n int) []agg.Input {
	rng := rand.New(rand.NewPCG(1, 1))
	var vecs [][]float32
	for range 4 {
		v := make([]float32, p.NumValues)
		for i := range v {
			v[i] = float32(rng.Float64()*0.2 - 0.1)
		}
		vecs = append(vecs, v)
	}
	inputs := make([]agg.Input, n)
	for i := range inputs {
		w := make([]float64, p.NumGroups)
		for g := range w {
			w[g] = float64(1 + rng.IntN(655))
		}
		inputs[i] = agg.Input{Values: vecs[i%len(vecs)], Weights: w}
	}
	return inputs
}

func getBench(b *testing.B) *benchFixture {
	if testing.Short() {
		b.Skip("the fixture takes some 30 s to build")
	}
	benchOnce.Do(func() { bench, benchErr = newBenchFixture() })
	if benchErr != nil {
		b.Fatal(benchErr)
	}
	return bench
}

func newBenchFixture() (*benchFixture, error) {
	f := &benchFixture{p: benchParams(), shares: map[int][]byte{}}
	start := time.Now()
	_, kms, err := RunSetup(SetupConfig{Task: "bench", Members: benchClients})
	if err != nil {
		return nil, err
	}
	f.setupIn = time.Since(start)
	f.kms = kms
	f.inputs = benchInputs(f.p, benchClients)
	proto := New(Config{}, KeyRing(kms))
	srv, err := proto.NewServer(f.p, benchClients)
	if err != nil {
		return nil, err
	}
	clients := make([]agg.Client, benchClients)
	for i := range clients {
		if clients[i], err = proto.NewClient(f.p, i+1, f.inputs[i]); err != nil {
			return nil, err
		}
		c := clients[i].(*client)
		c.rng = rand.NewChaCha8([32]byte{byte(i)})
		msg, err := c.Phase(0, nil)
		if err != nil {
			return nil, err
		}
		if err := srv.Receive(i+1, msg); err != nil {
			return nil, err
		}
		f.msgs = append(f.msgs, msg)
		v, err := c.r.layout.Encode(f.inputs[i].Values, f.inputs[i].Weights, rand.NewChaCha8([32]byte{byte(i)}))
		if err != nil {
			return nil, err
		}
		f.plain = append(f.plain, v)
	}
	s := srv.(*server)
	s.choose = firstT
	out, _, err := s.Next()
	if err != nil {
		return nil, err
	}
	for i, req := range out {
		if f.shares[i], err = clients[i-1].Phase(1, req); err != nil {
			return nil, err
		}
		f.asked = append(f.asked, i)
	}
	slices.Sort(f.asked)
	return f, nil
}

// firstT asks the candidates of least index.
func firstT(cands []int, t int) []int { return slices.Sorted(slices.Values(cands))[:t] }

// BenchmarkClientEncrypt measures one client's phase 0 at d = 1,000,000: quantization, BGV
// encoding and encryption under the collective key. It reports the message's size per value.
func BenchmarkClientEncrypt(b *testing.B) {
	if testing.Short() {
		b.Skip("d = 1,000,000")
	}
	// A set-up of benchClients members, as for BenchmarkServerAggregate, so that the client
	// encodes with the same layout and encrypts under the same parameters; its threshold of
	// 1, which encryption does not depend on, keeps the set-up short.
	_, kms, err := RunSetup(SetupConfig{Task: "bench-encrypt", Members: benchClients, Threshold: 1})
	if err != nil {
		b.Fatal(err)
	}
	p := benchParams()
	in := benchInputs(p, 1)[0]
	proto := New(Config{}, kms[0])
	var msg []byte
	for b.Loop() {
		c, err := proto.NewClient(p, 1, in)
		if err != nil {
			b.Fatal(err)
		}
		if msg, err = c.Phase(0, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(msg))/float64(p.NumValues), "bytes_per_value")
}

// BenchmarkServerAggregate measures the server's side of a round of 100 clients at
// d = 1,000,000: adding the 100 ciphertexts as they arrive, asking for t = 51 decryption
// shares and adding them, decrypting and decoding. It reports x_plain, its ratio to the
// plaintext sum of the same 100 encodings (quant.Vector.Add, 100 vectors of 1M uint32)
// measured in the same run.
func BenchmarkServerAggregate(b *testing.B) {
	f := getBench(b)
	b.Logf("fixture: set-up of %d members in %v", benchClients, f.setupIn)
	plain := plainSum(f.plain)
	defer func() {
		// The plaintext sum, measured before and after the loop; the faster counts.
		plain = min(plain, plainSum(f.plain))
		per := b.Elapsed() / time.Duration(b.N)
		b.ReportMetric(float64(per)/float64(plain), "x_plain")
		b.ReportMetric(float64(plain)/1e6, "plain_ms")
	}()
	proto := New(Config{}, f.kms[0].Public())
	for b.Loop() {
		srv, err := proto.NewServer(f.p, benchClients)
		if err != nil {
			b.Fatal(err)
		}
		s := srv.(*server)
		s.choose = firstT
		for i, msg := range f.msgs {
			if err := s.Receive(i+1, msg); err != nil {
				b.Fatal(err)
			}
		}
		if _, _, err := s.Next(); err != nil {
			b.Fatal(err)
		}
		for _, i := range f.asked {
			if err := s.Receive(i, f.shares[i]); err != nil {
				b.Fatal(err)
			}
		}
		if _, done, err := s.Next(); err != nil || !done {
			b.Fatal(err)
		}
		if _, err := s.Result(); err != nil {
			b.Fatal(err)
		}
	}
}

// plainSum returns the median time of summing vs into a fresh vector, over 7 tries.
func plainSum(vs []quant.Vector) time.Duration {
	var ts []time.Duration
	for range 7 {
		start := time.Now()
		acc := vs[0].Clone()
		for _, v := range vs[1:] {
			acc.Add(v)
		}
		ts = append(ts, time.Since(start))
	}
	sort.Slice(ts, func(i, j int) bool { return ts[i] < ts[j] })
	return ts[len(ts)/2]
}
