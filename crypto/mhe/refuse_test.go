package mhe

import (
	"encoding/binary"
	"slices"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
)

// decryptionRound plays phase 0 of a round of 5 members (t = 3) and returns it with the
// decryption requests of phase 1, made to members 1, 2 and 3.
func decryptionRound(t *testing.T, round uint64) (*roundRun, map[int][]byte, []agg.Input) {
	t.Helper()
	_, kr := setupFor(t, SetupConfig{Task: "refuse", Members: 5, Threshold: 3, MaxWeight: 100})
	p := testParams(round, 300, 2)
	inputs := testInputs(round, p, 5, 100)
	r := newRound(t, Config{}, kr, p, inputs)
	r.srv.choose = func([]int, int) []int { return []int{1, 2, 3} }
	for i := 1; i <= 5; i++ {
		msg, err := r.clients[i].Phase(0, nil)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.srv.Receive(i, msg); err != nil {
			t.Fatal(err)
		}
	}
	out, done, err := r.srv.Next()
	if err != nil || done {
		t.Fatalf("Next: %v", err)
	}
	return r, out, inputs
}

// TestShareRefusals: the server refuses decryption shares from members it did not ask, from
// outside the cohort, for another round or another request, and twice from one member.
func TestShareRefusals(t *testing.T) {
	r, reqs, _ := decryptionRound(t, 20)
	other, otherReqs, _ := decryptionRound(t, 21)
	shares := map[int][]byte{}
	for i, req := range reqs {
		s, err := r.clients[i].Phase(1, req)
		if err != nil {
			t.Fatal(err)
		}
		shares[i] = s
	}
	foreign, err := other.clients[1].Phase(1, otherReqs[1])
	if err != nil {
		t.Fatal(err)
	}
	refuse := func(from int, msg []byte, what string) {
		t.Helper()
		if err := r.srv.Receive(from, msg); !isBad(err) {
			t.Errorf("%s: %v, want %v", what, err, agg.ErrBadMessage)
		}
	}
	refuse(4, shares[1], "member 1's share from member 4, not asked")
	refuse(0, shares[1], "a share from cohort member 0")
	refuse(6, shares[1], "a share from cohort member 6, outside the cohort")
	refuse(-1, shares[1], "a share from cohort member -1")
	if err := r.srv.Receive(2, shares[2]); err != nil {
		t.Fatal(err)
	}
	refuse(2, shares[2], "the same share twice")
	refuse(3, shares[3][:len(shares[3])-8], "a truncated share")
	// Member 1's share for round 21: refused, and member 1 is out of this attempt.
	refuse(1, foreign, "a share for another round")
	if _, done, err := r.srv.Next(); err != nil || done {
		t.Fatalf("Next after refusals: done %v, %v", done, err)
	}
	if !r.srv.gone[1] || !r.srv.gone[3] {
		t.Errorf("refused members are not set aside")
	}
	// A share for the previous request, now stale: refused, but member 2 may still answer.
	refuse(2, shares[2], "a share for the previous request")
	if !r.srv.pending[2] {
		t.Errorf("a stale share cost member 2 its turn")
	}
}

// TestClientRefusals: a client refuses requests for another round, another key set, without
// itself, with too few members or out of order, and a second request for the same aggregate
// (which could give away its key share).
func TestClientRefusals(t *testing.T) {
	r, reqs, _ := decryptionRound(t, 30)
	req := reqs[1]
	c := r.clients[1]
	edit := func(f func(b []byte) []byte) []byte { return f(slices.Clone(req)) }
	bad := map[string][]byte{
		"another round":  edit(func(b []byte) []byte { b[8]++; return b }),
		"another phase":  edit(func(b []byte) []byte { b[6]++; return b }),
		"another layout": edit(func(b []byte) []byte { b[20]++; return b }),
		"another key set": edit(func(b []byte) []byte {
			b[50]++
			return b
		}),
		"a sender": edit(func(b []byte) []byte { b[80] = 1; return b }),
		"without member 1": edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[roundHeaderLen+4:], 4) // members 4, 2, 3
			return b
		}),
		"members out of order": edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[roundHeaderLen+8:], 1) // members 1, 1, 3
			return b
		}),
		"a member outside the set-up": edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[roundHeaderLen+12:], 9)
			return b
		}),
		"too few members": edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[roundHeaderLen:], 2)
			return b
		}),
		"a coefficient out of range": edit(func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[len(b)-8:], q0)
			return b
		}),
		"truncated": req[:len(req)-1],
		"empty":     nil,
	}
	for what, msg := range bad {
		if _, err := c.Phase(1, msg); !isBad(err) {
			t.Errorf("a request with %s: %v, want %v", what, err, agg.ErrBadMessage)
		}
	}
	if _, err := c.Phase(1, req); err != nil {
		t.Fatalf("the real request: %v", err)
	}
	// The same aggregate for another set of members: members 1, 2 and 4.
	again := slices.Clone(req)
	binary.LittleEndian.PutUint16(again[6:], 2)
	binary.LittleEndian.PutUint32(again[roundHeaderLen+12:], 4)
	if _, err := c.Phase(2, again); !isBad(err) {
		t.Errorf("a second request for the same aggregate: %v, want %v", err, agg.ErrBadMessage)
	}
	if _, err := c.Phase(1, req); err == nil {
		t.Errorf("phase 1 twice: no error")
	}
}

