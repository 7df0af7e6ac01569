// Package aggtest is the conformance suite of package agg: every aggregation protocol (the
// plaintext one, SecAgg+, threshold BGV) runs through TestProtocol, which checks the behaviour
// that agg.Protocol, agg.Client and agg.Server document — the sum the server learns, the
// clients it reports, the messages it refuses and when it gives up.
//
// The suite drives rounds in memory, with agg.Run where a round is ordinary and step by step
// where it injects messages. Its inputs are random but seeded, so a failure repeats. Values lie
// in [-1, 1) with full float32 precision, and weights are whole numbers from 1 to 1000, so a
// protocol that quantizes can pick its range to fit them; the expected sum is the float64 sum of
// the inputs, compared value by value within Options.Tolerance and exactly for weights.
//
// The suite checks what a server learns and accepts, not what it must not learn: privacy, and
// the detection of tampered payloads, are for each protocol's own tests.
package aggtest

import (
	"crypto/sha256"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
)

// Options describe what a protocol promises, so that the suite holds it to that and no more.
type Options struct {
	// Tolerance is the largest absolute difference allowed, value by value, between the sum the
	// server learns and the float64 sum of the contributors' values; 0 demands exact sums.
	// Weights must always be exact.
	Tolerance float64
	// MaxDropPhase is the highest phase in which clients may vanish and the round still
	// complete. Clients that send nothing at all (absent in phase 0) are always tested; -1 says
	// that nothing more is supported.
	MaxDropPhase int
	// Threshold returns the fewest surviving clients with which a cohort of the given size
	// completes; with fewer, Next must fail with agg.ErrTooFewClients. nil means 1.
	Threshold func(cohort int) int
	// HeaderLen is how many leading bytes of every phase-0 message the server checks (format,
	// round, layout): the suite flips each of them, one at a time, and expects a refusal. 0
	// means 1, since every message starts with a format tag.
	HeaderLen int
}

// TestProtocol runs proto through the whole suite, as subtests of t.
func TestProtocol(t *testing.T, proto agg.Protocol, opt Options) {
	s := &suite{proto: proto, opt: opt, p: params()}
	if opt.Threshold == nil {
		s.opt.Threshold = func(int) int { return 1 }
	}
	if s.opt.HeaderLen < 1 {
		s.opt.HeaderLen = 1
	}
	if proto.Name() == "" {
		t.Errorf("%T has no name", proto)
	}
	s.phases = s.countPhases(t)
	t.Run("sums", s.testSums)
	t.Run("refusals", s.testRefusals)
	t.Run("threshold", s.testThreshold)
	t.Run("bad inputs", s.testBadInputs)
}

// params are the parameters of every round the suite plays: 37 values in 3 parameter groups.
func params() agg.Params {
	return agg.Params{
		Round:      42,
		LayoutHash: sha256.Sum256([]byte("fedweave aggtest layout")),
		NumValues:  37,
		NumGroups:  3,
		Groups:     groupsOf(37, 3),
	}
}

// groupsOf lays n values out in g groups of consecutive runs of nearly equal length.
func groupsOf(n, g int) []uint8 {
	out := make([]uint8, n)
	for grp := range g {
		for i := grp * n / g; i < (grp+1)*n/g; i++ {
			out[i] = uint8(grp)
		}
	}
	return out
}

// groupValues returns the range [lo, hi) of the values in parameter group g of p, as the suite
// lays them out: the groups split the values into consecutive runs of nearly equal length.
func groupValues(p agg.Params, g int) (lo, hi int) {
	return g * p.NumValues / p.NumGroups, (g + 1) * p.NumValues / p.NumGroups
}

// randomInputs returns n inputs for p, drawn from rng: values uniform in [-1, 1), weights whole
// numbers from 1 to 1000.
func randomInputs(rng *rand.Rand, p agg.Params, n int) []agg.Input {
	inputs := make([]agg.Input, n)
	for i := range inputs {
		in := agg.Input{Values: make([]float32, p.NumValues), Weights: make([]float64, p.NumGroups)}
		for j := range in.Values {
			in.Values[j] = float32(2*rng.Float64() - 1)
		}
		for g := range in.Weights {
			in.Weights[g] = float64(1 + rng.IntN(1000))
		}
		inputs[i] = in
	}
	return inputs
}

