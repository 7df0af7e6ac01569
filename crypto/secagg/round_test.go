package secagg

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"testing"
	"testing/cryptotest"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/quant"
)

// checkRound checks the law of a round played by play: it either completes, and then the
// unmasked sum is exactly the modular sum of its contributors' encodings, every member that
// stayed to the end contributes and only members that sent a masked input do; or it fails
// with agg.ErrTooFewClients, and then the server rebuilt no secret. It returns whether the
// round completed.
func checkRound(t testing.TB, tr *trace, n int, drop map[int][]int) bool {
	t.Helper()
	srv := tr.srv
	if tr.err != nil {
		if !errors.Is(tr.err, agg.ErrTooFewClients) {
			t.Fatalf("round failed with %v, want %v", tr.err, agg.ErrTooFewClients)
		}
		if slices.Contains(srv.rebuiltB, true) || slices.Contains(srv.rebuiltSigma, true) || srv.shares != nil {
			t.Fatalf("a failed round rebuilt secrets (b %v, σ %v) or kept shares", srv.rebuiltB, srv.rebuiltSigma)
		}
		if _, err := srv.Result(); err == nil {
			t.Fatal("Result of a failed round: no error")
		}
		return false
	}
	want := srv.layout.NewVector()
	for _, i := range tr.sum.Contributors {
		if len(tr.sent) < 3 || tr.sent[2][i] == nil {
			t.Fatalf("contributor %d sent no masked input", i)
		}
		want.Add(tr.all[i].encoding)
	}
	if !want.Equal(srv.raw) {
		t.Fatalf("unmasked sum differs from the sum of the contributors' %v encodings", tr.sum.Contributors)
	}
	gone := map[int]bool{}
	for _, d := range drop {
		for _, i := range d {
			gone[i] = true
		}
	}
	for i := 1; i <= n; i++ {
		if !gone[i] && srv.A[i] && srv.B[i] && !slices.Contains(tr.sum.Contributors, i) {
			t.Fatalf("member %d stayed to the end but is not among the contributors %v", i, tr.sum.Contributors)
		}
	}
	// Privacy: no member's self mask and key secret were both rebuilt.
	for i := 1; i <= n; i++ {
		if srv.rebuiltB[i] && srv.rebuiltSigma[i] {
			t.Fatalf("the server rebuilt both secrets of member %d", i)
		}
	}
	return true
}

// randomDrops picks, for each member, whether it vanishes and before which phase.
func randomDrops(rng *rand.Rand, n int, rate float64) map[int][]int {
	drop := map[int][]int{}
	for i := 1; i <= n; i++ {
		if rng.Float64() < rate {
			p := rng.IntN(4)
			drop[p] = append(drop[p], i)
		}
	}
	return drop
}

func survivors(n int, drop map[int][]int) int {
	s := n
	for _, d := range drop {
		s -= len(d)
	}
	return s
}

// TestExactDropouts plays many rounds with random dropouts at every phase, over complete and
// SecAgg+ graphs and both KEMs: each round must obey checkRound's law, and rounds with at
// least Config.Threshold survivors on the complete graph must complete.
func TestExactDropouts(t *testing.T) {
	cases := []struct {
		name string
		cfg  Config
		n    int
	}{
		{"complete/n=5", Config{}, 5},
		{"complete/n=9", Config{}, 9},
		{"complete/n=9/t=3", Config{T: 3}, 9},
		{"complete/n=9/32 bits", Config{Quant: quant.Config{Bits: 8}}, 9},
		{"k=4/n=12", Config{K: 4}, 12},
		{"k=6/n=15/t=3", Config{K: 6, T: 3}, 15},
		{"k=4/n=11/t=2", Config{K: 4, T: 2}, 11},
		{"hybrid/complete/n=6", Config{KEM: "hybrid"}, 6},
		{"hybrid/k=4/n=10/t=2", Config{KEM: "hybrid", K: 4, T: 2}, 10},
	}
	rounds := 25
	if testing.Short() {
		rounds = 8
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			proto := newCohort(c.cfg)
			p := testParams(23, 2)
			p.MaxWeight = 100
			completed := 0
			for seed := range uint64(rounds) {
				rng := rand.New(rand.NewPCG(seed, uint64(c.n)))
				p.Round = seed
				inputs := randomInputs(rng, p, c.n)
				drop := randomDrops(rng, c.n, 0.3)
				tr := play(t, proto, p, inputs, drop, nil)
				ok := checkRound(t, tr, c.n, drop)
				k, _, _ := c.cfg.Shape(c.n)
				if !ok && k == c.n-1 && survivors(c.n, drop) >= c.cfg.Threshold(c.n) {
					t.Fatalf("round %d with drops %v: %v, though %d of %d survived, threshold %d", seed, drop, tr.err, survivors(c.n, drop), c.n, c.cfg.Threshold(c.n))
				}
				if ok {
					completed++
				}
			}
			t.Logf("%d of %d rounds completed", completed, rounds)
			if completed == 0 {
				t.Error("no round completed")
			}
		})
	}
}

