// Package quant turns a client's weighted update into integers that can be summed modulo a
// power of two, and turns the sum back into floats: the encoding that secure aggregation
// (package crypto/secagg, and any protocol over integers) adds up without seeing it.
//
// Where to start: [NewLayout] fixes the encoding of one round from a [Config], the parameter
// groups, the cohort size and the largest weight; [Layout.Encode] encodes one client's values
// and weights into a [Vector]; the protocol adds vectors modulo 2^32 or 2^64 ([Vector.Add]);
// [Layout.Decode] turns the sum into what package agg calls a Sum.
//
// The encoding of value i with weight w (the weight of the value's group, a whole number) is
//
//	w · q_i mod 2^M,  q_i = stochround(clip(v_i) / Clip · S),  S = 2^(Bits-1) - 1
//
// where clip limits v_i to [-Clip, Clip] and stochround rounds x up with probability
// x - floor(x) and down otherwise, so that E[q_i] = clip(v_i)/Clip·S: the rounding is
// unbiased (up to 2^-32 of a step, the resolution of the random threshold) and sums of many
// clients do not drift. After the values come the G group weights themselves, one word each.
// Decoding reads each value word as a two's complement integer of M bits and multiplies it by
// Clip/S; it returns, value by value, the weighted sum Σ_k w_k·v_k (to within Σ_k w_k·Clip/S,
// see [Layout.ErrorBound]) and, group by group, the exact sum of the weights.
//
// The modulus 2^M is 2^32 (a Vector of uint32, the common case: 4 bytes a value, as float32)
// unless the sum might not fit, in which case it is 2^64 (Layout.Wide). With P = cohort ·
// MaxWeight and L = ceil(log2 P), every weighted sum lies within P·(2^(Bits-1)-1) <
// 2^(Bits-1+L) in absolute value, so it fits a signed word of M bits whenever Bits + L <= M,
// and every weight sum (at most P <= 2^L) fits as unsigned. NewLayout picks M = 32 when
// Bits + L <= 32, else 64, and refuses a layout that even 64 bits cannot hold, or whose weight
// sums could pass 2^53 (P > 2^53), beyond which float64 no longer counts exactly. With the
// defaults (16 bits), 32-bit words hold cohort · MaxWeight <= 65536: 100 clients of up to 655
// samples each, say. A MaxWeight of 0 means no declared bound: the layout is wide and admits
// weights up to floor(min(2^(64-Bits), 2^53) / cohort).
//
// What it does not do: random rotations before quantization (they spread outliers across
// coordinates and help with heavy clipping; a later step), per-group clipping ranges, or
// differential-privacy noise.
package quant

import (
	"crypto/rand"
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"math"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"unsafe"
)

// Defaults of a Config's zero fields.
const (
	DefaultBits = 16
	// DefaultClip is 1: the range of the values the server asks for unless the task says
	// otherwise. Model deltas of one round are usually far smaller; a server that knows its
	// updates sets Clip per task to keep the 16 bits busy.
	DefaultClip = 1.0
)

// Config is how values are quantized. The server sets it per task; every client of a round
// must use the same.
type Config struct {
	// Bits is the width of one quantized value, sign included: 2 to 32. 0 means DefaultBits.
	Bits int `json:"bits,omitempty"`
	// Clip bounds the values: each is clipped to [-Clip, Clip] before quantization, so one
	// step is Clip / (2^(Bits-1) - 1). 0 means DefaultClip; otherwise it must be positive
	// and finite.
	Clip float64 `json:"clip,omitempty"`
}

// withDefaults fills in the zero fields.
func (c Config) withDefaults() Config {
	if c.Bits == 0 {
		c.Bits = DefaultBits
	}
	if c.Clip == 0 {
		c.Clip = DefaultClip
	}
	return c
}

// Step returns the size of one quantization step, Clip / (2^(Bits-1) - 1), defaults applied;
// an error for a Config Validate refuses.
func (c Config) Step() (float64, error) {
	if err := c.Validate(); err != nil {
		return 0, err
	}
	c = c.withDefaults()
	return c.Clip / float64(uint64(1)<<(c.Bits-1)-1), nil
}

// Validate reports a Config no layout can use.
func (c Config) Validate() error {
	c = c.withDefaults()
	if c.Bits < 2 || c.Bits > 32 {
		return fmt.Errorf("quant: %d bits a value, want 2 to 32", c.Bits)
	}
	if !(c.Clip > 0) || math.IsInf(c.Clip, 0) {
		return fmt.Errorf("quant: clip range %v, want a positive finite number", c.Clip)
	}
	return nil
}