// withoutGroup makes in the input of a client that lacks parameter group g (a modality): zero
// values and zero weight there.
func withoutGroup(p agg.Params, in agg.Input, g int) {
	lo, hi := groupValues(p, g)
	clear(in.Values[lo:hi])
	in.Weights[g] = 0
}

// reference returns the weighted sum of the inputs of the given cohort members (1-based), in
// float64.
func reference(p agg.Params, inputs []agg.Input, contributors []int) agg.Sum {
	sum := agg.Sum{
		Values:       make([]float64, p.NumValues),
		Weights:      make([]float64, p.NumGroups),
		Contributors: slices.Clone(contributors),
	}
	for _, idx := range contributors {
		in := inputs[idx-1]
		for i, v := range in.Values {
			sum.Values[i] += in.Weights[p.Groups[i]] * float64(v)
		}
		for g, w := range in.Weights {
			sum.Weights[g] += w
		}
	}
	return sum
}

type suite struct {
	proto  agg.Protocol
	opt    Options
	p      agg.Params
	phases int // how many phases a round of this protocol has
}

// countPhases plays one clean round and counts its phases.
func (s *suite) countPhases(t *testing.T) int {
	t.Helper()
	inputs := randomInputs(rand.New(rand.NewPCG(1, 1)), s.p, 3)
	r := s.start(t, inputs)
	if err := r.play(nil, r.deliver); err != nil {
		t.Fatalf("a clean round of 3 clients: %v", err)
	}
	return r.phase + 1
}

// dropPhases returns the phases after phase 0 in which the suite makes clients vanish.
func (s *suite) dropPhases() []int {
	var ps []int
	for p := 1; p <= s.opt.MaxDropPhase && p < s.phases; p++ {
		ps = append(ps, p)
	}
	return ps
}

// all returns the cohort indices 1 to n, except those in but.
func all(n int, but ...int) []int {
	var idx []int
	for i := 1; i <= n; i++ {
		if !slices.Contains(but, i) {
			idx = append(idx, i)
		}
	}
	return idx
}

func (s *suite) testSums(t *testing.T) {
	type sumCase struct {
		name    string
		cohort  int
		prepare func(inputs []agg.Input)        // edits the inputs before the round
		check   func(t *testing.T, got agg.Sum) // checks more than the sum
		absent  []int                           // cohort members that send nothing
		drop    map[int][]int                   // cohort members that vanish in a later phase
	}
	cases := []sumCase{
		{name: "one client", cohort: 1},
		{name: "2 clients", cohort: 2},
		{name: "5 clients", cohort: 5},
		{name: "17 clients", cohort: 17},
		{
			name: "zero-weight groups", cohort: 5,
			prepare: func(inputs []agg.Input) {
				for _, in := range inputs {
					withoutGroup(s.p, in, 1) // no client has this modality
				}
				withoutGroup(s.p, inputs[1], 2) // clients 2 and 4 lack this one
				withoutGroup(s.p, inputs[3], 2)
			},
			check: func(t *testing.T, got agg.Sum) {
				lo, hi := groupValues(s.p, 1)
				for i, v := range got.Values[lo:hi] {
					if !(math.Abs(v) <= s.opt.Tolerance) {
						t.Errorf("value %d, in a group no client has, is %v, want 0", lo+i, v)
					}
				}
				if got.Weights[1] != 0 {
					t.Errorf("weight of a group no client has is %v, want 0", got.Weights[1])
				}
			},
		},
		{name: "absent in phase 0", cohort: 7, absent: []int{2, 5}},
		{name: "all but one absent", cohort: 4, absent: []int{1, 2, 4}},
	}
	for _, p := range s.dropPhases() {
		cases = append(cases, sumCase{
			name: fmt.Sprintf("dropouts in phase %d", p), cohort: 7,
			absent: []int{4}, drop: map[int][]int{p: {2, 7}},
		})
	}
	for i, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			survivors := c.cohort - len(c.absent)
			for _, d := range c.drop {
				survivors -= len(d)
			}
			if th := s.opt.Threshold(c.cohort); survivors < th {
				t.Skipf("%d of %d clients survive, below the threshold of %d", survivors, c.cohort, th)
			}
			inputs := randomInputs(rand.New(rand.NewPCG(uint64(i), 2)), s.p, c.cohort)
			if c.prepare != nil {
				c.prepare(inputs)
			}
			drop := map[int][]int{0: c.absent}
			gone := slices.Clone(c.absent)
			for p, d := range c.drop {
				drop[p] = d
				gone = append(gone, d...)
			}
			got, err := agg.Run(s.proto, s.p, inputs, drop)
			if err != nil {
				t.Fatalf("Run: %v", err)
			}
			if c.drop == nil {
				s.checkSum(t, got, reference(s.p, inputs, all(c.cohort, c.absent...)))
			} else {
				s.checkLaw(t, got, inputs, all(c.cohort, c.absent...), all(c.cohort, gone...))
			}
			if c.check != nil {
				c.check(t, got)
			}
		})
	}
}

