package mhe

import (
	"errors"
	"fmt"
	"math"
	"math/big"
	"slices"
	"strings"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
)

func TestModuli(t *testing.T) {
	for _, m := range []uint64{q0, p0} {
		if !new(big.Int).SetUint64(m).ProbablyPrime(32) || m%(2*ringN) != 1 {
			t.Errorf("%d is not a prime that is 1 mod 2N", m)
		}
	}
	if q0 >= 1<<61 || q0 < 1<<60 || p0 >= 1<<30 {
		t.Errorf("moduli of %d and %d bits", bitsOf(q0), bitsOf(p0))
	}
	// Security: the key lives modulo q0·p0, at most 109 bits (the HE standard's bound for
	// 128-bit security at N = 4096 with ternary secrets and σ = 3.2).
	if b := bitsOf(q0) + bitsOf(p0); b > 109 {
		t.Errorf("log2(q0·p0) = %d, above 109", b)
	}
}

func bitsOf(x uint64) int { return len(new(big.Int).SetUint64(x).Text(2)) }

// TestParams pins the parameters of a few set-ups, the ones the package doc quotes.
func TestParams(t *testing.T) {
	cases := []struct {
		cfg       SetupConfig
		tBits     int     // of the plaintext modulus
		minRatio  float64 // of the flooding noise to the encryption noise
		minSigma  float64
		wantError bool
	}{
		{cfg: SetupConfig{Members: 100}, tBits: 33, minRatio: 1 << 13, minSigma: 1 << 21},
		{cfg: SetupConfig{Members: 17, MaxWeight: 1000}, tBits: 32, minRatio: 1 << 15, minSigma: 1 << 23},
		{cfg: SetupConfig{Members: 3}, tBits: 33, minRatio: 1 << 15, minSigma: 1 << 23},
		{cfg: SetupConfig{Members: 100, MaxWeight: 1 << 20}, wantError: true},
		{cfg: SetupConfig{Members: 1000, MaxWeight: 1 << 16}, wantError: true},
		{cfg: SetupConfig{Members: 3, Threshold: 4}, wantError: true},
		{cfg: SetupConfig{Members: 0}, wantError: true},
		{cfg: SetupConfig{Members: 3, Bits: 33}, wantError: true},
		{cfg: SetupConfig{Members: 2, Bits: 2, MaxWeight: 1}, tBits: 16, minRatio: 1 << 30, minSigma: 1 << 40},
	}
	for _, c := range cases {
		t.Run(fmt.Sprintf("%+v", c.cfg), func(t *testing.T) {
			cfg, err := c.cfg.normalize()
			var p *params
			if err == nil {
				p, err = derive(cfg)
			}
			if c.wantError {
				if err == nil {
					t.Fatalf("no error")
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if b := bitsOf(p.t); b != c.tBits {
				t.Errorf("T = %d of %d bits, want %d", p.t, b, c.tBits)
			}
			if p.t%(2*ringN) != 1 || !new(big.Int).SetUint64(p.t).ProbablyPrime(32) {
				t.Errorf("T = %d is not a prime that is 1 mod 2N", p.t)
			}
			ratio := p.noiseTotal / p.noiseCT
			if ratio < c.minRatio || p.sigma < c.minSigma {
				t.Errorf("flooding σ = %.3g (2^%.1f), %.0f times the encryption noise; want σ >= %.3g and %.0f times", p.sigma, math.Log2(p.sigma), ratio, c.minSigma, c.minRatio)
			}
			// The margin: t shares and the aggregate's noise within budget/12 standard deviations.
			total := math.Sqrt(float64(cfg.Threshold)*(p.sigma*p.sigma+xeSigma*xeSigma) + p.noiseCT*p.noiseCT)
			if 12*total > float64(p.budget) {
				t.Errorf("12σ of the total noise is %.3g, over the budget of %d", 12*total, p.budget)
			}
			t.Logf("n=%d t=%d T=%d (2^%.2f) budget=2^%.1f noiseCT=%.0f σ=2^%.2f ratio=2^%.1f", cfg.Members, cfg.Threshold, p.t, math.Log2(float64(p.t)), math.Log2(float64(p.budget)), p.noiseCT, math.Log2(p.sigma), math.Log2(ratio))
		})
	}
}

// TestSetupResume persists every member's key material and the public set-up, loads them
// back, and runs a round with what was loaded: the server holds only the public set-up.
func TestSetupResume(t *testing.T) {
	pub, kr := setupFor(t, SetupConfig{Task: "resume", Members: 5, Threshold: 3, MaxWeight: 100})
	pb, err := pub.MarshalBinary()
	if err != nil {
		t.Fatal(err)
	}
	pub2, err := UnmarshalPublicSetup(pb)
	if err != nil {
		t.Fatalf("UnmarshalPublicSetup: %v", err)
	}
	if pub2.ID() != pub.ID() || !slices.Equal(pub2.Members(), pub.Members()) || pub2.Threshold() != 3 {
		t.Fatalf("public set-up changed on the way: %x %v", pub2.ID(), pub2.Members())
	}
	var kr2 KeyRing
	for _, km := range kr {
		b, err := km.MarshalBinary()
		if err != nil {
			t.Fatal(err)
		}
		km2, err := UnmarshalKeyMaterial(b)
		if err != nil {
			t.Fatalf("UnmarshalKeyMaterial: %v", err)
		}
		if !km2.Equal(km) || km2.Member() != km.Member() || km2.Public().ID() != pub.ID() {
			t.Fatalf("key material of member %d changed on the way", km.Member())
		}
		kr2 = append(kr2, km2)
	}
	if kr2[0].Equal(kr2[1]) {
		t.Errorf("two members' key material is equal")
	}
	p := testParams(5, 500, 2)
	inputs := testInputs(5, p, 5, 100)
	sum, err := agg.Run(split{pub: pub2, kr: kr2}, p, inputs, map[int][]int{0: {2}, 1: {5}})
	if err != nil {
		t.Fatalf("round with reloaded keys: %v", err)
	}
	if !slices.Equal(sum.Contributors, []int{1, 3, 4, 5}) {
		t.Errorf("contributors %v", sum.Contributors)
	}
	want := inputs[0].Weights[0] + inputs[2].Weights[0] + inputs[3].Weights[0] + inputs[4].Weights[0]
	if sum.Weights[0] != want {
		t.Errorf("weight sum %v, want %v", sum.Weights[0], want)
	}
}

// TestKeyMaterialEncoding: every byte of the encoding matters, and printing shows no secret.
func TestKeyMaterialEncoding(t *testing.T) {
	_, kr := setupFor(t, SetupConfig{Task: "resume", Members: 5, Threshold: 3, MaxWeight: 100})
	b, _ := kr[1].MarshalBinary()
	for _, i := range []int{0, 4, 5, 40, len(b) / 2, len(b) - 33, len(b) - 1} {
		c := slices.Clone(b)
		c[i] ^= 0x10
		if _, err := UnmarshalKeyMaterial(c); !isBad(err) {
			t.Errorf("byte %d flipped: %v, want %v", i, err, agg.ErrBadMessage)
		}
	}
	for _, n := range []int{0, 10, len(b) - 1} {
		if _, err := UnmarshalKeyMaterial(b[:n]); !isBad(err) {
			t.Errorf("truncated to %d bytes: %v", n, err)
		}
	}
	s := fmt.Sprintf("%v %+v %#v %s", kr[1], kr[1], kr[1], kr[1])
	share := fmt.Sprint(kr[1].share.Q.Coeffs[0][:4])
	if strings.Contains(s, strings.Trim(share, "[]")) || !strings.Contains(s, "member 2") {
		t.Errorf("printed key material: %s", s)
	}
}

// TestCorruptShare: a member whose key share is corrupt (here, one coefficient off, after it
// was stored) makes every decryption it takes part in fail with ErrDecryption, and no other.
func TestCorruptShare(t *testing.T) {
	_, kr := setupFor(t, SetupConfig{Task: "corrupt", Members: 5, Threshold: 3, MaxWeight: 100})
	b, _ := kr[2].MarshalBinary()
	bad, err := UnmarshalKeyMaterial(b)
	if err != nil {
		t.Fatal(err)
	}
	bad.share.Q.Coeffs[0][17] = (bad.share.Q.Coeffs[0][17] + 1) % q0
	corrupt := slices.Clone(kr)
	corrupt[2] = bad
	p := testParams(8, 5000, 1)
	inputs := testInputs(8, p, 5, 100)
	for _, asked := range [][]int{{1, 2, 3}, {3, 4, 5}, {1, 2, 4}, {2, 4, 5}} {
		t.Run(fmt.Sprint(asked), func(t *testing.T) {
			r := newRound(t, Config{}, corrupt, p, inputs)
			r.srv.choose = func([]int, int) []int { return asked }
			err := r.play(t, 1, inputs, nil, nil)
			if slices.Contains(asked, 3) {
				if !errors.Is(err, ErrDecryption) {
					t.Fatalf("decryption with member 3's corrupt share: %v, want %v", err, ErrDecryption)
				}
				if _, err := r.srv.Result(); err == nil {
					t.Errorf("Result after a failed decryption: no error")
				}
				return
			}
			if err != nil {
				t.Fatalf("decryption without member 3: %v", err)
			}
			if !r.srv.vec.Equal(r.want) {
				t.Errorf("wrong sum")
			}
		})
	}
}

// TestSetupAbsent: a member that sends nothing in phase 0 is left out, as long as t remain;
// one that drops later fails the set-up; fewer than t at the start fail it too.
func TestSetupAbsent(t *testing.T) {
	cfg := SetupConfig{Task: "absent", Members: 5, Threshold: 3, MaxWeight: 100}
	run := func(drop map[int][]int) (*PublicSetup, KeyRing, error) {
		srv, err := NewSetupServer(cfg)
		if err != nil {
			t.Fatal(err)
		}
		members := map[int]*SetupMember{}
		for i := 1; i <= 5; i++ {
			if members[i], err = NewSetupMember(cfg, i); err != nil {
				t.Fatal(err)
			}
		}
		in := map[int][]byte{}
		for phase := 0; ; phase++ {
			for _, i := range drop[phase] {
				delete(members, i)
			}
			for i, m := range members {
				if _, ok := in[i]; phase > 0 && !ok {
					continue
				}
				msg, err := m.Phase(phase, in[i])
				if err != nil {
					t.Fatalf("member %d, phase %d: %v", i, phase, err)
				}
				if err := srv.Receive(i, msg); err != nil {
					t.Fatalf("phase %d: server refused member %d: %v", phase, i, err)
				}
			}
			out, done, err := srv.Next()
			if err != nil {
				return nil, nil, err
			}
			if done {
				break
			}
			in = out
		}
		pub, err := srv.PublicSetup()
		if err != nil {
			t.Fatal(err)
		}
		var kr KeyRing
		for _, i := range pub.Members() {
			km, err := members[i].KeyMaterial()
			if err != nil {
				t.Fatal(err)
			}
			kr = append(kr, km)
		}
		return pub, kr, nil
	}

	pub, kr, err := run(map[int][]int{0: {2, 4}})
	if err != nil {
		t.Fatalf("set-up without members 2 and 4: %v", err)
	}
	if !slices.Equal(pub.Members(), []int{1, 3, 5}) {
		t.Fatalf("members %v, want [1 3 5]", pub.Members())
	}
	p := testParams(1, 100, 1)
	inputs := testInputs(2, p, 3, 100)
	r := newRound(t, Config{}, kr, p, inputs) // cohort: the set-up's members, in order
	if err := r.play(t, 3, inputs, nil, nil); err != nil {
		t.Fatalf("round: %v", err)
	}
	if !r.srv.vec.Equal(r.want) {
		t.Errorf("wrong sum")
	}
	// A round may also name its cohort explicitly.
	r = newRound(t, Config{Cohort: []int{5, 1}}, KeyRing{kr[2], kr[0]}, p, inputs[:2])
	if err := r.play(t, 4, inputs[:2], nil, nil); !errors.Is(err, agg.ErrTooFewClients) {
		t.Errorf("a cohort of 2 under a threshold of 3: %v, want %v", err, agg.ErrTooFewClients)
	}

	for _, drop := range []map[int][]int{{0: {1, 2, 3}}, {1: {4}}, {2: {5}}} {
		if _, _, err := run(drop); !errors.Is(err, agg.ErrTooFewClients) {
			t.Errorf("set-up with drops %v: %v, want %v", drop, err, agg.ErrTooFewClients)
		}
	}
}

// TestSetupRefusals: the set-up server refuses messages for another set-up, from outside the
// set-up, twice from one member, or malformed, and members refuse a roster or a finish
// message that is not theirs.
func TestSetupRefusals(t *testing.T) {
	cfg := SetupConfig{Task: "refusals", Members: 3, Threshold: 2, MaxWeight: 100}
	other := cfg
	other.Epoch = 1
	srv, _ := NewSetupServer(cfg)
	m1, _ := NewSetupMember(cfg, 1)
	m2, _ := NewSetupMember(cfg, 2)
	x1, _ := NewSetupMember(other, 1)
	k1, err := m1.Phase(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	k2, _ := m2.Phase(0, nil)
	kx, _ := x1.Phase(0, nil)
	refuse := func(from int, msg []byte, what string) {
		t.Helper()
		if err := srv.Receive(from, msg); !isBad(err) {
			t.Errorf("%s: %v, want %v", what, err, agg.ErrBadMessage)
		}
	}
	// Member 3's messages are all refused, and its slot is spent after the first.
	refuse(3, kx, "keys for another epoch")
	refuse(3, k2, "member 2's keys as member 3")
	refuse(0, k2, "keys from member 0")
	refuse(4, k2, "keys from member 4")
	if err := srv.Receive(2, k2); err != nil {
		t.Fatal(err)
	}
	refuse(2, k2, "the same keys twice")
	if err := srv.Receive(1, k1); err != nil {
		t.Fatal(err)
	}
	out, done, err := srv.Next()
	if err != nil || done {
		t.Fatalf("Next: %v %v", done, err)
	}
	roster := out[1]
	if _, err := x1.Phase(1, roster); !isBad(err) {
		t.Errorf("a roster of another set-up: %v", err)
	}
	for _, n := range []int{0, setupHeaderLen, len(roster) - 1} {
		m, _ := NewSetupMember(cfg, 1)
		m.Phase(0, nil)
		if _, err := m.Phase(1, roster[:n]); !isBad(err) {
			t.Errorf("a roster truncated to %d bytes: %v", n, err)
		}
	}
	// A member whose key the roster does not carry refuses it.
	m3, _ := NewSetupMember(cfg, 3)
	m3.Phase(0, nil)
	if _, err := m3.Phase(1, roster); !isBad(err) {
		t.Errorf("member 3, left out of the roster: %v", err)
	}
	s1, err := m1.Phase(1, roster)
	if err != nil {
		t.Fatal(err)
	}
	s2, _ := m2.Phase(1, roster)
	refuse(3, s1, "shares from member 3, not in the roster")
	refuse(1, s2, "member 2's shares as member 1")
	if err := srv.Receive(2, s2); err != nil {
		t.Fatal(err)
	}
	out, _, err = srv.Next()
	if !errors.Is(err, agg.ErrTooFewClients) || out != nil {
		t.Errorf("Next with member 1's shares refused: %v, want %v", err, agg.ErrTooFewClients)
	}
	if _, err := srv.PublicSetup(); err == nil {
		t.Errorf("PublicSetup of a failed set-up: no error")
	}
}

// TestSetupFinishRefusals: a member refuses a finish message whose shares do not open.
func TestSetupFinishRefusals(t *testing.T) {
	cfg := SetupConfig{Task: "finish", Members: 2, Threshold: 2, MaxWeight: 100}
	srv, _ := NewSetupServer(cfg)
	ms := []*SetupMember{nil, nil}
	for i := range ms {
		ms[i], _ = NewSetupMember(cfg, i+1)
		msg, _ := ms[i].Phase(0, nil)
		if err := srv.Receive(i+1, msg); err != nil {
			t.Fatal(err)
		}
	}
	out, _, _ := srv.Next()
	for i := range ms {
		msg, err := ms[i].Phase(1, out[i+1])
		if err != nil {
			t.Fatal(err)
		}
		if err := srv.Receive(i+1, msg); err != nil {
			t.Fatal(err)
		}
	}
	out, _, err := srv.Next()
	if err != nil {
		t.Fatal(err)
	}
	fin := out[1]
	if _, err := ms[0].Phase(2, out[2]); !isBad(err) {
		t.Errorf("member 2's finish message to member 1: %v", err)
	}
	if ms[0].err == nil {
		t.Fatalf("a failed phase did not stick")
	}
	c := slices.Clone(out[2])
	c[len(c)-5] ^= 1 // inside the sealed share
	if _, err := ms[1].Phase(2, c); !isBad(err) {
		t.Errorf("a finish message with a tampered share: %v", err)
	}
	if _, err := ms[1].KeyMaterial(); err == nil {
		t.Errorf("key material after a failed set-up")
	}
	_ = fin
}