// TestCiphertextRefusals: the server refuses ciphertexts with a coefficient of more than 61
// bits, and leaves its aggregate as it was.
func TestCiphertextRefusals(t *testing.T) {
	_, kr := setupFor(t, SetupConfig{Task: "refuse", Members: 5, Threshold: 3, MaxWeight: 100})
	// 600,000 values: a message large enough that the server adds it on two goroutines.
	p := testParams(40, 600_000, 1)
	inputs := testInputs(40, p, 5, 100)
	r := newRound(t, Config{}, kr, p, inputs)
	var msgs [][]byte
	for i := 1; i <= 5; i++ {
		r.clients[i].rng = rounding(40, i)
		msg, err := r.clients[i].Phase(0, nil)
		if err != nil {
			t.Fatal(err)
		}
		msgs = append(msgs, msg)
		v, _ := r.layout.Encode(inputs[i-1].Values, inputs[i-1].Weights, rounding(40, i))
		r.want.Add(v)
	}
	if err := r.srv.Receive(1, msgs[0]); err != nil {
		t.Fatal(err)
	}
	before := slices.Clone(r.srv.acc)
	for _, at := range []int{roundHeaderLen, roundHeaderLen + 8*1000, roundHeaderLen + 8*(len(msgs[1])/16), len(msgs[1]) - 8} {
		bad := slices.Clone(msgs[1])
		binary.LittleEndian.PutUint64(bad[at:], 1<<61|3)
		r.srv.seen[2] = false // let client 2 try again
		if err := r.srv.Receive(2, bad); !isBad(err) {
			t.Errorf("a coefficient of 62 bits at byte %d: %v", at, err)
		}
		for i := range before {
			if (r.srv.acc[i]-before[i])%q0 != 0 && (before[i]-r.srv.acc[i])%q0 != 0 {
				t.Fatalf("aggregate word %d changed after a refused message", i)
			}
		}
	}
	for i := 2; i <= 5; i++ {
		r.srv.seen[i] = false
		if err := r.srv.Receive(i, msgs[i-1]); err != nil {
			t.Fatal(err)
		}
	}
	out, _, err := r.srv.Next()
	if err != nil {
		t.Fatal(err)
	}
	for i, req := range out {
		s, err := r.clients[i].Phase(1, req)
		if err != nil {
			t.Fatal(err)
		}
		if err := r.srv.Receive(i, s); err != nil {
			t.Fatal(err)
		}
	}
	if _, done, err := r.srv.Next(); err != nil || !done {
		t.Fatal(err)
	}
	if !r.srv.vec.Equal(r.want) {
		t.Errorf("wrong sum after refused messages")
	}
}

// TestLazyReduction: words taken modulo q0 (61-bit words at or above q0) add up like their
// residues, and undoing a message restores a congruent aggregate.
func TestLazyReduction(t *testing.T) {
	acc := []uint64{0, 1, q0 - 1, q0 - 1, 5, q0 - 2}
	want := slices.Clone(acc)
	in := []uint64{mask61, q0, q0 - 1, mask61, 0, q0 + 7}
	b := make([]byte, 8*len(in))
	putWords(b, in)
	for range 1000 {
		if !addWireRange(acc, b) {
			t.Fatal("refused")
		}
		for i := range want {
			want[i] = (want[i] + in[i]%q0) % q0
		}
	}
	for i, a := range acc {
		if a >= q0+slack || a%q0 != want[i] {
			t.Errorf("word %d: %d, want %d modulo q0 and below q0 + slack", i, a, want[i])
		}
	}
	before := slices.Clone(acc)
	in[3] = 1 << 62
	putWords(b, in)
	if addWireRange(acc, b) {
		t.Fatal("a 63-bit word was taken")
	}
	for i := range acc {
		if acc[i]%q0 != before[i]%q0 || acc[i] >= q0+slack {
			t.Errorf("word %d: %d after undo, was %d", i, acc[i], before[i])
		}
	}
	normalize(acc)
	for i := range acc {
		if acc[i] != want[i] {
			t.Errorf("word %d normalized to %d, want %d", i, acc[i], want[i])
		}
	}
}