// checkSum compares got with want: contributors and weights exactly, values within the
// tolerance.
func (s *suite) checkSum(t *testing.T, got, want agg.Sum) {
	t.Helper()
	if !slices.Equal(got.Contributors, want.Contributors) {
		t.Errorf("contributors %v, want %v", got.Contributors, want.Contributors)
	}
	if len(got.Values) != len(want.Values) || len(got.Weights) != len(want.Weights) {
		t.Fatalf("sum of %d values and %d weights, want %d and %d", len(got.Values), len(got.Weights), len(want.Values), len(want.Weights))
	}
	bad := 0
	for i, v := range got.Values {
		if d := math.Abs(v - want.Values[i]); !(d <= s.opt.Tolerance) {
			if bad++; bad <= 5 {
				t.Errorf("value %d is %v, want %v (off by %.3g, tolerance %.3g)", i, v, want.Values[i], d, s.opt.Tolerance)
			}
		}
	}
	if bad > 5 {
		t.Errorf("... and %d more values off", bad-5)
	}
	for g, w := range got.Weights {
		if w != want.Weights[g] {
			t.Errorf("weight %d is %v, want %v", g, w, want.Weights[g])
		}
	}
}

// checkLaw checks a round in which clients vanished after phase 0, where the protocol decides
// whose input is in: the contributors must be among those that sent a phase-0 message, include
// every client that stayed to the end, and the sum must be exactly theirs.
func (s *suite) checkLaw(t *testing.T, got agg.Sum, inputs []agg.Input, sent, stayed []int) {
	t.Helper()
	if !slices.IsSorted(got.Contributors) {
		t.Errorf("contributors %v are not in ascending order", got.Contributors)
	}
	for _, idx := range got.Contributors {
		if !slices.Contains(sent, idx) {
			t.Errorf("contributor %d sent nothing in phase 0", idx)
		}
	}
	for _, idx := range stayed {
		if !slices.Contains(got.Contributors, idx) {
			t.Errorf("client %d stayed to the end but is not among the contributors %v", idx, got.Contributors)
		}
	}
	s.checkSum(t, got, reference(s.p, inputs, got.Contributors))
}

// sameSum requires a second Result to be the first one.
func sameSum(t *testing.T, got, want agg.Sum) {
	t.Helper()
	if !slices.Equal(got.Values, want.Values) || !slices.Equal(got.Weights, want.Weights) || !slices.Equal(got.Contributors, want.Contributors) {
		t.Errorf("Result changed: %v, first %v", got, want)
	}
}