// FuzzDropouts is TestExactDropouts driven by the fuzzer: the bytes choose the cohort, the
// graph, the threshold, the KEM and who drops when.
func FuzzDropouts(f *testing.F) {
	f.Add([]byte{5, 0, 0, 0, 1, 2, 3, 4, 0})
	f.Add([]byte{12, 4, 2, 0, 0, 9, 9, 1, 2, 3, 9, 9, 9, 0, 3, 9})
	f.Add([]byte{7, 0, 3, 1, 9, 2, 9, 3, 9, 1, 9})
	f.Add([]byte{2, 0, 0, 0, 9, 9})
	protos := map[[3]int]*cohort{}
	f.Fuzz(func(t *testing.T, data []byte) {
		if len(data) < 4 {
			return
		}
		n := 2 + int(data[0])%11
		k := []int{0, 4, 5, 6}[data[1]%4]
		tt := []int{0, 2, 3}[data[2]%3]
		kem := []string{"x25519", "hybrid"}[data[3]%2]
		cfg := Config{K: k, T: tt, KEM: kem}
		if _, _, err := cfg.Shape(n); err != nil {
			return
		}
		key := [3]int{k, tt, int(data[3] % 2)}
		proto := protos[key]
		if proto == nil {
			proto = newCohort(cfg)
			protos[key] = proto
		}
		drop := map[int][]int{}
		for i := 1; i <= n; i++ {
			if 3+i < len(data) && data[3+i] < 4 {
				drop[int(data[3+i])] = append(drop[int(data[3+i])], i)
			}
		}
		p := testParams(9, 2)
		p.Round = uint64(len(data))
		inputs := randomInputs(rand.New(rand.NewPCG(uint64(n), uint64(len(data)))), p, n)
		tr := play(t, proto, p, inputs, drop, nil)
		if !checkRound(t, tr, n, drop) {
			if kk, _, _ := cfg.Shape(n); kk == n-1 && survivors(n, drop) >= cfg.Threshold(n) {
				t.Fatalf("drops %v: %v, though %d of %d survived, threshold %d", drop, tr.err, survivors(n, drop), n, cfg.Threshold(n))
			}
		}
	})
}

// TestBelowThreshold drops one client too many in each phase: the round must abort with
// agg.ErrTooFewClients, and the server must not have rebuilt anything nor kept shares.
func TestBelowThreshold(t *testing.T) {
	const n = 7
	for _, kem := range []string{"x25519", "hybrid"} {
		cfg := Config{KEM: kem}
		th := cfg.Threshold(n)
		for phase := range 4 {
			t.Run(fmt.Sprintf("%s/phase %d", kem, phase), func(t *testing.T) {
				p := testParams(10, 1)
				inputs := randomInputs(rand.New(rand.NewPCG(1, 1)), p, n)
				var gone []int
				for i := th; i <= n; i++ {
					gone = append(gone, i)
				}
				drop := map[int][]int{phase: gone} // leaves th-1
				tr := play(t, newCohort(cfg), p, inputs, drop, nil)
				if !errors.Is(tr.err, agg.ErrTooFewClients) {
					t.Fatalf("%d of %d survive, threshold %d: %v, want %v", th-1, n, th, tr.err, agg.ErrTooFewClients)
				}
				checkRound(t, tr, n, drop)
				if _, _, err := tr.srv.Next(); !errors.Is(err, agg.ErrTooFewClients) {
					t.Errorf("Next after the failure: %v", err)
				}
			})
		}
	}
}