// Errors of Encode, for a caller that reports them as its own bad input.
var (
	// ErrNotFinite: a value is NaN or infinite.
	ErrNotFinite = errors.New("quant: value is not finite")
	// ErrWeight: a weight is not a whole number from 0 to the layout's MaxWeight.
	ErrWeight = errors.New("quant: weight out of range")
)

// A Layout is the encoding of one round: how many values and groups, how they are quantized
// and the modulus. Build it with NewLayout; the server and every client of a round must build
// the same one.
type Layout struct {
	Config         // Bits and Clip, defaults filled in
	N, G   int     // values and groups
	Groups []uint8 // the group of each value (len N, each < G); shared, not copied
	Cohort int     // how many encodings may be summed
	// MaxWeight is the largest weight a client may give a group: the declared bound, or the
	// widest one 64-bit words allow when none was declared.
	MaxWeight uint64
	// Wide says the modulus is 2^64 (Vector.U64) rather than 2^32 (Vector.U32).
	Wide bool
}

// NewLayout returns the layout of a round: values of cfg, N = len(groups) values each in one
// of numGroups groups, sums of up to cohort encodings, weights of at most maxWeight (0: no
// declared bound). The layout keeps groups; the caller must not change it.
func NewLayout(cfg Config, groups []uint8, numGroups, cohort int, maxWeight uint64) (Layout, error) {
	if err := cfg.Validate(); err != nil {
		return Layout{}, err
	}
	cfg = cfg.withDefaults()
	if len(groups) < 1 {
		return Layout{}, errors.New("quant: no values")
	}
	if numGroups < 1 || numGroups > 256 {
		return Layout{}, fmt.Errorf("quant: %d groups, want 1 to 256", numGroups)
	}
	for i, g := range groups {
		if int(g) >= numGroups {
			return Layout{}, fmt.Errorf("quant: value %d in group %d of %d", i, g, numGroups)
		}
	}
	if cohort < 1 {
		return Layout{}, fmt.Errorf("quant: cohort of %d", cohort)
	}
	l := Layout{Config: cfg, N: len(groups), G: numGroups, Groups: groups, Cohort: cohort, MaxWeight: maxWeight}
	if maxWeight == 0 {
		l.MaxWeight = min(uint64(1)<<(64-cfg.Bits), maxWeightSum) / uint64(cohort)
		if l.MaxWeight == 0 {
			return Layout{}, fmt.Errorf("quant: a cohort of %d is too large for %d-bit values", cohort, cfg.Bits)
		}
		l.Wide = true
		return l, nil
	}
	hi, p := bits.Mul64(uint64(cohort), maxWeight)
	if hi != 0 {
		return Layout{}, fmt.Errorf("quant: a cohort of %d with weights up to %d overflows 64 bits", cohort, maxWeight)
	}
	if p > maxWeightSum {
		return Layout{}, fmt.Errorf("quant: a cohort of %d with weights up to %d may sum its weights beyond 2^53, where float64 stops counting exactly", cohort, maxWeight)
	}
	need := cfg.Bits + ceilLog2(p)
	switch {
	case need <= 32:
	case need <= 64:
		l.Wide = true
	default:
		return Layout{}, fmt.Errorf("quant: a cohort of %d with weights up to %d needs %d-bit sums of %d-bit values, more than 64", cohort, maxWeight, need, cfg.Bits)
	}
	return l, nil
}

// maxWeightSum bounds the sum of a group's weights over a cohort, so that it decodes exactly
// to a float64.
const maxWeightSum = 1 << 53

// ceilLog2 returns the least L with x <= 2^L (0 for x <= 1).
func ceilLog2(x uint64) int {
	if x <= 1 {
		return 0
	}
	return bits.Len64(x - 1)
}

// Len is the number of words of an encoding: N values, then G weights.
func (l Layout) Len() int { return l.N + l.G }

// WordSize is the size of a word in bytes: 4, or 8 when Wide.
func (l Layout) WordSize() int {
	if l.Wide {
		return 8
	}
	return 4
}

// Steps is S = 2^(Bits-1) - 1, the number of quantization steps in [0, Clip].
func (l Layout) Steps() float64 { return float64(uint64(1)<<(l.Bits-1) - 1) }

// ErrorBound bounds the difference between a decoded value and the exact weighted sum
// Σ_k w_k·clip(v_k) of the encodings that were added, given the sum of their weights (of the
// value's group): each client's stochastic rounding is off by less than one step, Clip/S,
// times its weight. It excludes float64 rounding, which is smaller by a factor of 2^40 or so.
func (l Layout) ErrorBound(weightSum float64) float64 {
	return weightSum * l.Clip / l.Steps()
}