func (s *suite) testRefusals(t *testing.T) {
	const cohort, k = 5, 3 // k is the client whose messages are tampered with
	if th := s.opt.Threshold(cohort); th > cohort-1 {
		t.Skipf("a cohort of %d needs all but %d of its clients, too few to lose one", cohort, cohort-th)
	}
	inputs := randomInputs(rand.New(rand.NewPCG(3, 3)), s.p, cohort)
	everyone := reference(s.p, inputs, all(cohort))

	t.Run("replayed message", func(t *testing.T) {
		// In every phase, each client sends its message twice; in phase 0, client k also sends
		// a second, different message.
		r := s.start(t, inputs)
		other := s.phase0(t, s.p, k, randomInputs(rand.New(rand.NewPCG(3, 4)), s.p, 1)[0])
		err := r.play(nil, func(phase int, msgs map[int][]byte) {
			r.deliver(phase, msgs)
			for _, idx := range sorted(msgs) {
				r.refuse(idx, msgs[idx], "the same message again")
			}
			if phase == 0 {
				r.refuse(k, other, "a second, different message")
			}
		})
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		s.checkSum(t, r.result(), everyone)
	})

	t.Run("sender outside the cohort", func(t *testing.T) {
		r := s.start(t, inputs)
		err := r.play(nil, func(phase int, msgs map[int][]byte) {
			valid := msgs[sorted(msgs)[0]]
			for _, from := range []int{0, -1, cohort + 1, cohort + 2, math.MaxInt, math.MinInt} {
				r.refuse(from, valid, fmt.Sprintf("a valid message as %d", from))
			}
			r.deliver(phase, msgs)
		})
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		s.checkSum(t, r.result(), everyone)
	})

	t.Run("message after the round", func(t *testing.T) {
		// Client k is late: its phase-0 message comes once the round is done.
		r := s.start(t, inputs)
		var first map[int][]byte
		err := r.play(nil, func(phase int, msgs map[int][]byte) {
			if phase == 0 {
				first = maps.Clone(msgs)
				delete(msgs, k)
				delete(r.clients, k)
			}
			r.deliver(phase, msgs)
		})
		if err != nil {
			t.Fatalf("Next: %v", err)
		}
		sum := r.result()
		s.checkSum(t, sum, reference(s.p, inputs, all(cohort, k)))
		r.refuse(k, first[k], "its phase-0 message once the round is done")
		r.refuse(1, first[1], "a replay once the round is done")
		sameSum(t, r.result(), sum)
	})

	// Forged messages claim to come from client k; each must be refused, after which k sends
	// nothing more and the round completes with the others.
	forged := []struct {
		name      string
		anyPhase  bool // whether to forge in every phase in which clients may drop, or only in phase 0
		forgeries func(t *testing.T, own []byte) [][]byte
	}{
		{
			name: "message for another round",
			forgeries: func(t *testing.T, _ []byte) [][]byte {
				p := s.p
				return [][]byte{
					s.phase0(t, withRound(p, p.Round+1), k, inputs[k-1]),
					s.phase0(t, withRound(p, p.Round-1), k, inputs[k-1]),
					s.phase0(t, withRound(p, p.Round+1<<32), k, inputs[k-1]),
				}
			},
		},
		{
			name: "message for another layout",
			forgeries: func(t *testing.T, _ []byte) [][]byte {
				var msgs [][]byte
				for _, i := range []int{0, 31} {
					p := s.p
					p.LayoutHash[i] ^= 1
					msgs = append(msgs, s.phase0(t, p, k, inputs[k-1]))
				}
				return msgs
			},
		},
		{
			name: "truncated message", anyPhase: true,
			forgeries: func(t *testing.T, own []byte) [][]byte {
				msgs := [][]byte{nil}
				for _, n := range []int{len(own) - 1, len(own) / 2, 1, 0} {
					if n >= 0 && n < len(own) {
						msgs = append(msgs, slices.Clone(own[:n]))
					}
				}
				return msgs
			},
		},
		{
			name: "flipped header byte",
			forgeries: func(t *testing.T, own []byte) [][]byte {
				if len(own) < s.opt.HeaderLen {
					t.Fatalf("phase-0 message of %d bytes, shorter than a header of %d", len(own), s.opt.HeaderLen)
				}
				var msgs [][]byte
				for i := range s.opt.HeaderLen {
					for _, bit := range []byte{0x01, 0x80} {
						b := slices.Clone(own)
						b[i] ^= bit
						msgs = append(msgs, b)
					}
				}
				return msgs
			},
		},
	}
	for _, f := range forged {
		phases := []int{0}
		if f.anyPhase {
			phases = append(phases, s.dropPhases()...)
		}
		for _, at := range phases {
			name := f.name
			if f.anyPhase {
				name += fmt.Sprintf(" in phase %d", at)
			}
			t.Run(name, func(t *testing.T) {
				r := s.start(t, inputs)
				tried := false
				err := r.play(nil, func(phase int, msgs map[int][]byte) {
					if own, ok := msgs[k]; ok && phase == at {
						tried = true
						for _, b := range f.forgeries(t, own) {
							r.refuse(k, b, fmt.Sprintf("a forged message of %d bytes", len(b)))
						}
						delete(msgs, k)
						delete(r.clients, k)
					}
					r.deliver(phase, msgs)
				})
				if err != nil {
					t.Fatalf("Next: %v", err)
				}
				if !tried {
					t.Skipf("client %d has no message in phase %d", k, at)
				}
				if at == 0 {
					s.checkSum(t, r.result(), reference(s.p, inputs, all(cohort, k)))
				} else {
					s.checkLaw(t, r.result(), inputs, all(cohort), all(cohort, k))
				}
			})
		}
	}
}