// TestNeverBoth checks, from the messages themselves, that no client ever reveals shares of
// both secrets of one member, and that the server never rebuilds both, over rounds with
// dropouts in phases 2 and 3 (where both kinds of shares are asked for).
func TestNeverBoth(t *testing.T) {
	const n = 8
	p := testParams(5, 1)
	for seed := range uint64(20) {
		rng := rand.New(rand.NewPCG(seed, 3))
		drop := map[int][]int{2: {1 + rng.IntN(n)}, 3: {1 + rng.IntN(n)}}
		tr := play(t, newCohort(Config{T: 3}), p, randomInputs(rng, p, n), drop, nil)
		if !checkRound(t, tr, n, drop) {
			t.Fatalf("seed %d: %v", seed, tr.err)
		}
		revealed := map[int]byte{} // owner -> kind, over all clients' messages
		for from, msg := range tr.sent[3] {
			body := msg[headerLen:]
			count := int(binary.LittleEndian.Uint32(body))
			owners := map[int]bool{}
			for e := range count {
				rec := body[4+37*e:]
				owner, kind := int(binary.LittleEndian.Uint32(rec)), rec[4]
				if owners[owner] {
					t.Fatalf("member %d sent two shares for member %d", from, owner)
				}
				owners[owner] = true
				if k, ok := revealed[owner]; ok && k != kind {
					t.Fatalf("shares of both secrets of member %d were revealed", owner)
				}
				revealed[owner] = kind
			}
		}
	}
}

// TestClientRefusesBoth: a client asked a second time in phase 3, with another list of
// survivors (so that it would reveal the other secret of a neighbour), refuses; so does one
// asked about a member that never shared with it.
func TestClientRefusesBoth(t *testing.T) {
	const n = 5
	p := testParams(5, 1)
	inputs := randomInputs(rand.New(rand.NewPCG(2, 2)), p, n)
	proto := newCohort(Config{T: 2})
	srv, _ := proto.NewServer(p, n)
	clients := map[int]agg.Client{}
	for i := 1; i <= n; i++ {
		clients[i], _ = proto.NewClient(p, i, inputs[i-1])
	}
	var from map[int][]byte
	for phase := range 3 {
		for i := 1; i <= n; i++ {
			msg, err := clients[i].Phase(phase, from[i])
			if err != nil {
				t.Fatal(err)
			}
			if err := srv.Receive(i, msg); err != nil {
				t.Fatal(err)
			}
		}
		var err error
		if from, _, err = srv.Next(); err != nil {
			t.Fatal(err)
		}
	}
	h := headerOf(p, typeSurvivors, 2)
	if _, err := clients[2].Phase(3, encodeSurvivors(h, []int{1, 3, 4, 5, 6})); !errors.Is(err, agg.ErrBadMessage) {
		t.Errorf("survivors that include a member of no share: %v", err)
	}
	// That refusal stopped client 2. Client 1 answers once, then refuses.
	if _, err := clients[1].Phase(3, from[1]); err != nil {
		t.Fatal(err)
	}
	h = headerOf(p, typeSurvivors, 1)
	for _, alive := range [][]int{{3, 4, 5}, {2, 3, 4, 5}} {
		if _, err := clients[1].Phase(3, encodeSurvivors(h, alive)); err == nil {
			t.Errorf("a second request in phase 3 (survivors %v): no error", alive)
		}
	}
	if _, err := clients[2].Phase(3, from[2]); err == nil {
		t.Error("a client that refused a request answered the next one")
	}
}

