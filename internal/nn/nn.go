// Package nn is the small layer kit that fedweave's encoders (package models) and fusion heads
// (package fusion) build their gorgonia graphs with.
//
// The one idea that shapes it: a model's parameters live in one flat slice, the same vector that
// the federation clips, quantizes, masks and sums. A Builder registers each parameter as a named,
// shaped segment of that slice and gives gorgonia a tensor that is a view onto it, so reading or
// writing the parameters never copies, two graphs of one model (training and evaluation, or two
// batch sizes) share one vector, and an optimizer can update the vector in place.
//
// Start with NewBuilder, register parameters with Param (or a layer such as Dense), then read the
// parameter list off Builder.Layout. A Builder is built twice over the same layout (once to learn
// the layout, once over the real vector) by callers that need the size before they have the
// vector: see models.New.
//
// The package supports float32 (what fedweave trains with) and float64 (what gradient checks
// use); the two differ only in the backing slice handed to NewBuilder.
package nn

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"strings"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// LayoutVersion names the rules by which a layout is hashed. Bump it when the meaning of a
// parameter vector changes without its names or shapes changing.
const LayoutVersion = "fedweave-layout-v1"

// Init says how a segment starts.
type Init uint8

const (
	InitZeros   Init = iota // biases
	InitOnes                // scales, standard deviations
	InitGlorot              // uniform(-a, a) with a = sqrt(6/(fanIn+fanOut))
	InitHe                  // normal(0, sqrt(2/fanIn)), before ReLU
	InitNormal1             // normal(0, 0.1), embeddings
)

// Segment is one named parameter inside the flat vector.
type Segment struct {
	Name      string // dotted, e.g. "enc.image.conv1.w"
	Shape     []int
	Offset    int // index of its first value in the flat vector
	Trainable bool
	Init      Init
}

// Size is the number of values in the segment.
func (s Segment) Size() int {
	n := 1
	for _, d := range s.Shape {
		n *= d
	}
	return n
}

// Layout is the ordered list of a model's parameters. Two models can exchange parameter vectors
// only if their layouts hash equal.
type Layout struct {
	Segments []Segment
}

// Size is the length of the flat parameter vector.
func (l *Layout) Size() int {
	if len(l.Segments) == 0 {
		return 0
	}
	last := l.Segments[len(l.Segments)-1]
	return last.Offset + last.Size()
}

// Hash is a hex SHA-256 over the layout version and every segment's name, shape and kind. It
// travels with every parameter vector.
func (l *Layout) Hash() string {
	h := sha256.New()
	fmt.Fprintln(h, LayoutVersion)
	for _, s := range l.Segments {
		fmt.Fprintf(h, "%s %v %t\n", s.Name, s.Shape, s.Trainable)
	}
	return hex.EncodeToString(h.Sum(nil))
}

// Find returns the segment with the given name.
func (l *Layout) Find(name string) (Segment, bool) {
	for _, s := range l.Segments {
		if s.Name == name {
			return s, true
		}
	}
	return Segment{}, false
}

// Prefixed returns the segments whose name starts with prefix, in order.
func (l *Layout) Prefixed(prefix string) []Segment {
	var out []Segment
	for _, s := range l.Segments {
		if strings.HasPrefix(s.Name, prefix) {
			out = append(out, s)
		}
	}
	return out
}

// ErrLayoutMismatch reports parameters that were made for another model.
var ErrLayoutMismatch = errors.New("parameter layout mismatch")

// Check returns ErrLayoutMismatch, wrapped with both hashes' prefixes, unless hash is l's hash.
func (l *Layout) Check(hash string) error {
	if want := l.Hash(); hash != want {
		return fmt.Errorf("%w: got %.12s, want %.12s", ErrLayoutMismatch, hash, want)
	}
	return nil
}

