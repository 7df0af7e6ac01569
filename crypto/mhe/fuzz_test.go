package mhe

import (
	"errors"
	"slices"
	"sync"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
)

// fuzzFixture is a small federation (3 members, t = 2) and a round of 10 values, with valid
// messages of every kind to seed the fuzzers.
type fuzzFixture struct {
	kr     KeyRing
	p      agg.Params
	inputs []agg.Input
	cts    [][]byte       // phase-0 messages of members 1 to 3
	asked  []int          // asked in phase 1: members 1 and 2
	reqs   map[int][]byte // phase-1 requests
	shares map[int][]byte // phase-1 shares

	setupCfg SetupConfig
	setupIn  [3]map[int][]byte // the set-up server's messages of each phase
	setupOut [3][][]byte       // members' messages of each phase
	keyBytes []byte
	pubBytes []byte
}

var (
	fuzzOnce sync.Once
	fuzzFix  *fuzzFixture
)

func getFuzz(t testing.TB) *fuzzFixture {
	t.Helper()
	fuzzOnce.Do(func() {
		f := &fuzzFixture{p: testParams(3, 10, 2), reqs: map[int][]byte{}, shares: map[int][]byte{}}
		f.setupCfg = SetupConfig{Task: "fuzz", Members: 3, Threshold: 2, MaxWeight: 100}
		srv, err := NewSetupServer(f.setupCfg)
		if err != nil {
			t.Fatal(err)
		}
		var members []*SetupMember
		for i := 1; i <= 3; i++ {
			m, _ := NewSetupMember(f.setupCfg, i)
			members = append(members, m)
		}
		var in map[int][]byte
		for phase := 0; phase < setupPhases; phase++ {
			f.setupIn[phase] = in
			for i, m := range members {
				msg, err := m.Phase(phase, in[i+1])
				if err != nil {
					t.Fatal(err)
				}
				f.setupOut[phase] = append(f.setupOut[phase], msg)
				if err := srv.Receive(i+1, msg); err != nil {
					t.Fatal(err)
				}
			}
			in, _, err = srv.Next()
			if err != nil {
				t.Fatal(err)
			}
		}
		pub, _ := srv.PublicSetup()
		for _, m := range members {
			km, _ := m.KeyMaterial()
			f.kr = append(f.kr, km)
		}
		f.keyBytes, _ = f.kr[0].MarshalBinary()
		f.pubBytes, _ = pub.MarshalBinary()
		f.inputs = testInputs(3, f.p, 3, 100)
		r := newRound(t, Config{}, f.kr, f.p, f.inputs)
		r.srv.choose = func([]int, int) []int { return []int{1, 2} }
		for i := 1; i <= 3; i++ {
			msg, _ := r.clients[i].Phase(0, nil)
			f.cts = append(f.cts, msg)
			r.srv.Receive(i, msg)
		}
		out, _, _ := r.srv.Next()
		for _, i := range []int{1, 2} {
			f.reqs[i] = out[i]
			f.shares[i], err = r.clients[i].Phase(1, out[i])
			if err != nil {
				t.Fatal(err)
			}
		}
		f.asked = []int{1, 2}
		fuzzFix = f
	})
	if fuzzFix == nil {
		t.Fatal("fuzz fixture failed")
	}
	return fuzzFix
}

// server returns a fresh server of the fixture's round, in phase 1 if phase1.
func (f *fuzzFixture) server(t testing.TB, phase1 bool) *server {
	srv, err := New(Config{}, f.kr[0].Public()).NewServer(f.p, 3)
	if err != nil {
		t.Fatal(err)
	}
	s := srv.(*server)
	s.choose = func([]int, int) []int { return f.asked }
	if phase1 {
		for i, msg := range f.cts {
			if err := s.Receive(i+1, msg); err != nil {
				t.Fatal(err)
			}
		}
		if _, _, err := s.Next(); err != nil {
			t.Fatal(err)
		}
	}
	return s
}

// mustBeBad fails unless err is nil or wraps agg.ErrBadMessage.
func mustBeBad(t *testing.T, err error) {
	t.Helper()
	if err != nil && !errors.Is(err, agg.ErrBadMessage) {
		t.Fatalf("error does not wrap %v: %v", agg.ErrBadMessage, err)
	}
}

func seedVariants(f *testing.F, valid []byte) {
	f.Add(valid)
	f.Add(valid[:len(valid)-1])
	f.Add(valid[:roundHeaderLen])
	f.Add([]byte{})
	b := slices.Clone(valid)
	b[len(b)-1] ^= 0xff
	f.Add(b)
}

func FuzzDecodeCiphertext(f *testing.F) {
	fx := getFuzz(f)
	seedVariants(f, fx.cts[0])
	f.Fuzz(func(t *testing.T, msg []byte) {
		s := fx.server(t, false)
		err := s.Receive(1, msg)
		mustBeBad(t, err)
		if err != nil && !slices.Equal(s.acc, make([]uint64, len(s.acc))) {
			for _, a := range s.acc {
				if a%q0 != 0 {
					t.Fatalf("a refused ciphertext changed the aggregate")
				}
			}
		}
	})
}

func FuzzDecodeShare(f *testing.F) {
	fx := getFuzz(f)
	seedVariants(f, fx.shares[1])
	f.Fuzz(func(t *testing.T, msg []byte) {
		s := fx.server(t, true)
		mustBeBad(t, s.Receive(1, msg))
	})
}

