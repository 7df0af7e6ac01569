package agg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
)

// Plain is the plaintext protocol: each client sends its input as it is, and the server adds
// them up. One phase; no threshold; every client's input is visible to the server.
type Plain struct{}

var _ Protocol = Plain{}

func (Plain) Name() string { return "none" }

func (Plain) NewClient(p Params, index int, in Input) (Client, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if err := in.Check(p); err != nil {
		return nil, err
	}
	return &plainClient{p: p, in: in}, nil
}

func (Plain) NewServer(p Params, cohort int) (Server, error) {
	if err := p.Validate(); err != nil {
		return nil, err
	}
	if cohort < 1 {
		return nil, fmt.Errorf("agg: cohort of %d", cohort)
	}
	return &plainServer{
		p: p, cohort: cohort, seen: make([]bool, cohort+1),
		sum: Sum{Values: make([]float64, p.NumValues), Weights: make([]float64, p.NumGroups)},
	}, nil
}

type plainClient struct {
	p  Params
	in Input
}

func (c *plainClient) Phase(phase int, _ []byte) ([]byte, error) {
	if phase != 0 {
		return nil, fmt.Errorf("agg: plaintext protocol has no phase %d", phase)
	}
	return EncodePlain(c.p, c.in), nil
}

type plainServer struct {
	p      Params
	cohort int
	seen   []bool
	sum    Sum
	done   bool
}

func (s *plainServer) Receive(from int, msg []byte) error {
	if s.done {
		return fmt.Errorf("%w: round %d is closed", ErrBadMessage, s.p.Round)
	}
	if from < 1 || from > s.cohort {
		return fmt.Errorf("%w: no cohort member %d", ErrBadMessage, from)
	}
	if s.seen[from] {
		return fmt.Errorf("%w: a second update from the same client in round %d", ErrBadMessage, s.p.Round)
	}
	s.seen[from] = true // a refused client does not get a second try in the same round
	in, err := DecodePlain(s.p, msg)
	if err != nil {
		if !errors.Is(err, ErrBadMessage) {
			// Non-finite or negative numbers are ErrBadInput to the client that holds them;
			// to the server they are a message to refuse like any other.
			err = fmt.Errorf("%w: %w", ErrBadMessage, err)
		}
		return err
	}
	for i, v := range in.Values {
		s.sum.Values[i] += in.Weights[s.p.Groups[i]] * float64(v)
	}
	for i, w := range in.Weights {
		s.sum.Weights[i] += w
	}
	s.sum.Contributors = append(s.sum.Contributors, from)
	return nil
}

func (s *plainServer) Next() (map[int][]byte, bool, error) {
	if len(s.sum.Contributors) == 0 {
		return nil, false, fmt.Errorf("%w: no update arrived", ErrTooFewClients)
	}
	s.done = true
	return nil, true, nil
}

func (s *plainServer) Result() (Sum, error) {
	if !s.done {
		return Sum{}, fmt.Errorf("agg: result before the round is done")
	}
	sum := Sum{Values: slices.Clone(s.sum.Values), Weights: slices.Clone(s.sum.Weights)}
	sum.Contributors = slices.Sorted(slices.Values(s.sum.Contributors))
	return sum, nil
}

// plainMagic starts every plaintext update: a format name and version.
var plainMagic = [4]byte{'F', 'W', 'P', '1'}

const plainHeader = 4 + 8 + 32 + 4 + 4

// EncodePlain encodes a plaintext update: magic "FWP1", round (uint64), layout hash (32 bytes),
// value and group counts (uint32), weights (float64), values (float32), all little-endian.
func EncodePlain(p Params, in Input) []byte {
	b := make([]byte, plainHeader+8*len(in.Weights)+4*len(in.Values))
	copy(b, plainMagic[:])
	binary.LittleEndian.PutUint64(b[4:], p.Round)
	copy(b[12:44], p.LayoutHash[:])
	binary.LittleEndian.PutUint32(b[44:], uint32(len(in.Values)))
	binary.LittleEndian.PutUint32(b[48:], uint32(len(in.Weights)))
	off := plainHeader
	for _, w := range in.Weights {
		binary.LittleEndian.PutUint64(b[off:], math.Float64bits(w))
		off += 8
	}
	for _, v := range in.Values {
		binary.LittleEndian.PutUint32(b[off:], math.Float32bits(v))
		off += 4
	}
	return b
}

// DecodePlain decodes and validates a plaintext update for the round p describes. Every failure
// wraps ErrBadMessage (or ErrBadInput for non-finite or negative numbers).
func DecodePlain(p Params, b []byte) (Input, error) {
	if len(b) < plainHeader {
		return Input{}, fmt.Errorf("%w: update of %d bytes is shorter than its header", ErrBadMessage, len(b))
	}
	if !bytes.Equal(b[:4], plainMagic[:]) {
		return Input{}, fmt.Errorf("%w: not a plaintext update (format %q)", ErrBadMessage, b[:4])
	}
	if r := binary.LittleEndian.Uint64(b[4:]); r != p.Round {
		return Input{}, fmt.Errorf("%w: update for round %d, this is round %d", ErrBadMessage, r, p.Round)
	}
	if !bytes.Equal(b[12:44], p.LayoutHash[:]) {
		return Input{}, fmt.Errorf("%w: update for another model layout", ErrBadMessage)
	}
	n, g := binary.LittleEndian.Uint32(b[44:]), binary.LittleEndian.Uint32(b[48:])
	if int64(n) != int64(p.NumValues) || int64(g) != int64(p.NumGroups) {
		return Input{}, fmt.Errorf("%w: update has %d values in %d groups, want %d in %d", ErrBadMessage, n, g, p.NumValues, p.NumGroups)
	}
	if want := plainHeader + 8*int64(g) + 4*int64(n); int64(len(b)) != want {
		return Input{}, fmt.Errorf("%w: update is %d bytes, want %d", ErrBadMessage, len(b), want)
	}
	in := Input{Weights: make([]float64, g), Values: make([]float32, n)}
	off := plainHeader
	for i := range in.Weights {
		in.Weights[i] = math.Float64frombits(binary.LittleEndian.Uint64(b[off:]))
		off += 8
	}
	for i := range in.Values {
		in.Values[i] = math.Float32frombits(binary.LittleEndian.Uint32(b[off:]))
		off += 4
	}
	if err := in.Check(p); err != nil {
		return Input{}, err
	}
	return in, nil
}
