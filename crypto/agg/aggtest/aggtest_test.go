package aggtest_test

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"slices"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/agg/aggtest"
)

// The plaintext protocol has one phase; staged has three, with a threshold, so that the parts of
// the suite for later phases, dropouts and thresholds run before SecAgg+ does.
func TestStaged(t *testing.T) {
	aggtest.TestProtocol(t, staged{}, aggtest.Options{
		Tolerance:    1e-12,
		MaxDropPhase: 2,
		Threshold:    stagedThreshold,
		HeaderLen:    4 + 8 + 32,
	})
}

// staged is a toy protocol over the plaintext codec. In phase 0 each client announces itself
// (magic, round, layout hash); in phase 1 those announced send their plaintext updates; in phase
// 2 those that sent one confirm. Every phase needs stagedThreshold clients, and the sum holds
// every update of phase 1, confirmed or not.
type staged struct{}

func stagedThreshold(cohort int) int { return cohort/2 + 1 }

func stagedHeader(p agg.Params, magic string) []byte {
	b := append([]byte(magic), binary.LittleEndian.AppendUint64(nil, p.Round)...)
	return append(b, p.LayoutHash[:]...)
}

func (staged) Name() string { return "staged" }

func (staged) NewClient(p agg.Params, index int, in agg.Input) (agg.Client, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := in.Check(p); err != nil {
		return nil, err
	}
	return &stagedClient{p: p, in: in}, nil
}

func (staged) NewServer(p agg.Params, cohort int) (agg.Server, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if cohort < 1 {
		return nil, fmt.Errorf("staged: cohort of %d", cohort)
	}
	return &stagedServer{p: p, cohort: cohort, got: map[int]bool{}, updates: map[int]agg.Input{}}, nil
}

type stagedClient struct {
	p  agg.Params
	in agg.Input
}

func (c *stagedClient) Phase(phase int, from []byte) ([]byte, error) {
	switch phase {
	case 0:
		return stagedHeader(c.p, "STG0"), nil
	case 1:
		return agg.EncodePlain(c.p, c.in), nil
	case 2:
		return stagedHeader(c.p, "STG2"), nil
	}
	return nil, fmt.Errorf("staged: no phase %d", phase)
}

type stagedServer struct {
	p         agg.Params
	cohort    int
	phase     int
	addressed map[int]bool // who may send in this phase (after phase 0)
	got       map[int]bool // who sent in this phase
	updates   map[int]agg.Input
	done      bool
	failed    bool
}

func (s *stagedServer) Receive(from int, msg []byte) error {
	switch {
	case s.done || s.failed:
		return fmt.Errorf("%w: round over", agg.ErrBadMessage)
	case from < 1 || from > s.cohort || (s.phase > 0 && !s.addressed[from]):
		return fmt.Errorf("%w: not expecting %d", agg.ErrBadMessage, from)
	case s.got[from]:
		return fmt.Errorf("%w: replay", agg.ErrBadMessage)
	}
	switch s.phase {
	case 0, 2:
		if !bytes.Equal(msg, stagedHeader(s.p, fmt.Sprintf("STG%d", s.phase))) {
			return fmt.Errorf("%w: bad header", agg.ErrBadMessage)
		}
	case 1:
		in, err := agg.DecodePlain(s.p, msg)
		if err != nil {
			return fmt.Errorf("%w: %w", agg.ErrBadMessage, err)
		}
		s.updates[from] = in
	}
	s.got[from] = true
	return nil
}

func (s *stagedServer) Next() (map[int][]byte, bool, error) {
	if s.done || s.failed {
		return nil, s.done, errors.New("staged: round over")
	}
	if len(s.got) < stagedThreshold(s.cohort) {
		s.failed = true
		return nil, false, fmt.Errorf("%w: %d in phase %d", agg.ErrTooFewClients, len(s.got), s.phase)
	}
	if s.phase == 2 {
		s.done = true
		return nil, true, nil
	}
	s.phase++
	s.addressed, s.got = s.got, map[int]bool{}
	out := make(map[int][]byte)
	for idx := range s.addressed {
		out[idx] = []byte{byte(s.phase)}
	}
	return out, false, nil
}

func (s *stagedServer) Result() (agg.Sum, error) {
	if !s.done {
		return agg.Sum{}, errors.New("staged: not done")
	}
	sum := agg.Sum{
		Values:       make([]float64, s.p.NumValues),
		Weights:      make([]float64, s.p.NumGroups),
		Contributors: slices.Sorted(maps.Keys(s.updates)),
	}
	for _, in := range s.updates {
		for i, v := range in.Values {
			sum.Values[i] += in.Weights[s.p.Groups[i]] * float64(v)
		}
		for g, w := range in.Weights {
			sum.Weights[g] += w
		}
	}
	return sum, nil
}
