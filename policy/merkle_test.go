package policy

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"testing"
)

// Reference implementation of RFC 6962 §2.1, straight from its definitions, over leaf hashes.

func refMTH(d []Hash) Hash {
	switch len(d) {
	case 0:
		return sha256.Sum256(nil)
	case 1:
		return d[0]
	}
	k := refSplit(len(d))
	return NodeHash(refMTH(d[:k]), refMTH(d[k:]))
}

// refSplit is the largest power of two smaller than n.
func refSplit(n int) int {
	k := 1
	for k*2 < n {
		k *= 2
	}
	return k
}

func refPath(m int, d []Hash) []Hash {
	if len(d) <= 1 {
		return nil
	}
	k := refSplit(len(d))
	if m < k {
		return append(refPath(m, d[:k]), refMTH(d[k:]))
	}
	return append(refPath(m-k, d[k:]), refMTH(d[:k]))
}

func refSubproof(m int, d []Hash, b bool) []Hash {
	n := len(d)
	if m == n {
		if b {
			return nil
		}
		return []Hash{refMTH(d)}
	}
	k := refSplit(n)
	if m <= k {
		return append(refSubproof(m, d[:k], b), refMTH(d[k:]))
	}
	return append(refSubproof(m-k, d[k:], false), refMTH(d[:k]))
}

// memSubtrees serves perfect subtrees from leaf hashes in memory.
func memSubtrees(leaves []Hash) subtrees {
	return func(level int, index uint64) (Hash, error) {
		lo, n := index<<level, uint64(1)<<level
		if lo+n > uint64(len(leaves)) {
			return Hash{}, fmt.Errorf("no subtree %d/%d", level, index)
		}
		return refMTH(leaves[lo : lo+n]), nil
	}
}

func leavesOf(entries ...[]byte) []Hash {
	out := make([]Hash, len(entries))
	for i, e := range entries {
		out[i] = LeafHash(e)
	}
	return out
}

func h(t testing.TB, s string) Hash {
	t.Helper()
	b, err := hex.DecodeString(s)
	if err != nil || len(b) != 32 {
		t.Fatalf("bad hash %q", s)
	}
	return Hash(b)
}

// The trees of sizes 1 to 8, written out by hand from the definitions.
func TestHashByHand(t *testing.T) {
	sum := func(parts ...[]byte) Hash {
		hh := sha256.New()
		for _, p := range parts {
			hh.Write(p)
		}
		return Hash(hh.Sum(nil))
	}
	var d [8][]byte
	var l [8]Hash
	for i := range d {
		d[i] = []byte{byte(i), 'x'}
		l[i] = sum([]byte{0}, d[i])
	}
	n := func(a, b Hash) Hash { return sum([]byte{1}, a[:], b[:]) }
	want := []Hash{
		1: l[0],
		2: n(l[0], l[1]),
		3: n(n(l[0], l[1]), l[2]),
		4: n(n(l[0], l[1]), n(l[2], l[3])),
		5: n(n(n(l[0], l[1]), n(l[2], l[3])), l[4]),
		6: n(n(n(l[0], l[1]), n(l[2], l[3])), n(l[4], l[5])),
		7: n(n(n(l[0], l[1]), n(l[2], l[3])), n(n(l[4], l[5]), l[6])),
		8: n(n(n(l[0], l[1]), n(l[2], l[3])), n(n(l[4], l[5]), n(l[6], l[7]))),
	}
	leaves := leavesOf(d[:]...)
	for size := 1; size <= 8; size++ {
		got, err := rootOf(memSubtrees(leaves[:size]), uint64(size))
		if err != nil {
			t.Fatal(err)
		}
		if got != want[size] {
			t.Errorf("size %d: root %s, by hand %s", size, got, want[size])
		}
		var f frontier
		for _, lf := range leaves[:size] {
			if err := f.add(lf, nil); err != nil {
				t.Fatal(err)
			}
		}
		if f.root() != want[size] {
			t.Errorf("size %d: frontier root %s, by hand %s", size, f.root(), want[size])
		}
	}
	// The audit path of leaf 5 of 7 and the consistency proof from 3 to 7, by hand.
	p, err := inclusionProof(memSubtrees(leaves[:7]), 5, 7)
	if err != nil {
		t.Fatal(err)
	}
	if wantP := []Hash{l[4], l[6], want[4]}; fmt.Sprint(p) != fmt.Sprint(wantP) {
		t.Errorf("PATH(5, D[7]) = %v, by hand %v", p, wantP)
	}
	c, err := consistencyProof(memSubtrees(leaves[:7]), 3, 7)
	if err != nil {
		t.Fatal(err)
	}
	// RFC 6962 §2.1.3's example: PROOF(3, D[7]) = [c, d, g, l].
	if wantC := []Hash{l[2], l[3], n(l[0], l[1]), n(n(l[4], l[5]), l[6])}; fmt.Sprint(c) != fmt.Sprint(wantC) {
		t.Errorf("PROOF(3, D[7]) = %v, by hand %v", c, wantC)
	}
}

