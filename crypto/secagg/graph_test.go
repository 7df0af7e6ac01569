package secagg

import (
	"crypto/sha256"
	"errors"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/cloudflare/circl/group"
	"github.com/cloudflare/circl/secretsharing"
	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/quant"
)

func TestShape(t *testing.T) {
	cases := []struct {
		name     string
		cfg      Config
		n        int
		k, t, th int
		err      bool
		tooFew   bool
	}{
		{name: "pair", n: 2, k: 1, t: 2, th: 2},
		{name: "three", n: 3, k: 2, t: 2, th: 2},
		{name: "five", n: 5, k: 4, t: 3, th: 3},
		{name: "seven", n: 7, k: 6, t: 4, th: 4},
		{name: "hundred: still complete", n: 100, k: 99, t: 51, th: 51},
		{name: "101: SecAgg+", n: 101, k: 28, t: 15, th: 101 - 29 + 15},
		{name: "1000", n: 1000, k: 40, t: 21, th: 1000 - 41 + 21},
		{name: "k=14 at 100", cfg: Config{K: 14}, n: 100, k: 14, t: 8, th: 100 - 15 + 8},
		{name: "k=14, t=5", cfg: Config{K: 14, T: 5}, n: 100, k: 14, t: 5, th: 100 - 15 + 5},
		{name: "odd k, odd n", cfg: Config{K: 5}, n: 11, k: 6, t: 4, th: 11 - 7 + 4},
		{name: "odd k, even n", cfg: Config{K: 5}, n: 12, k: 5, t: 4, th: 12 - 6 + 4},
		{name: "k beyond the cohort", cfg: Config{K: 50}, n: 10, k: 9, t: 6, th: 6},
		{name: "t capped", cfg: Config{T: 9}, n: 3, k: 2, t: 3, th: 3},
		{name: "k=3 sparse", cfg: Config{K: 3}, n: 10, err: true},
		{name: "k=3 complete", cfg: Config{K: 3}, n: 4, k: 3, t: 3, th: 3},
		{name: "t=1", cfg: Config{T: 1}, n: 5, err: true},
		{name: "negative k", cfg: Config{K: -1}, n: 5, err: true},
		{name: "unknown KEM", cfg: Config{KEM: "rsa"}, n: 5, err: true},
		{name: "bad quantization", cfg: Config{Quant: quant.Config{Bits: 40}}, n: 5, err: true},
		{name: "one client", n: 1, err: true, tooFew: true},
		{name: "too many", n: MaxCohort + 1, err: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			k, tt, err := c.cfg.Shape(c.n)
			if c.err {
				if err == nil {
					t.Fatalf("Shape(%d) = %d, %d, want an error", c.n, k, tt)
				}
				if c.tooFew && !errors.Is(err, agg.ErrTooFewClients) {
					t.Errorf("%v, want %v", err, agg.ErrTooFewClients)
				}
				if th := c.cfg.Threshold(c.n); th <= c.n {
					t.Errorf("Threshold(%d) = %d for a cohort that cannot run", c.n, th)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if k != c.k || tt != c.t {
				t.Errorf("Shape(%d) = %d, %d, want %d, %d", c.n, k, tt, c.k, c.t)
			}
			if th := c.cfg.Threshold(c.n); th != c.th {
				t.Errorf("Threshold(%d) = %d, want %d", c.n, th, c.th)
			}
		})
	}
}

func TestGraph(t *testing.T) {
	layout := sha256.Sum256([]byte("graph"))
	for _, c := range []struct{ n, k int }{{5, 4}, {12, 4}, {13, 6}, {100, 14}, {101, 28}, {1000, 40}, {12, 5}, {30, 29}} {
		g := newGraph(1, layout, c.n, c.k)
		all := make([]bool, c.n+1)
		for i := 1; i <= c.n; i++ {
			all[i] = true
			if len(g[i]) != c.k {
				t.Fatalf("n=%d k=%d: member %d has %d neighbours", c.n, c.k, i, len(g[i]))
			}
			if !slices.IsSorted(g[i]) || slices.Contains(g[i], i) || len(slices.Compact(slices.Clone(g[i]))) != c.k {
				t.Fatalf("n=%d k=%d: neighbours of %d: %v", c.n, c.k, i, g[i])
			}
			for _, j := range g[i] {
				if !g.adjacent(j, i) {
					t.Fatalf("n=%d k=%d: %d is a neighbour of %d but not the reverse", c.n, c.k, j, i)
				}
			}
			h := g.holders(i)
			for pos, j := range h {
				if g.position(i, j) != pos+1 {
					t.Fatalf("position of %d among %d's holders %v is %d, want %d", j, i, h, g.position(i, j), pos+1)
				}
			}
		}
		if !g.connected(all) {
			t.Errorf("n=%d k=%d: not connected", c.n, c.k)
		}
		if again := newGraph(1, layout, c.n, c.k); !slices.EqualFunc(g, again, slices.Equal) {
			t.Errorf("n=%d k=%d: two draws of the same round differ", c.n, c.k)
		}
		if c.k < c.n-1 && slices.EqualFunc(g, newGraph(2, layout, c.n, c.k), slices.Equal) {
			t.Errorf("n=%d k=%d: rounds 1 and 2 have the same graph", c.n, c.k)
		}
	}
	t.Run("Harary", func(t *testing.T) {
		rng := rand.NewChaCha8([32]byte{})
		for _, c := range []struct{ n, k int }{{10, 4}, {12, 5}, {9, 6}} {
			g := make(graph, c.n+1)
			harary(g, rng, c.n, c.k)
			for i := 1; i <= c.n; i++ {
				if len(g[i]) != c.k || len(slices.Compact(slices.Clone(g[i]))) != c.k || slices.Contains(g[i], i) {
					t.Fatalf("H(%d,%d): neighbours of %d: %v", c.k, c.n, i, g[i])
				}
			}
		}
	})
	t.Run("prune", func(t *testing.T) {
		g := newGraph(1, layout, 12, 4)
		alive := make([]bool, 13)
		for i := 1; i <= 12; i++ {
			alive[i] = i%4 != 0
		}
		in := g.prune(alive, 3)
		for i := 1; i <= 12; i++ {
			if in[i] && (!alive[i] || 1+g.count(i, in) < 3) {
				t.Errorf("member %d kept with %d live holders", i, 1+g.count(i, in))
			}
		}
		if slices.Contains(in, true) && !g.connected(in) {
			t.Error("pruned set not connected")
		}
		if slices.Contains(g.prune(alive, 6), true) {
			t.Error("a threshold above every holder count left someone")
		}
	})
}

func TestShamir(t *testing.T) {
	for _, c := range []struct{ t, m int }{{2, 2}, {2, 3}, {3, 5}, {8, 15}, {51, 100}} {
		secret := randomScalar()
		shares := split(secret, c.t, c.m)
		lag := newLagrange(c.m)
		rng := rand.New(rand.NewPCG(uint64(c.t), uint64(c.m)))
		for range 5 {
			pos := rng.Perm(c.m)[:c.t]
			for i := range pos {
				pos[i]++
			}
			slices.Sort(pos)
			vals := make([]scalar, c.t)
			circlShares := make([]secretsharing.Share, c.t)
			for i, p := range pos {
				vals[i] = shares[p-1]
				circlShares[i] = secretsharing.Share{ID: group.Ristretto255.NewScalar().SetUint64(uint64(p)), Value: shares[p-1].s}
			}
			if got := lag.rebuild(pos, vals); !got.Equal(secret) {
				t.Fatalf("t=%d m=%d: shares at %v rebuild another secret", c.t, c.m, pos)
			}
			cached := len(lag.cache)
			if got := lag.rebuild(pos, vals); !got.Equal(secret) || len(lag.cache) != cached {
				t.Fatalf("t=%d m=%d: the same positions again: computed anew, or another secret", c.t, c.m)
			}
			// The same as circl's own recovery: the threshold convention is right.
			want, err := secretsharing.Recover(uint(c.t-1), circlShares)
			if err != nil || !want.IsEqual(secret.s) {
				t.Fatalf("t=%d m=%d: circl recovers another secret (%v)", c.t, c.m, err)
			}
			if c.t > 2 {
				// t-1 shares rebuild nothing: Lagrange over them gives another value.
				if got := lag.rebuild(pos[1:], vals[1:]); got.Equal(secret) {
					t.Fatalf("t=%d m=%d: t-1 shares rebuild the secret", c.t, c.m)
				}
			}
		}
	}
}