// TestMaskedLooksUniform: without the seeds, a masked input of all zeros is indistinguishable
// from uniform bytes. A chi-square test on byte frequencies over 2^18 bytes, with crypto/rand
// fixed so that the test is deterministic; and two masked inputs of the same input differ.
func TestMaskedLooksUniform(t *testing.T) {
	cryptotest.SetGlobalRandom(t, 42)
	const n, d = 3, 1 << 16
	p := testParams(d, 1)
	p.MaxWeight = 10
	inputs := make([]agg.Input, n)
	for i := range inputs {
		inputs[i] = agg.Input{Values: make([]float32, d), Weights: []float64{1}}
	}
	tr := play(t, newCohort(Config{}), p, inputs, nil, nil)
	if tr.err != nil {
		t.Fatal(tr.err)
	}
	for i := 1; i <= n; i++ {
		if !slices.ContainsFunc(tr.all[i].encoding.U32[:d], func(w uint32) bool { return w != 0 }) {
			continue // the encoding is all zeros, as it should be
		}
		t.Fatalf("member %d's encoding of zeros is not zero", i)
	}
	y := tr.sent[2]
	for i := 1; i <= n; i++ {
		body := y[i][headerLen : headerLen+4*d]
		var freq [256]float64
		for _, b := range body {
			freq[b]++
		}
		exp := float64(len(body)) / 256
		chi2 := 0.0
		for _, f := range freq {
			chi2 += (f - exp) * (f - exp) / exp
		}
		// 255 degrees of freedom: mean 255, standard deviation 22.6; 360 is p ≈ 1e-5.
		if chi2 > 360 {
			t.Errorf("member %d: chi-square of byte frequencies %.1f, want below 360", i, chi2)
		}
		t.Logf("member %d: chi-square %.1f", i, chi2)
	}
	if string(y[1][headerLen:]) == string(y[2][headerLen:]) {
		t.Error("two masked inputs of the same input are equal")
	}
	// The same input again, in the same round: the masks are fresh.
	again := play(t, newCohort(Config{}), p, inputs, nil, nil)
	if string(again.sent[2][1][headerLen:]) == string(y[1][headerLen:]) {
		t.Error("the same input masked twice gives the same masked input")
	}
	// And the sum is still zero.
	for i, v := range tr.sum.Values {
		if v != 0 {
			t.Fatalf("sum of zeros: value %d is %v", i, v)
		}
	}
}