// ctVectors are the known answers of RFC 6962 implementations (Certificate Transparency's
// test data), in testdata/rfc6962.json.
type ctVectors struct {
	Leaves    []string `json:"leaves"`
	Roots     []string `json:"roots"`
	Inclusion []struct {
		Index, Size uint64
		Proof       []string
	} `json:"inclusion"`
	Consistency []struct {
		First, Second uint64
		Proof         []string
	} `json:"consistency"`
}

func TestKnownAnswers(t *testing.T) {
	data, err := os.ReadFile("testdata/rfc6962.json")
	if err != nil {
		t.Fatal(err)
	}
	var v ctVectors
	if err := json.Unmarshal(data, &v); err != nil {
		t.Fatal(err)
	}
	var leaves []Hash
	for _, s := range v.Leaves {
		b, err := hex.DecodeString(s)
		if err != nil {
			t.Fatal(err)
		}
		leaves = append(leaves, LeafHash(b))
	}
	roots := make([]Hash, len(v.Roots))
	for size, s := range v.Roots {
		roots[size] = h(t, s)
		got, err := rootOf(memSubtrees(leaves[:size]), uint64(size))
		if err != nil {
			t.Fatal(err)
		}
		if got != roots[size] {
			t.Errorf("root of size %d = %s, want %s", size, got, s)
		}
	}
	for _, c := range v.Inclusion {
		want := make([]Hash, len(c.Proof))
		for i, s := range c.Proof {
			want[i] = h(t, s)
		}
		got, err := inclusionProof(memSubtrees(leaves[:c.Size]), c.Index, c.Size)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("inclusion proof of %d in %d = %v, %v; want %v", c.Index, c.Size, got, err, want)
		}
		if err := VerifyInclusion(leaves[c.Index], c.Index, c.Size, want, roots[c.Size]); err != nil {
			t.Errorf("known inclusion proof of %d in %d: %v", c.Index, c.Size, err)
		}
	}
	for _, c := range v.Consistency {
		want := make([]Hash, len(c.Proof))
		for i, s := range c.Proof {
			want[i] = h(t, s)
		}
		got, err := consistencyProof(memSubtrees(leaves[:c.Second]), c.First, c.Second)
		if err != nil || fmt.Sprint(got) != fmt.Sprint(want) {
			t.Errorf("consistency proof %d to %d = %v, %v; want %v", c.First, c.Second, got, err, want)
		}
		if err := VerifyConsistency(c.First, c.Second, roots[c.First], roots[c.Second], want); err != nil {
			t.Errorf("known consistency proof %d to %d: %v", c.First, c.Second, err)
		}
	}
}