func (s *suite) testThreshold(t *testing.T) {
	const cohort = 5
	th := s.opt.Threshold(cohort)
	if th < 1 {
		t.Fatalf("threshold of %d for a cohort of %d", th, cohort)
	}
	if th > cohort {
		t.Skipf("a cohort of %d cannot reach its threshold of %d", cohort, th)
	}
	inputs := randomInputs(rand.New(rand.NewPCG(4, 4)), s.p, cohort)

	t.Run("exactly the threshold", func(t *testing.T) {
		gone := all(cohort)[th:]
		got, err := agg.Run(s.proto, s.p, inputs, map[int][]int{0: gone})
		if err != nil {
			t.Fatalf("Run with %d of %d clients: %v", th, cohort, err)
		}
		s.checkSum(t, got, reference(s.p, inputs, all(cohort, gone...)))
	})

	for _, at := range append([]int{0}, s.dropPhases()...) {
		t.Run(fmt.Sprintf("too few in phase %d", at), func(t *testing.T) {
			gone := all(cohort)[th-1:] // leaves th-1 clients
			r := s.start(t, inputs)
			if _, err := r.srv.Result(); err == nil {
				t.Errorf("Result before the round: no error")
			}
			err := r.play(map[int][]int{at: gone}, r.deliver)
			if !errors.Is(err, agg.ErrTooFewClients) {
				t.Errorf("Next with %d of %d clients, threshold %d: %v, want %v", th-1, cohort, th, err, agg.ErrTooFewClients)
			}
			if sum, err := r.srv.Result(); err == nil {
				t.Errorf("Result of a failed round: %v, no error", sum)
			}
		})
	}

	t.Run("nobody", func(t *testing.T) {
		r := s.start(t, inputs)
		err := r.play(map[int][]int{0: all(cohort)}, r.deliver)
		if !errors.Is(err, agg.ErrTooFewClients) {
			t.Errorf("Next with no client: %v, want %v", err, agg.ErrTooFewClients)
		}
		if sum, err := r.srv.Result(); err == nil {
			t.Errorf("Result of a failed round: %v, no error", sum)
		}
	})
}

func (s *suite) testBadInputs(t *testing.T) {
	good := func() agg.Input { return randomInputs(rand.New(rand.NewPCG(5, 5)), s.p, 1)[0] }
	cases := []struct {
		name string
		edit func(in *agg.Input)
	}{
		{"NaN value", func(in *agg.Input) { in.Values[3] = float32(math.NaN()) }},
		{"+Inf value", func(in *agg.Input) { in.Values[0] = float32(math.Inf(1)) }},
		{"-Inf value", func(in *agg.Input) { in.Values[len(in.Values)-1] = float32(math.Inf(-1)) }},
		{"NaN weight", func(in *agg.Input) { in.Weights[0] = math.NaN() }},
		{"+Inf weight", func(in *agg.Input) { in.Weights[1] = math.Inf(1) }},
		{"negative weight", func(in *agg.Input) { in.Weights[2] = -1 }},
		{"a value short", func(in *agg.Input) { in.Values = in.Values[1:] }},
		{"a value over", func(in *agg.Input) { in.Values = append(in.Values, 0) }},
		{"a weight short", func(in *agg.Input) { in.Weights = in.Weights[1:] }},
		{"a weight over", func(in *agg.Input) { in.Weights = append(in.Weights, 1) }},
		{"empty", func(in *agg.Input) { *in = agg.Input{} }},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			in := good()
			c.edit(&in)
			if _, err := s.proto.NewClient(s.p, 1, in); !errors.Is(err, agg.ErrBadInput) {
				t.Errorf("NewClient: %v, want %v", err, agg.ErrBadInput)
			}
		})
	}
	t.Run("empty cohort", func(t *testing.T) {
		if _, err := s.proto.NewServer(s.p, 0); err == nil {
			t.Errorf("NewServer with a cohort of 0: no error")
		}
	})
}