// TestForgedAdvert plays a server that tampers with the adverts it forwards: each receiving
// client must refuse to go on, with an error that says so.
func TestForgedAdvert(t *testing.T) {
	const n, victim, target = 4, 2, 1 // member 2's advert, as forwarded to member 1
	attacker := newToyCA("attacker")
	cases := []struct {
		name   string
		forge  func(a []byte, c *cohort, p agg.Params) []byte
		forged bool // ErrForgedAdvert, not merely a malformed message
	}{
		{"c key changed", func(a []byte, _ *cohort, _ agg.Params) []byte {
			a[headerLen+1+2] ^= 1
			return a
		}, true},
		{"s key changed", func(a []byte, _ *cohort, _ agg.Params) []byte {
			a[headerLen+1+2+32+2] ^= 0x80
			return a
		}, true},
		{"re-signed with another key", func(a []byte, c *cohort, _ agg.Params) []byte {
			a[headerLen+1+2+5] ^= 1 // a new c key of the server's choosing
			sig := len(a) - 64
			copy(a[sig:], attacker.identity(1).Sign(append([]byte(advertDomain), a[:sig]...)))
			return a
		}, true},
		{"certificate of another member", func(a []byte, c *cohort, _ agg.Params) []byte {
			certAt := headerLen + 1 + 2 + 32 + 2 + 32 + 4
			copy(a[certAt:], c.ca.identity(3).CertDER)
			return a
		}, true},
		{"certificate from another CA, signed by it", func(a []byte, c *cohort, p agg.Params) []byte {
			id := attacker.identity(victim)
			body := a[headerLen:]
			return encodeAdvert(headerOf(p, typeAdvert, victim), body[0], body[3:35], body[37:69], id.CertDER, id.Sign)
		}, true},
		{"the target's own keys reflected", func(a []byte, c *cohort, p agg.Params) []byte {
			return nil // replaced below by the target's own advert, re-signed by the victim
		}, true},
		{"another member's advert", func(a []byte, c *cohort, p agg.Params) []byte {
			return nil // replaced below by member 3's advert under index 2
		}, false},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			proto := newCohort(Config{})
			p := testParams(4, 1)
			inputs := randomInputs(rand.New(rand.NewPCG(1, 1)), p, n)
			srv, _ := proto.NewServer(p, n)
			clients := map[int]agg.Client{}
			adverts := map[int][]byte{}
			for i := 1; i <= n; i++ {
				clients[i], _ = proto.NewClient(p, i, inputs[i-1])
				adverts[i], _ = clients[i].Phase(0, nil)
				if err := srv.Receive(i, adverts[i]); err != nil {
					t.Fatal(err)
				}
			}
			out, _, err := srv.Next()
			if err != nil {
				t.Fatal(err)
			}
			m, err := decodeNeighbours(out[target], headerOf(p, typeNeighbours, target))
			if err != nil {
				t.Fatal(err)
			}
			forged := c.forge(slices.Clone(m.adverts[victim]), proto, p)
			switch c.name {
			case "the target's own keys reflected":
				body := adverts[target][headerLen:]
				id := proto.ca.identity(victim)
				forged = encodeAdvert(headerOf(p, typeAdvert, victim), body[0], body[3:35], body[37:69], id.CertDER, id.Sign)
			case "another member's advert":
				forged = adverts[3]
			}
			m.adverts[victim] = forged
			_, err = clients[target].Phase(1, encodeNeighbours(headerOf(p, typeNeighbours, target), m))
			if err == nil {
				t.Fatal("the client accepted a forged advert")
			}
			if !errors.Is(err, agg.ErrBadMessage) || c.forged && !errors.Is(err, ErrForgedAdvert) {
				t.Fatalf("%v, want %v (forged: %v)", err, ErrForgedAdvert, c.forged)
			}
			t.Logf("client: %v", err)
			if _, err := clients[target].Phase(1, out[target]); err == nil {
				t.Error("a client that refused a forged advert went on with the genuine one")
			}
			// A server with a Verifier refuses such adverts on arrival (keys copied from another
			// advert are for the clients to notice).
			if c.forged && c.name != "the target's own keys reflected" {
				srv2, _ := proto.NewServer(p, n)
				if err := srv2.Receive(victim, forged); !errors.Is(err, agg.ErrBadMessage) {
					t.Errorf("server with a Verifier took the forged advert: %v", err)
				}
			}
		})
	}
}

// TestServerStrayMessages checks refusals the conformance suite does not reach: messages of
// members the server did not ask, of the wrong phase, or with shares for the wrong members.
func TestServerStrayMessages(t *testing.T) {
	const n = 5
	p := testParams(6, 1)
	inputs := randomInputs(rand.New(rand.NewPCG(4, 4)), p, n)
	proto := newCohort(Config{})
	tr := play(t, proto, p, inputs, nil, nil)
	if tr.err != nil {
		t.Fatal(tr.err)
	}
	srv, _ := proto.NewServer(p, n)
	// Phase 0: everyone but 5 advertises; the messages of later phases are refused.
	for i := 1; i <= 4; i++ {
		if err := srv.Receive(i, tr.sent[0][i]); err != nil {
			t.Fatal(err)
		}
	}
	for phase := 1; phase <= 3; phase++ {
		if err := srv.Receive(5, tr.sent[phase][5]); !errors.Is(err, agg.ErrBadMessage) {
			t.Errorf("a phase-%d message in phase 0: %v", phase, err)
		}
	}
	if _, _, err := srv.Next(); err != nil {
		t.Fatal(err)
	}
	// Phase 1: member 5 was not asked.
	if err := srv.Receive(5, tr.sent[0][5]); !errors.Is(err, agg.ErrBadMessage) {
		t.Errorf("an advert in phase 1: %v", err)
	}
	// Member 1's shares of the full round name member 5, which did not advertise now.
	if err := srv.Receive(1, tr.sent[1][1]); !errors.Is(err, agg.ErrBadMessage) {
		t.Errorf("shares for a member that did not advertise: %v", err)
	}
	if err := srv.Receive(1, tr.sent[1][1]); !errors.Is(err, agg.ErrBadMessage) {
		t.Errorf("a second try: %v", err)
	}
}

