package secagg

import (
	"crypto/sha256"
	"encoding/binary"
	"math/bits"
	"math/rand/v2"
	"slices"
)

// The neighbour graph of a round is a function of public values only — the round, the layout
// hash, the cohort size n and the degree k — so that the server and every client compute the
// same one, and the server cannot choose it. For k = n-1 it is the complete graph. Otherwise it
// is a random k-regular graph, as in Bell et al.: the pairing (configuration) model, drawn
// point pair by point pair while refusing loops and repeated edges (the method of Steger and
// Wormald), and restarted when it gets stuck; after 64 failed attempts, which takes far
// sparser luck than cohorts of interest have, a Harary graph (a ring where each client is
// linked to the k/2 nearest on either side, and across for odd k) over a random permutation.
// Randomness comes from ChaCha8 seeded with SHA-256 of the public values, and integers are
// drawn from it by Lemire's method, so the graph does not depend on the Go version.

// graph holds each cohort member's neighbours, ascending; index 0 is unused.
type graph [][]int

func newGraph(round uint64, layout [32]byte, n, k int) graph {
	g := make(graph, n+1)
	if k >= n-1 {
		for i := 1; i <= n; i++ {
			g[i] = make([]int, 0, n-1)
			for j := 1; j <= n; j++ {
				if j != i {
					g[i] = append(g[i], j)
				}
			}
		}
		return g
	}
	h := sha256.New()
	h.Write([]byte("fedweave/secagg/v1 graph\x00"))
	h.Write(binary.LittleEndian.AppendUint64(nil, round))
	h.Write(layout[:])
	h.Write(binary.LittleEndian.AppendUint32(nil, uint32(n)))
	h.Write(binary.LittleEndian.AppendUint32(nil, uint32(k)))
	rng := rand.NewChaCha8([32]byte(h.Sum(nil)))
	for range 64 {
		if randomRegular(g, rng, n, k) {
			return g
		}
	}
	harary(g, rng, n, k)
	return g
}

// uniform returns an integer in [0, n) (Lemire's nearly divisionless method).
func uniform(rng *rand.ChaCha8, n int) int {
	hi, lo := bits.Mul64(rng.Uint64(), uint64(n))
	if lo < uint64(n) {
		thresh := -uint64(n) % uint64(n)
		for lo < thresh {
			hi, lo = bits.Mul64(rng.Uint64(), uint64(n))
		}
	}
	return int(hi)
}

// randomRegular fills g with a random k-regular graph, or reports false if the draw got stuck.
func randomRegular(g graph, rng *rand.ChaCha8, n, k int) bool {
	for i := 1; i <= n; i++ {
		g[i] = g[i][:0]
	}
	points := make([]int, 0, n*k)
	for i := 1; i <= n; i++ {
		for range k {
			points = append(points, i)
		}
	}
	ok := func(a, b int) bool { return a != b && !slices.Contains(g[a], b) }
	for len(points) > 0 {
		x, y, found := 0, 0, false
		for range 100 {
			x, y = uniform(rng, len(points)), uniform(rng, len(points))
			if ok(points[x], points[y]) {
				found = true
				break
			}
		}
		if !found { // near the end: look for any pair that still fits
		search:
			for x = range points {
				for y = x + 1; y < len(points); y++ {
					if ok(points[x], points[y]) {
						found = true
						break search
					}
				}
			}
			if !found {
				return false
			}
		}
		a, b := points[x], points[y]
		g[a] = append(g[a], b)
		g[b] = append(g[b], a)
		// Remove both points, the higher position first.
		x, y = max(x, y), min(x, y)
		points[x] = points[len(points)-1]
		points = points[:len(points)-1]
		points[y] = points[len(points)-1]
		points = points[:len(points)-1]
	}
	for i := 1; i <= n; i++ {
		slices.Sort(g[i])
	}
	return true
}