// Every proof of every tree up to size 20 matches the reference, verifies, and fails once
// changed.
func TestProofsAllPairs(t *testing.T) {
	const max = 20
	var leaves []Hash
	for i := range max {
		leaves = append(leaves, LeafHash(fmt.Appendf(nil, "entry %d", i)))
	}
	roots := make([]Hash, max+1)
	for n := 0; n <= max; n++ {
		roots[n] = refMTH(leaves[:n])
	}
	get := memSubtrees(leaves)
	for n := uint64(1); n <= max; n++ {
		for m := uint64(0); m < n; m++ {
			p, err := inclusionProof(get, m, n)
			if err != nil {
				t.Fatal(err)
			}
			if want := refPath(int(m), leaves[:n]); fmt.Sprint(p) != fmt.Sprint(want) {
				t.Fatalf("PATH(%d, D[%d]) = %v, reference %v", m, n, p, want)
			}
			if err := VerifyInclusion(leaves[m], m, n, p, roots[n]); err != nil {
				t.Fatalf("inclusion %d in %d: %v", m, n, err)
			}
			for _, bad := range mangle(p) {
				if err := VerifyInclusion(leaves[m], m, n, bad, roots[n]); !errors.Is(err, ErrProof) {
					t.Fatalf("mangled inclusion proof %d in %d verifies: %v", m, n, bad)
				}
			}
			if err := VerifyInclusion(leaves[(m+1)%n], m, n, p, roots[n]); n > 1 && err == nil {
				t.Fatalf("inclusion %d in %d verifies for another leaf", m, n)
			}
			if err := VerifyInclusion(leaves[m], m, n, p, roots[n-1]); err == nil {
				t.Fatalf("inclusion %d in %d verifies against another root", m, n)
			}
		}
	}
	for n := uint64(0); n <= max; n++ {
		for m := uint64(0); m <= n; m++ {
			p, err := consistencyProof(get, m, n)
			if err != nil {
				t.Fatal(err)
			}
			if 0 < m && m < n {
				if want := refSubproof(int(m), leaves[:n], true); fmt.Sprint(p) != fmt.Sprint(want) {
					t.Fatalf("PROOF(%d, D[%d]) = %v, reference %v", m, n, p, want)
				}
			} else if len(p) != 0 {
				t.Fatalf("PROOF(%d, D[%d]) = %v, want empty", m, n, p)
			}
			if err := VerifyConsistency(m, n, roots[m], roots[n], p); err != nil {
				t.Fatalf("consistency %d to %d: %v", m, n, err)
			}
			for _, bad := range mangle(p) {
				if err := VerifyConsistency(m, n, roots[m], roots[n], bad); !errors.Is(err, ErrProof) {
					t.Fatalf("mangled consistency proof %d to %d verifies: %v", m, n, bad)
				}
			}
			if m > 0 && m < n {
				other := roots[m]
				other[0] ^= 1
				if err := VerifyConsistency(m, n, other, roots[n], p); err == nil {
					t.Fatalf("consistency %d to %d verifies with a wrong old root", m, n)
				}
				if err := VerifyConsistency(m, n, roots[m], roots[n-1], p); err == nil {
					t.Fatalf("consistency %d to %d verifies with a wrong new root", m, n)
				}
			}
		}
	}
	if err := VerifyConsistency(5, 4, roots[5], roots[4], nil); err == nil {
		t.Error("a tree that shrank is consistent")
	}
	if err := VerifyInclusion(leaves[3], 3, 3, nil, roots[3]); err == nil {
		t.Error("an index out of the tree is included")
	}
}

// mangle returns proofs that differ from p: each hash flipped, one hash dropped, one added,
// and two neighbours swapped.
func mangle(p []Hash) [][]Hash {
	var out [][]Hash
	for i := range p {
		q := append([]Hash(nil), p...)
		q[i][7] ^= 0x10
		out = append(out, q)
	}
	if len(p) > 0 {
		out = append(out, p[:len(p)-1], p[1:])
	}
	out = append(out, append(append([]Hash(nil), p...), Hash{0xab}))
	if len(p) >= 2 && p[0] != p[1] {
		q := append([]Hash(nil), p...)
		q[0], q[1] = q[1], q[0]
		out = append(out, q)
	}
	return out
}