// NewVector returns the encoding of nothing: Len zero words of the layout's width.
func (l Layout) NewVector() Vector {
	if l.Wide {
		return Vector{U64: make([]uint64, l.Len())}
	}
	return Vector{U32: make([]uint32, l.Len())}
}

// CheckWeights reports whether weights are len G whole numbers from 0 to MaxWeight. The
// error matches ErrWeight for a weight out of range.
func (l Layout) CheckWeights(weights []float64) error {
	if len(weights) != l.G {
		return fmt.Errorf("quant: %d weights, want %d", len(weights), l.G)
	}
	for g, w := range weights {
		if !(w >= 0) || w != math.Trunc(w) || w > float64(l.MaxWeight) || uint64(w) > l.MaxWeight {
			return fmt.Errorf("%w: weight %d is %v, want a whole number from 0 to %d", ErrWeight, g, w, l.MaxWeight)
		}
	}
	return nil
}

// Encode returns the encoding of one client's values (len N) and group weights (len G),
// drawing the rounding from rng, 4 bytes a value (nil means crypto/rand.Reader; a protocol on
// a hot path passes a fast generator of its own, such as an AES-CTR stream under a fresh key).
// Values are clipped; a NaN or infinite value gives an error that matches ErrNotFinite, a
// weight that CheckWeights refuses one that matches ErrWeight. Encode does not retain values
// or weights.
func (l Layout) Encode(values []float32, weights []float64, rng io.Reader) (Vector, error) {
	v := l.NewVector()
	if err := l.EncodeTo(v, values, weights, rng); err != nil {
		return Vector{}, err
	}
	return v, nil
}

// EncodeTo is Encode into a vector that the caller provides (of Len words of the layout's
// width), so that a caller can reuse its buffers. On error, dst holds garbage.
func (l Layout) EncodeTo(dst Vector, values []float32, weights []float64, rng io.Reader) error {
	if len(values) != l.N {
		return fmt.Errorf("quant: %d values, want %d", len(values), l.N)
	}
	if err := l.CheckWeights(weights); err != nil {
		return err
	}
	if dst.Wide() != l.Wide || dst.Len() != l.Len() {
		return fmt.Errorf("quant: vector of %d words (wide %v) for a layout of %d (wide %v)", dst.Len(), dst.Wide(), l.Len(), l.Wide)
	}
	if rng == nil {
		rng = rand.Reader
	}
	var w [256]uint64
	for g, x := range weights {
		w[g] = uint64(x)
	}
	// The rounding takes 4 random bytes a value, read in one go (in the words of dst
	// themselves when they are 4 bytes wide: word i is read, then overwritten, by the same
	// goroutine), and the values are then encoded in parallel.
	var rnd []byte
	if l.Wide {
		rnd = make([]byte, 4*l.N)
	} else {
		rnd = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(dst.U32))), 4*l.N)
	}
	if _, err := io.ReadFull(rng, rnd); err != nil {
		return fmt.Errorf("quant: random rounding: %w", err)
	}
	steps := l.Steps()
	scale := steps / l.Clip
	bad := make([]int, parts(l.N))
	parallel(l.N, func(part, lo, hi int) {
		bad[part] = -1
		vals, groups, rnd := values[lo:hi], l.Groups[lo:hi], rnd[4*lo:4*hi]
		if l.Wide {
			out := dst.U64[lo:hi]
			for i, v := range vals {
				q, ok := round(v, scale, steps, binary.LittleEndian.Uint32(rnd[4*i:]))
				if !ok {
					bad[part] = lo + i
					return
				}
				out[i] = uint64(q) * w[groups[i]]
			}
			return
		}
		out := dst.U32[lo:hi]
		for i, v := range vals {
			q, ok := round(v, scale, steps, binary.LittleEndian.Uint32(rnd[4*i:]))
			if !ok {
				bad[part] = lo + i
				return
			}
			out[i] = uint32(uint64(q) * w[groups[i]])
		}
	})
	for _, i := range bad {
		if i >= 0 {
			return fmt.Errorf("%w: value %d", ErrNotFinite, i)
		}
	}
	for g := range l.G {
		if l.Wide {
			dst.U64[l.N+g] = w[g]
		} else {
			dst.U32[l.N+g] = uint32(w[g])
		}
	}
	return nil
}

// minPart is the fewest values worth a goroutine of their own.
const minPart = 1 << 16

// parts returns how many pieces parallel splits n values into.
func parts(n int) int {
	return max(1, min(runtime.GOMAXPROCS(0), n/minPart))
}

