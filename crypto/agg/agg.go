// Package agg defines how a round's updates are aggregated, as transport-agnostic state machines
// over byte messages, and implements the plaintext protocol ("none").
//
// A round's aggregation is a sequence of phases. In phase 0 every client of the cohort sends a
// message; the server checks each one (Server.Receive), and when the phase closes (Server.Next)
// it either has the result or hands each surviving client a message for the next phase, which
// the client answers (Client.Phase), and so on. The plaintext protocol has one phase; SecAgg+
// (crypto/secagg) and threshold BGV (crypto/mhe) have more, behind the same two interfaces, so
// that the server and the client drive all of them the same way over gRPC, and tests drive them
// in memory (see Run) and through one conformance suite (package aggtest).
//
// What is aggregated is an Input: a vector of values (a client's change of the model's
// parameters) and one weight per parameter group (how many of its samples fed that group; each
// value belongs to one group, Params.Groups). The server learns the Sum of the cohort's inputs:
// for every value the weighted sum of the clients' values, and the sum of the weights per group.
// Dividing one by the other is the server's business (package server), so a client that lacks a
// modality adds zero to that encoder's values and zero to its weight, and does not dilute it.
// Protocols that work on integers (SecAgg+, BGV) multiply an integer weight into a fixed-point
// value, so each client's value keeps its full precision whatever its weight.
//
// The plaintext protocol reveals every client's input to the server. It exists for baselines
// and debugging; a policy can forbid it.
package agg

import (
	"errors"
	"fmt"
	"math"
	"slices"
)

// Params describe one round's aggregation; the server and every client must agree on them.
type Params struct {
	Round      uint64
	LayoutHash [32]byte // the model layout the values belong to
	NumValues  int      // length of Input.Values
	NumGroups  int      // length of Input.Weights
	Groups     []uint8  // the group of every value: len NumValues, each < NumGroups
	// MaxWeight bounds every client's weight of every group (0: no bound). Protocols over
	// integers need it to size their modulus so that sums never wrap; the server sets it from
	// what the cohort declared when it joined.
	MaxWeight uint64
}

// Validate reports parameters no protocol can run with.
func (p Params) Validate() error {
	if p.NumValues < 1 || p.NumValues > MaxValues {
		return fmt.Errorf("agg: %d values, want 1 to %d", p.NumValues, MaxValues)
	}
	if p.NumGroups < 1 || p.NumGroups > MaxGroups {
		return fmt.Errorf("agg: %d groups, want 1 to %d", p.NumGroups, MaxGroups)
	}
	if len(p.Groups) != p.NumValues {
		return fmt.Errorf("agg: %d group indices for %d values", len(p.Groups), p.NumValues)
	}
	for i, g := range p.Groups {
		if int(g) >= p.NumGroups {
			return fmt.Errorf("agg: value %d in group %d of %d", i, g, p.NumGroups)
		}
	}
	return nil
}

// Limits on the shape of an aggregation, so that a decoder can bound what it allocates.
const (
	MaxValues = 1 << 28
	MaxGroups = 256
)

// Input is one client's contribution: its values, and the weight of each parameter group. All
// must be finite; weights must be non-negative.
type Input struct {
	Values  []float32
	Weights []float64
}

// Check validates in against p.
func (in Input) Check(p Params) error {
	if len(in.Values) != p.NumValues {
		return fmt.Errorf("%w: %d values, want %d", ErrBadInput, len(in.Values), p.NumValues)
	}
	if len(in.Weights) != p.NumGroups {
		return fmt.Errorf("%w: %d weights, want %d", ErrBadInput, len(in.Weights), p.NumGroups)
	}
	for i, v := range in.Values {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("%w: value %d is not finite", ErrBadInput, i)
		}
	}
	for i, w := range in.Weights {
		if !(w >= 0) || math.IsInf(w, 0) {
			return fmt.Errorf("%w: weight %d is %v, want a finite non-negative number", ErrBadInput, i, w)
		}
	}
	return nil
}

// Sum is what the server learns: Values[i] is the sum over contributors of
// Weights[Groups[i]] * Values[i], and Weights[g] the sum of their weights of group g.
type Sum struct {
	Values       []float64
	Weights      []float64
	Contributors []int // cohort indices of the clients whose input is in the sum, ascending
}

// Errors a protocol reports.
var (
	// ErrBadInput: a client's own input is malformed (wrong length, non-finite value).
	ErrBadInput = errors.New("agg: bad input")
	// ErrBadMessage: a message failed validation (size, version, round, layout); it was not used.
	ErrBadMessage = errors.New("agg: bad message")
	// ErrTooFewClients: fewer clients survived than the protocol's threshold; nothing is
	// revealed and the round must be aborted.
	ErrTooFewClients = errors.New("agg: too few clients")
)

// Client is one client's side of one round.
type Client interface {
	// Phase returns the client's message for phase p, given the server's message for it (nil in
	// phase 0).
	Phase(p int, fromServer []byte) ([]byte, error)
}

// Server is the server's side of one round.
type Server interface {
	// Receive takes the message of cohort member from for the current phase. An error means the
	// message was refused, the client's input will not be used and a further message from it
	// in the same phase is refused too; the round goes on.
	Receive(from int, msg []byte) error
	// Next closes the current phase. If the aggregate is ready, done is true and Result returns
	// it. Otherwise out holds the message for each client that must answer the next phase.
	// ErrTooFewClients means the round cannot complete.
	Next() (out map[int][]byte, done bool, err error)
	// Result returns the aggregate once Next has reported done. The slices belong to the caller.
	Result() (Sum, error)
}

// Protocol makes the two sides of a round.
type Protocol interface {
	// Name is how configs and reports call the protocol: "none", "secagg", "mhe".
	Name() string
	// NewClient returns the side of cohort member index (1-based) with its input.
	NewClient(p Params, index int, in Input) (Client, error)
	// NewServer returns the server's side for a cohort of the given size.
	NewServer(p Params, cohort int) (Server, error)
}

// Run drives a whole round in memory: every client of the cohort sends its phase-0 message,
// and the clients listed in drop[phase] vanish before answering that phase. It returns what the
// server learnt. Tests and benchmarks use it; the server and client packages do the same over
// gRPC.
func Run(proto Protocol, p Params, inputs []Input, drop map[int][]int) (Sum, error) {
	srv, err := proto.NewServer(p, len(inputs))
	if err != nil {
		return Sum{}, err
	}
	clients := make(map[int]Client, len(inputs))
	for i, in := range inputs {
		c, err := proto.NewClient(p, i+1, in)
		if err != nil {
			return Sum{}, err
		}
		clients[i+1] = c
	}
	msgs := make(map[int][]byte, len(inputs))
	for idx := range clients {
		msgs[idx] = nil
	}
	for phase := 0; ; phase++ {
		for _, idx := range drop[phase] {
			delete(clients, idx)
		}
		order := make([]int, 0, len(msgs))
		for idx := range msgs {
			order = append(order, idx)
		}
		slices.Sort(order)
		for _, idx := range order {
			c, ok := clients[idx]
			if !ok {
				continue
			}
			out, err := c.Phase(phase, msgs[idx])
			if err != nil {
				return Sum{}, fmt.Errorf("agg: client %d, phase %d: %w", idx, phase, err)
			}
			if err := srv.Receive(idx, out); err != nil {
				return Sum{}, fmt.Errorf("agg: server refused client %d, phase %d: %w", idx, phase, err)
			}
		}
		next, done, err := srv.Next()
		if err != nil {
			return Sum{}, err
		}
		if done {
			return srv.Result()
		}
		msgs = next
	}
}