// Initialize fills params (len l.Size()) according to each segment's Init, from a generator
// seeded with seed.
func (l *Layout) Initialize(params []float32, seed uint64) {
	rng := rand.New(rand.NewPCG(seed, 0x6e6e696e6974))
	for _, s := range l.Segments {
		v := params[s.Offset : s.Offset+s.Size()]
		fanIn, fanOut := fans(s.Shape)
		switch s.Init {
		case InitZeros:
			clear(v)
		case InitOnes:
			for i := range v {
				v[i] = 1
			}
		case InitGlorot:
			a := math.Sqrt(6 / float64(fanIn+fanOut))
			for i := range v {
				v[i] = float32((rng.Float64()*2 - 1) * a)
			}
		case InitHe:
			sd := math.Sqrt(2 / float64(fanIn))
			for i := range v {
				v[i] = float32(rng.NormFloat64() * sd)
			}
		case InitNormal1:
			for i := range v {
				v[i] = float32(rng.NormFloat64() * 0.1)
			}
		}
	}
}

// fans returns fan-in and fan-out: for a matrix [in, out]; for a convolution filter
// [out, in, kh, kw] the receptive field counts too.
func fans(shape []int) (in, out int) {
	switch len(shape) {
	case 0:
		return 1, 1
	case 1:
		return shape[0], shape[0]
	case 2:
		return shape[0], shape[1]
	default:
		rf := 1
		for _, d := range shape[2:] {
			rf *= d
		}
		return shape[1] * rf, shape[0] * rf
	}
}

// Builder registers parameters and builds layers onto one gorgonia graph.
type Builder struct {
	G      *G.ExprGraph
	Dtype  tensor.Dtype
	layout Layout
	f32    []float32 // exactly one of f32, f64 is the backing
	f64    []float64
	nodes  []*G.Node // parallel to layout.Segments
	probe  bool
}

// NewBuilder returns a Builder over a new graph whose parameters are views onto backing, a
// []float32 or []float64 of the layout's full size. A nil backing of either type makes a probe
// builder: it records the layout and allocates scratch values that callers throw away.
func NewBuilder(backing any) (*Builder, error) {
	b := &Builder{G: G.NewGraph()}
	switch v := backing.(type) {
	case []float32:
		b.Dtype, b.f32, b.probe = tensor.Float32, v, v == nil
	case []float64:
		b.Dtype, b.f64, b.probe = tensor.Float64, v, v == nil
	default:
		return nil, fmt.Errorf("nn: backing must be []float32 or []float64, got %T", backing)
	}
	return b, nil
}

// Layout is the layout of the parameters registered so far.
func (b *Builder) Layout() *Layout { return &b.layout }

// Params returns the parameter nodes in layout order, and which of them are trainable.
func (b *Builder) Params() []*G.Node { return b.nodes }

// Trainable returns the trainable parameter nodes in layout order.
func (b *Builder) Trainable() []*G.Node {
	var out []*G.Node
	for i, s := range b.layout.Segments {
		if s.Trainable {
			out = append(out, b.nodes[i])
		}
	}
	return out
}

// view returns a tensor over backing[off:off+size] with the given shape.
func (b *Builder) view(off int, shape []int) (tensor.Tensor, error) {
	n := 1
	for _, d := range shape {
		n *= d
	}
	var data any
	switch {
	case b.probe && b.Dtype == tensor.Float32:
		data = make([]float32, n)
	case b.probe:
		data = make([]float64, n)
	case b.f32 != nil:
		if off+n > len(b.f32) {
			return nil, fmt.Errorf("nn: parameter vector too short: need %d values, have %d", off+n, len(b.f32))
		}
		data = b.f32[off : off+n : off+n]
	default:
		if off+n > len(b.f64) {
			return nil, fmt.Errorf("nn: parameter vector too short: need %d values, have %d", off+n, len(b.f64))
		}
		data = b.f64[off : off+n : off+n]
	}
	return tensor.New(tensor.WithShape(shape...), tensor.WithBacking(data)), nil
}

// Param registers a parameter segment and returns its node.
func (b *Builder) Param(name string, shape []int, init Init) *G.Node {
	return b.register(name, shape, init, true)
}