// parallel calls fn on parts(n) consecutive ranges that cover [0, n), concurrently, and
// returns when all calls have.
func parallel(n int, fn func(part, lo, hi int)) {
	p := parts(n)
	if p == 1 {
		fn(0, 0, n)
		return
	}
	var wg sync.WaitGroup
	for part := range p {
		lo, hi := part*n/p, (part+1)*n/p
		wg.Go(func() { fn(part, lo, hi) })
	}
	wg.Wait()
}

// round scales v by scale, clips it to [-steps, steps] and rounds it stochastically: up when
// the 32-bit uniform u falls below the fraction. ok is false for NaN and infinities. It has no
// data-dependent branch: half of the rounding decisions go each way, and a mispredicted branch
// would cost more than all the arithmetic.
func round(v float32, scale, steps float64, u uint32) (q int64, ok bool) {
	x := float64(v)
	if !(x-x == 0) { // NaN or ±Inf
		return 0, false
	}
	x *= scale
	if x > steps {
		x = steps
	} else if x < -steps {
		x = -steps
	}
	q = int64(x)                            // toward zero
	r := x - float64(q)                     // in (-1, 1)
	neg := int64(math.Float64bits(r) >> 63) // 1 when r < 0: floor is one less
	q -= neg
	r += float64(neg) // in [0, 1]
	q += int64((uint64(u) - uint64(r*(1<<32))) >> 63)
	return q, true
}

// Decode returns what a sum of encodings holds: for each value the weighted sum of the
// clients' values, and for each group the sum of their weights. sum must be of this layout.
func (l Layout) Decode(sum Vector) (values, weights []float64, err error) {
	if sum.Wide() != l.Wide || sum.Len() != l.Len() {
		return nil, nil, fmt.Errorf("quant: vector of %d words (wide %v) for a layout of %d (wide %v)", sum.Len(), sum.Wide(), l.Len(), l.Wide)
	}
	values = make([]float64, l.N)
	weights = make([]float64, l.G)
	step := l.Clip / l.Steps()
	if l.Wide {
		for i, x := range sum.U64[:l.N] {
			values[i] = float64(int64(x)) * step
		}
		for g, x := range sum.U64[l.N:] {
			weights[g] = float64(x)
		}
	} else {
		for i, x := range sum.U32[:l.N] {
			values[i] = float64(int32(x)) * step
		}
		for g, x := range sum.U32[l.N:] {
			weights[g] = float64(x)
		}
	}
	return values, weights, nil
}

// A Vector is an encoding, or a sum of encodings: words modulo 2^32 (U32) or, for a wide
// layout, 2^64 (U64). Exactly one of the two is used.
type Vector struct {
	U32 []uint32
	U64 []uint64
}

// Len returns the number of words.
func (v Vector) Len() int {
	if v.U64 != nil {
		return len(v.U64)
	}
	return len(v.U32)
}

// Wide reports whether the words are 64-bit.
func (v Vector) Wide() bool { return v.U64 != nil }

// Add sets v to v + w, word by word, modulo the word size. v and w must be of the same
// layout; Add panics otherwise.
func (v Vector) Add(w Vector) {
	v.mustMatch(w)
	if v.Wide() {
		d, s := v.U64, w.U64[:len(v.U64)]
		for i := range d {
			d[i] += s[i]
		}
		return
	}
	d, s := v.U32, w.U32[:len(v.U32)]
	for i := range d {
		d[i] += s[i]
	}
}

// Sub sets v to v - w, word by word, modulo the word size. v and w must be of the same
// layout; Sub panics otherwise.
func (v Vector) Sub(w Vector) {
	v.mustMatch(w)
	if v.Wide() {
		d, s := v.U64, w.U64[:len(v.U64)]
		for i := range d {
			d[i] -= s[i]
		}
		return
	}
	d, s := v.U32, w.U32[:len(v.U32)]
	for i := range d {
		d[i] -= s[i]
	}
}

func (v Vector) mustMatch(w Vector) {
	if v.Wide() != w.Wide() || v.Len() != w.Len() {
		panic(fmt.Sprintf("quant: vectors of %d words (wide %v) and %d (wide %v)", v.Len(), v.Wide(), w.Len(), w.Wide()))
	}
}

// Equal reports whether v and w hold the same words.
func (v Vector) Equal(w Vector) bool {
	return v.Wide() == w.Wide() && slices.Equal(v.U32, w.U32) && slices.Equal(v.U64, w.U64)
}

// Clone returns a copy of v.
func (v Vector) Clone() Vector {
	return Vector{U32: slices.Clone(v.U32), U64: slices.Clone(v.U64)}
}