// TestSecretsRedacted prints secrets, and the states that hold them, with every verb.
func TestSecretsRedacted(t *testing.T) {
	const n = 3
	p := testParams(4, 1)
	proto := newCohort(Config{})
	inputs := randomInputs(rand.New(rand.NewPCG(5, 5)), p, n)
	srv, _ := proto.NewServer(p, n)
	c, _ := proto.NewClient(p, 1, inputs[0])
	if _, err := c.Phase(0, nil); err != nil {
		t.Fatal(err)
	}
	cl := c.(*client)
	k := selfMaskKey(cl.sigma, 1, p.LayoutHash, 1)
	cases := []struct {
		v    any
		want string
	}{
		{cl.sigma, "secagg.secret(redacted)"},
		{&k, "secagg.secret(redacted)"},
		{cl.cPriv, "secagg.secret(redacted)"},
		{c, "secagg.client(member 1, round 7, phase 1)"},
		{srv, "secagg.server(round 7, cohort 3, k 2, t 2, phase 0)"},
	}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%q", "%d"} {
		for _, c := range cases {
			if got := fmt.Sprintf(verb, c.v); got != c.want {
				t.Errorf("%s of a %T prints %q, want %q", verb, c.v, got, c.want)
			}
		}
	}
	if !cl.sigma.Equal(cl.sigma) || cl.sigma.Equal(randomScalar()) {
		t.Error("scalar.Equal is wrong")
	}
	k2 := k
	k3 := selfMaskKey(cl.sigma, 2, p.LayoutHash, 1)
	if !k.Equal(&k2) || k.Equal(&k3) {
		t.Error("maskKey.Equal is wrong")
	}
}

// TestReplays: a replayed message is refused, wherever it comes. The server refuses a client's
// message a second time in its phase, and in every later phase; a client refuses a server's
// message for a phase it has answered, and keeps going.
func TestReplays(t *testing.T) {
	const n = 4
	for _, kem := range []string{"x25519", "hybrid"} {
		t.Run(kem, func(t *testing.T) {
			p := testParams(5, 1)
			proto := newCohort(Config{KEM: kem, T: 2})
			inputs := randomInputs(rand.New(rand.NewPCG(8, 8)), p, n)
			drop := map[int][]int{2: {4}}
			tr := play(t, proto, p, inputs, drop, nil)
			if tr.err != nil {
				t.Fatal(tr.err)
			}
			t.Run("server", func(t *testing.T) {
				srv, _ := proto.NewServer(p, n)
				for phase := range 4 {
					for i, msg := range tr.sent[phase] {
						if err := srv.Receive(i, msg); err != nil {
							t.Fatal(err)
						}
					}
					for old := 0; old <= phase; old++ {
						for i, msg := range tr.sent[old] {
							if err := srv.Receive(i, msg); !errors.Is(err, agg.ErrBadMessage) {
								t.Errorf("phase %d: member %d's message of phase %d again: %v", phase, i, old, err)
							}
						}
					}
					if _, _, err := srv.Next(); err != nil {
						t.Fatal(err)
					}
				}
				for old := range 4 {
					for i, msg := range tr.sent[old] {
						if err := srv.Receive(i, msg); !errors.Is(err, agg.ErrBadMessage) {
							t.Errorf("after the round: member %d's message of phase %d: %v", i, old, err)
						}
					}
				}
			})
			t.Run("client", func(t *testing.T) {
				// Fresh clients, answering the recorded server messages; they draw new keys,
				// so only the server's messages are replayed, not checked for content.
				c, err := proto.NewClient(p, 1, inputs[0])
				if err != nil {
					t.Fatal(err)
				}
				if _, err := c.Phase(0, nil); err != nil {
					t.Fatal(err)
				}
				if _, err := c.Phase(0, nil); !errors.Is(err, agg.ErrBadMessage) {
					t.Errorf("phase 0 again: %v", err)
				}
				if _, err := c.Phase(2, tr.told[2][1]); !errors.Is(err, agg.ErrBadMessage) {
					t.Errorf("phase 2 before phase 1: %v", err)
				}
				if _, err := c.Phase(1, tr.told[1][1]); err != nil {
					t.Fatalf("phase 1 after refused replays: %v", err)
				}
				if _, err := c.Phase(1, tr.told[1][1]); !errors.Is(err, agg.ErrBadMessage) {
					t.Errorf("phase 1 again: %v", err)
				}
			})
		})
	}
}