func withRound(p agg.Params, round uint64) agg.Params {
	p.Round = round
	return p
}

// phase0 returns the phase-0 message of cohort member idx with input in, for a round of p.
func (s *suite) phase0(t *testing.T, p agg.Params, idx int, in agg.Input) []byte {
	t.Helper()
	c, err := s.proto.NewClient(p, idx, in)
	if err != nil {
		t.Fatalf("NewClient: %v", err)
	}
	msg, err := c.Phase(0, nil)
	if err != nil {
		t.Fatalf("client %d, phase 0: %v", idx, err)
	}
	return msg
}

// A round is played step by step, so that a test can inject messages between the clients'.
type round struct {
	t       *testing.T
	srv     agg.Server
	clients map[int]agg.Client // the clients still in the round, by cohort index
	phase   int
	from    map[int][]byte // the server's message to each client for this phase; nil in phase 0
	rng     *rand.Rand     // the order in which messages arrive
}

func (s *suite) start(t *testing.T, inputs []agg.Input) *round {
	t.Helper()
	srv, err := s.proto.NewServer(s.p, len(inputs))
	if err != nil {
		t.Fatalf("NewServer: %v", err)
	}
	r := &round{t: t, srv: srv, clients: make(map[int]agg.Client), rng: rand.New(rand.NewPCG(uint64(len(inputs)), 6))}
	for i, in := range inputs {
		c, err := s.proto.NewClient(s.p, i+1, in)
		if err != nil {
			t.Fatalf("NewClient %d: %v", i+1, err)
		}
		r.clients[i+1] = c
	}
	return r
}

// play runs the round to its end. In each phase, the clients in drop[phase] vanish, the others
// compute their messages, and each hands them to the server (r.deliver, or a test's variation).
// It returns the error of Next, or nil once Next reports the round done.
func (r *round) play(drop map[int][]int, each func(phase int, msgs map[int][]byte)) error {
	r.t.Helper()
	for {
		for _, idx := range drop[r.phase] {
			delete(r.clients, idx)
		}
		msgs := make(map[int][]byte)
		for idx, c := range r.clients {
			from, addressed := r.from[idx]
			if r.phase > 0 && !addressed {
				continue
			}
			msg, err := c.Phase(r.phase, from)
			if err != nil {
				r.t.Fatalf("client %d, phase %d: %v", idx, r.phase, err)
			}
			msgs[idx] = msg
		}
		each(r.phase, msgs)
		out, done, err := r.srv.Next()
		if err != nil || done {
			return err
		}
		r.phase++
		r.from = out
	}
}

// deliver hands msgs to the server in a random order, as a network would; it must take each.
func (r *round) deliver(phase int, msgs map[int][]byte) {
	r.t.Helper()
	order := sorted(msgs)
	r.rng.Shuffle(len(order), func(i, j int) { order[i], order[j] = order[j], order[i] })
	for _, idx := range order {
		if err := r.srv.Receive(idx, msgs[idx]); err != nil {
			r.t.Fatalf("phase %d: server refused client %d: %v", phase, idx, err)
		}
	}
}

// refuse hands msg from cohort member from to the server, which must refuse it.
func (r *round) refuse(from int, msg []byte, what string) {
	r.t.Helper()
	if err := r.srv.Receive(from, msg); !errors.Is(err, agg.ErrBadMessage) {
		r.t.Errorf("phase %d: client %d sent %s: %v, want %v", r.phase, from, what, err, agg.ErrBadMessage)
	}
}

func (r *round) result() agg.Sum {
	r.t.Helper()
	sum, err := r.srv.Result()
	if err != nil {
		r.t.Fatalf("Result: %v", err)
	}
	return sum
}

func sorted(msgs map[int][]byte) []int {
	idx := make([]int, 0, len(msgs))
	for i := range msgs {
		idx = append(idx, i)
	}
	slices.Sort(idx)
	return idx
}
