package mhe

import (
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
)

// TestExactSum checks the law the protocol exists for: the server decrypts exactly the sum,
// modulo the encoding's word size, of the contributors' quantized vectors (integers compared,
// no tolerance), whichever t or more members are online to decrypt; with fewer than t it
// aborts with ErrTooFewClients and decrypts nothing.
func TestExactSum(t *testing.T) {
	const n, th = 7, 4
	_, kr := setupFor(t, SetupConfig{Task: "exact", Members: n, Threshold: th, MaxWeight: 1000})
	// 9000 values and 3 weights: 3 ciphertexts, the last one partly filled.
	p := testParams(11, 9000, 3)
	inputs := testInputs(1, p, n, 1000)
	rng := rand.New(rand.NewPCG(2, 2))
	type trial struct {
		absent []int // send no ciphertext
		online []int // answer decryption requests
	}
	trials := []trial{
		{online: []int{1, 2, 3, 4}},           // exactly t, the least indices
		{online: []int{4, 5, 6, 7}},           // exactly t, the greatest
		{online: []int{1, 3, 5, 7}},           // exactly t, spread
		{absent: []int{2, 6}, online: nil},    // 5 contributors, all online
		{absent: []int{1, 2, 3}, online: nil}, // exactly t contributors
		{online: []int{1, 2, 3, 4, 5, 6, 7}},  // everyone
	}
	for range 6 { // random sets of t to n online members
		online := rng.Perm(n)[:th+rng.IntN(n-th+1)]
		for i := range online {
			online[i]++
		}
		trials = append(trials, trial{online: online})
	}
	for k, tr := range trials {
		t.Run(fmt.Sprintf("absent %v online %v", tr.absent, tr.online), func(t *testing.T) {
			r := newRound(t, Config{}, kr, p, inputs)
			if err := r.play(t, uint64(k), inputs, tr.absent, tr.online); err != nil {
				t.Fatalf("round: %v", err)
			}
			if !r.srv.vec.Equal(r.want) {
				t.Fatalf("decrypted encoding differs from the sum of the encodings")
			}
			sum, err := r.srv.Result()
			if err != nil {
				t.Fatal(err)
			}
			var contributors []int
			for i := 1; i <= n; i++ {
				if !slices.Contains(tr.absent, i) {
					contributors = append(contributors, i)
				}
			}
			if !slices.Equal(sum.Contributors, contributors) {
				t.Errorf("contributors %v, want %v", sum.Contributors, contributors)
			}
			t.Logf("%d phases", r.phases)
		})
	}
	for _, online := range [][]int{{1, 2, 3}, {5, 7}, {}} {
		t.Run(fmt.Sprintf("online %v, too few", online), func(t *testing.T) {
			r := newRound(t, Config{}, kr, p, inputs)
			err := r.play(t, 1, inputs, nil, online)
			if !errors.Is(err, agg.ErrTooFewClients) {
				t.Fatalf("round with %d of %d online: %v, want %v", len(online), th, err, agg.ErrTooFewClients)
			}
			if r.srv.vec.Len() != 0 {
				t.Errorf("the server decrypted something")
			}
			if _, err := r.srv.Result(); err == nil {
				t.Errorf("Result of an aborted round: no error")
			}
		})
	}
}

// TestWideSums runs a layout whose sums need 64-bit words (32-bit values): the plaintext
// modulus, not the word size, bounds the sums.
func TestWideSums(t *testing.T) {
	const n = 3
	_, kr := setupFor(t, SetupConfig{Task: "wide", Members: n, Bits: 24, MaxWeight: 1 << 12})
	p := testParams(3, 100, 2)
	p.MaxWeight = 1 << 12
	inputs := testInputs(3, p, n, 1<<12)
	cfg := Config{}
	cfg.Quant.Bits = 24
	r := newRound(t, cfg, kr, p, inputs)
	if !r.layout.Wide {
		t.Fatalf("layout is not wide")
	}
	if err := r.play(t, 9, inputs, nil, nil); err != nil {
		t.Fatal(err)
	}
	if !r.srv.vec.Equal(r.want) {
		t.Fatalf("decrypted encoding differs from the sum of the encodings")
	}
}

// TestRoundTooWide: a round whose weights the set-up's modulus cannot hold is refused up
// front, on both sides.
func TestRoundTooWide(t *testing.T) {
	pub, kr := setupFor(t, SetupConfig{Task: "exact", Members: 7, Threshold: 4, MaxWeight: 1000})
	p := testParams(1, 10, 1)
	p.MaxWeight = 1 << 20
	if _, err := New(Config{}, pub).NewServer(p, 7); err == nil {
		t.Errorf("NewServer with weights up to 2^20: no error")
	}
	if _, err := New(Config{}, kr[0]).NewClient(p, 1, testInputs(1, p, 1, 10)[0]); err == nil {
		t.Errorf("NewClient with weights up to 2^20: no error")
	}
	// Without a declared bound, the round admits what the modulus holds, and no more.
	p.MaxWeight = 0
	in := testInputs(1, p, 1, 10)[0]
	in.Weights[0] = 1 << 20
	if _, err := New(Config{}, kr[0]).NewClient(p, 1, in); !errors.Is(err, agg.ErrBadInput) {
		t.Errorf("NewClient with a weight of 2^20: %v, want %v", err, agg.ErrBadInput)
	}
}