// TestNewRefusals: NewClient and NewServer refuse what cannot make a round.
func TestNewRefusals(t *testing.T) {
	ca := newToyCA("test")
	p := testParams(4, 2)
	p.MaxWeight = 10
	good := agg.Input{Values: []float32{0.1, 0.2, 0.3, 0.4}, Weights: []float64{1, 10}}
	other := newToyCA("other")
	cases := []struct {
		name   string
		proto  agg.Protocol
		p      agg.Params
		index  int
		in     agg.Input
		badIn  bool // the error must match agg.ErrBadInput
		server bool // NewServer fails too
	}{
		{name: "no identity", proto: New(Config{}, nil, ca.verifier()), index: 1, in: good},
		{name: "no signer", proto: New(Config{}, &Identity{CertDER: ca.identity(1).CertDER}, ca.verifier()), index: 1, in: good},
		{name: "no verifier", proto: New(Config{}, ca.identity(1), nil), index: 1, in: good},
		{name: "own certificate refused", proto: New(Config{}, other.identity(1), ca.verifier()), index: 1, in: good},
		{name: "index 0", proto: New(Config{}, ca.identity(1), ca.verifier()), index: 0, in: good},
		{name: "fractional weight", proto: New(Config{}, ca.identity(1), ca.verifier()), index: 1, in: agg.Input{Values: good.Values, Weights: []float64{1.5, 1}}, badIn: true},
		{name: "weight above the bound", proto: New(Config{}, ca.identity(1), ca.verifier()), index: 1, in: agg.Input{Values: good.Values, Weights: []float64{11, 1}}, badIn: true},
		{name: "unknown KEM", proto: New(Config{KEM: "rsa"}, ca.identity(1), ca.verifier()), index: 1, in: good, server: true},
		{name: "t of 1", proto: New(Config{T: 1}, ca.identity(1), ca.verifier()), index: 1, in: good, server: true},
		{name: "bad quantization", proto: New(Config{Quant: quant.Config{Clip: -1}}, ca.identity(1), ca.verifier()), index: 1, in: good, server: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := c.proto.NewClient(p, c.index, c.in)
			if err == nil {
				t.Fatal("NewClient: no error")
			}
			if c.badIn && !errors.Is(err, agg.ErrBadInput) {
				t.Errorf("NewClient: %v, want %v", err, agg.ErrBadInput)
			}
			if _, err := c.proto.NewServer(p, 5); c.server != (err != nil) {
				t.Errorf("NewServer: %v", err)
			}
		})
	}
	t.Run("weight sums beyond 64 bits", func(t *testing.T) {
		p := p
		p.MaxWeight = 1 << 50
		if _, err := New(Config{}, nil, nil).NewServer(p, 100); err == nil {
			t.Error("NewServer: no error")
		}
	})
	t.Run("cohort of one", func(t *testing.T) {
		if _, err := New(Config{}, nil, nil).NewServer(p, 1); !errors.Is(err, agg.ErrTooFewClients) {
			t.Errorf("NewServer: %v, want %v", err, agg.ErrTooFewClients)
		}
	})
}