func FuzzDecodeRequest(f *testing.F) {
	fx := getFuzz(f)
	seedVariants(f, fx.reqs[1])
	f.Fuzz(func(t *testing.T, msg []byte) {
		c, err := New(Config{}, fx.kr[0]).NewClient(fx.p, 1, fx.inputs[0])
		if err != nil {
			t.Fatal(err)
		}
		c.(*client).next = 1 // as if it had sent its ciphertext
		_, err = c.Phase(1, msg)
		mustBeBad(t, err)
	})
}

func FuzzUnmarshalKeyMaterial(f *testing.F) {
	fx := getFuzz(f)
	f.Add(fx.keyBytes)
	f.Add(fx.keyBytes[:100])
	f.Add([]byte("FWMK\x01"))
	f.Fuzz(func(t *testing.T, b []byte) {
		km, err := UnmarshalKeyMaterial(b)
		mustBeBad(t, err)
		if err == nil {
			b2, _ := km.MarshalBinary()
			if !slices.Equal(b, b2) {
				t.Fatalf("key material does not encode back to the same bytes")
			}
		}
	})
}

func FuzzUnmarshalPublicSetup(f *testing.F) {
	fx := getFuzz(f)
	f.Add(fx.pubBytes)
	f.Add(fx.pubBytes[:60])
	f.Fuzz(func(t *testing.T, b []byte) {
		ps, err := UnmarshalPublicSetup(b)
		mustBeBad(t, err)
		if err == nil {
			b2, _ := ps.MarshalBinary()
			if !slices.Equal(b, b2) {
				t.Fatalf("public set-up does not encode back to the same bytes")
			}
		}
	})
}

// FuzzSetupServer feeds the set-up server a message from member 1 in phase p (0 to 2), the
// other members' messages being the real ones.
func FuzzSetupServer(f *testing.F) {
	fx := getFuzz(f)
	for p := range byte(setupPhases) {
		f.Add(p, fx.setupOut[p][0])
		f.Add(p, fx.setupOut[p][0][:setupHeaderLen+3])
	}
	f.Fuzz(func(t *testing.T, p byte, msg []byte) {
		p %= setupPhases
		srv, err := NewSetupServer(fx.setupCfg)
		if err != nil {
			t.Fatal(err)
		}
		for phase := range p {
			for i, m := range fx.setupOut[phase] {
				if err := srv.Receive(i+1, m); err != nil {
					t.Fatal(err)
				}
			}
			if _, _, err := srv.Next(); err != nil {
				t.Fatal(err)
			}
		}
		mustBeBad(t, srv.Receive(1, msg))
		srv.Next() // must not panic
	})
}

// FuzzSetupMember feeds member 1 a server message of phase p (1 or 2).
func FuzzSetupMember(f *testing.F) {
	fx := getFuzz(f)
	f.Add(byte(1), fx.setupIn[1][1])
	f.Add(byte(2), fx.setupIn[2][1])
	f.Add(byte(2), fx.setupIn[2][1][:setupHeaderLen+100])
	f.Fuzz(func(t *testing.T, p byte, msg []byte) {
		p = 1 + p%2
		m, err := NewSetupMember(fx.setupCfg, 1)
		if err != nil {
			t.Fatal(err)
		}
		if _, err := m.Phase(0, nil); err != nil {
			t.Fatal(err)
		}
		if p == 2 {
			// The real roster carries another HPKE key for member 1; patch in this one's.
			roster := fx.setupIn[1][1]
			r := reader{b: roster[setupHeaderLen:]}
			r.u32()
			r.u32()
			kb := r.blob(maxKEMKey)
			patched := slices.Clone(roster)
			copy(patched[len(roster)-len(r.b)-len(kb):], m.kemKey.PublicKey().Bytes())
			if _, err := m.Phase(1, patched); err != nil {
				t.Fatal(err)
			}
		}
		_, err = m.Phase(int(p), msg)
		mustBeBad(t, err)
	})
}

// FuzzExactSum is the protocol's law, fuzzed over inputs and over who is online: the server
// decrypts exactly the sum of the contributors' encodings when t members stay to decrypt, and
// aborts with ErrTooFewClients otherwise.
func FuzzExactSum(f *testing.F) {
	fx := getFuzz(f)
	f.Add(uint64(1), byte(0b000), byte(0b111))
	f.Add(uint64(2), byte(0b100), byte(0b011))
	f.Add(uint64(3), byte(0b000), byte(0b001))
	f.Add(uint64(4), byte(0b011), byte(0b111))
	f.Fuzz(func(t *testing.T, seed uint64, absentMask, onlineMask byte) {
		absent, online := []int{}, []int{} // online: non-nil, so that empty means nobody
		for i := 1; i <= 3; i++ {
			if absentMask>>(i-1)&1 == 1 {
				absent = append(absent, i)
			} else if onlineMask>>(i-1)&1 == 1 {
				online = append(online, i)
			}
		}
		inputs := testInputs(seed, fx.p, 3, 100)
		r := newRound(t, Config{}, fx.kr, fx.p, inputs)
		err := r.play(t, seed, inputs, absent, online)
		if len(online) < 2 {
			if !errors.Is(err, agg.ErrTooFewClients) {
				t.Fatalf("absent %v, online %v: %v, want %v", absent, online, err, agg.ErrTooFewClients)
			}
			return
		}
		if err != nil {
			t.Fatalf("absent %v, online %v: %v", absent, online, err)
		}
		if !r.srv.vec.Equal(r.want) {
			t.Fatalf("absent %v, online %v: wrong sum", absent, online)
		}
	})
}