// harary fills g with the Harary graph H(k, n) over a random permutation of the members.
func harary(g graph, rng *rand.ChaCha8, n, k int) {
	perm := make([]int, n)
	for i := range perm {
		perm[i] = i + 1
	}
	for i := n - 1; i > 0; i-- {
		j := uniform(rng, i+1)
		perm[i], perm[j] = perm[j], perm[i]
	}
	for i := 1; i <= n; i++ {
		g[i] = g[i][:0]
	}
	link := func(p, q int) {
		a, b := perm[p%n], perm[q%n]
		g[a] = append(g[a], b)
		g[b] = append(g[b], a)
	}
	for p := range n {
		for d := 1; d <= k/2; d++ {
			link(p, p+d)
		}
		if k%2 == 1 && p < n/2 { // n is even when k is odd
			link(p, p+n/2)
		}
	}
	for i := 1; i <= n; i++ {
		slices.Sort(g[i])
	}
}

// holders returns i's holders, itself and its neighbours, ascending: the positions of its
// shares are 1 + the index in this list.
func (g graph) holders(i int) []int {
	h := make([]int, 0, len(g[i])+1)
	h = append(h, g[i]...)
	pos, _ := slices.BinarySearch(h, i)
	return slices.Insert(h, pos, i)
}

// position returns the share position of holder j of i's secrets (1-based), or 0 if j does
// not hold one.
func (g graph) position(i, j int) int {
	if i == j {
		pos, _ := slices.BinarySearch(g[i], i)
		return pos + 1
	}
	pos, found := slices.BinarySearch(g[i], j)
	if !found {
		return 0
	}
	if j > i {
		return pos + 2
	}
	return pos + 1
}

// adjacent reports whether i and j are neighbours.
func (g graph) adjacent(i, j int) bool {
	_, found := slices.BinarySearch(g[i], j)
	return found
}

// prune returns the largest subset of alive (a set of members) in which every member has at
// least t holders, itself included, and which is connected, or an empty set.
func (g graph) prune(alive []bool, t int) []bool {
	in := slices.Clone(alive)
	for {
		changed := false
		// Members with too few live holders go, until none is left.
		for again := true; again; {
			again = false
			for i := 1; i < len(in); i++ {
				if in[i] && 1+g.count(i, in) < t {
					in[i] = false
					again, changed = true, true
				}
			}
		}
		// Then all but the largest connected piece (the lowest index breaks ties).
		comp := g.largestComponent(in)
		for i := 1; i < len(in); i++ {
			if in[i] && !comp[i] {
				in[i] = false
				changed = true
			}
		}
		if !changed {
			return in
		}
	}
}

// count returns how many of i's neighbours are in set.
func (g graph) count(i int, set []bool) int {
	c := 0
	for _, j := range g[i] {
		if set[j] {
			c++
		}
	}
	return c
}

// largestComponent returns the largest connected piece of the graph induced on set.
func (g graph) largestComponent(set []bool) []bool {
	label := make([]int, len(set))
	best, bestSize := 0, 0
	var stack []int
	for s := 1; s < len(set); s++ {
		if !set[s] || label[s] != 0 {
			continue
		}
		label[s] = s
		size := 0
		stack = append(stack[:0], s)
		for len(stack) > 0 {
			i := stack[len(stack)-1]
			stack = stack[:len(stack)-1]
			size++
			for _, j := range g[i] {
				if set[j] && label[j] == 0 {
					label[j] = s
					stack = append(stack, j)
				}
			}
		}
		if size > bestSize {
			best, bestSize = s, size
		}
	}
	out := make([]bool, len(set))
	for i := range set {
		out[i] = best != 0 && label[i] == best
	}
	return out
}

// connected reports whether the graph induced on set is connected (and set not empty).
func (g graph) connected(set []bool) bool {
	comp := g.largestComponent(set)
	for i := range set {
		if set[i] != comp[i] {
			return false
		}
	}
	return slices.Contains(set, true)
}