// Buffer registers a non-trainable segment (normalisation statistics, for example): it travels
// in the flat vector and is averaged by the federation, but receives no gradient.
func (b *Builder) Buffer(name string, shape []int, init Init) *G.Node {
	return b.register(name, shape, init, false)
}

func (b *Builder) register(name string, shape []int, init Init, trainable bool) *G.Node {
	seg := Segment{Name: name, Shape: append([]int(nil), shape...), Offset: b.layout.Size(), Trainable: trainable, Init: init}
	t, err := b.view(seg.Offset, shape)
	if err != nil {
		panic(err) // the caller sized the vector from this same layout: a bug, not bad input
	}
	n := G.NewTensor(b.G, b.Dtype, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(t))
	b.layout.Segments = append(b.layout.Segments, seg)
	b.nodes = append(b.nodes, n)
	return n
}

// Input returns an input node of the given shape with a zeroed value the caller fills in place
// (see Data).
func (b *Builder) Input(name string, shape ...int) *G.Node {
	var t tensor.Tensor
	if b.Dtype == tensor.Float32 {
		t = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(make([]float32, prod(shape))))
	} else {
		t = tensor.New(tensor.WithShape(shape...), tensor.WithBacking(make([]float64, prod(shape))))
	}
	return G.NewTensor(b.G, b.Dtype, len(shape), G.WithShape(shape...), G.WithName(name), G.WithValue(t))
}

// IntInput returns an input node of ints (token ids).
func (b *Builder) IntInput(name string, n int) *G.Node {
	t := tensor.New(tensor.WithShape(n), tensor.WithBacking(make([]int, n)))
	return G.NewTensor(b.G, tensor.Int, 1, G.WithShape(n), G.WithName(name), G.WithValue(t))
}

func prod(shape []int) int {
	n := 1
	for _, d := range shape {
		n *= d
	}
	return n
}

// Scalar returns a constant of the builder's dtype.
func (b *Builder) Scalar(v float64) *G.Node {
	if b.Dtype == tensor.Float32 {
		return G.NewConstant(float32(v))
	}
	return G.NewConstant(v)
}

// Dense is x·W + b for x of shape [B, in]; it registers name.w [in, out] and name.b [out].
func (b *Builder) Dense(name string, x *G.Node, in, out int, init Init) *G.Node {
	w := b.Param(name+".w", []int{in, out}, init)
	bias := b.Param(name+".b", []int{1, out}, InitZeros)
	return G.Must(G.BroadcastAdd(G.Must(G.Mul(x, w)), bias, nil, []byte{0}))
}

// ReLU and Tanh are the activations the encoders use.
func ReLU(x *G.Node) *G.Node { return G.Must(G.Rectify(x)) }
func Tanh(x *G.Node) *G.Node { return G.Must(G.Tanh(x)) }

// Conv2d is a same-padded convolution with bias over x [B, inC, H, W]; it registers
// name.w [outC, inC, kh, kw] and name.b [1, outC, 1, 1].
func (b *Builder) Conv2d(name string, x *G.Node, inC, outC, kh, kw int) *G.Node {
	w := b.Param(name+".w", []int{outC, inC, kh, kw}, InitHe)
	bias := b.Param(name+".b", []int{1, outC, 1, 1}, InitZeros)
	y := G.Must(G.Conv2d(x, w, tensor.Shape{kh, kw}, []int{kh / 2, kw / 2}, []int{1, 1}, []int{1, 1}))
	return G.Must(G.BroadcastAdd(y, bias, nil, []byte{0, 2, 3}))
}

// MaskBias is the additive bias that masks a softmax entry: entries with bias MaskBias have a
// weight of about e^-30 of the others. It is finite on purpose: a row with every entry masked
// becomes uniform instead of NaN.
const MaskBias = -30

// ColumnScale multiplies each row of x [B, n] by the matching entry of s [B, 1].
func ColumnScale(x, s *G.Node) *G.Node {
	return G.Must(G.BroadcastHadamardProd(x, s, nil, []byte{1}))
}
