package nn

import (
	"fmt"
	"hash"
	"hash/fnv"
	"math"

	"github.com/chewxy/hm"
	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// Softmax is a numerically stable softmax over the last axis of x.
//
// It replaces gorgonia's own SoftMax and LogSoftMax, whose v0.9.18 kernels start every row's
// running maximum at the first element of the whole tensor instead of the row's: rows whose
// values all lie well below that element underflow to 0/0, which showed up here as NaN losses a
// few steps into training. This op and its gradient are checked by TestSoftmax and by the
// models package's finite-difference gradient checks.
func Softmax(x *G.Node) *G.Node { return G.Must(G.ApplyOp(softmaxOp{}, x)) }

// LogSoftmax is the logarithm of Softmax, computed without forming the probabilities.
func LogSoftmax(x *G.Node) *G.Node { return G.Must(G.ApplyOp(softmaxOp{log: true}, x)) }

type softmaxOp struct{ log bool }

func (op softmaxOp) Arity() int { return 1 }
func (op softmaxOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(a, a)
}
func (op softmaxOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	s, ok := in[0].(tensor.Shape)
	if !ok || s.Dims() == 0 {
		return nil, fmt.Errorf("nn: softmax needs a tensor of at least one dimension")
	}
	return s.Clone(), nil
}
func (op softmaxOp) ReturnsPtr() bool      { return false }
func (op softmaxOp) CallsExtern() bool     { return false }
func (op softmaxOp) OverwritesInput() int  { return -1 }
func (op softmaxOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op softmaxOp) Hashcode() uint32      { return hashOf(op) }
func (op softmaxOp) String() string {
	if op.log {
		return "fedweaveLogSoftmax"
	}
	return "fedweaveSoftmax"
}

func (op softmaxOp) Do(in ...G.Value) (G.Value, error) {
	x, ok := in[0].(tensor.Tensor)
	if !ok {
		return nil, fmt.Errorf("nn: softmax input is %T, not a tensor", in[0])
	}
	s := x.Shape()
	cols := s[s.Dims()-1]
	switch d := x.Data().(type) {
	case []float32:
		out := make([]float32, len(d))
		softmaxRows(out, d, cols, op.log)
		return tensor.New(tensor.WithShape(s.Clone()...), tensor.WithBacking(out)), nil
	case []float64:
		out := make([]float64, len(d))
		softmaxRows(out, d, cols, op.log)
		return tensor.New(tensor.WithShape(s.Clone()...), tensor.WithBacking(out)), nil
	}
	return nil, fmt.Errorf("nn: softmax of %v is not supported", x.Dtype())
}

func (op softmaxOp) DiffWRT(int) []bool { return []bool{true} }

func (op softmaxOp) SymDiff(inputs G.Nodes, output, grad *G.Node) (G.Nodes, error) {
	dx, err := G.ApplyOp(softmaxGradOp(op), output, grad)
	if err != nil {
		return nil, err
	}
	return G.Nodes{dx}, nil
}

func softmaxRows[T float32 | float64](out, x []T, cols int, log bool) {
	for lo := 0; lo < len(x); lo += cols {
		row, o := x[lo:lo+cols], out[lo:lo+cols]
		m := row[0]
		for _, v := range row[1:] {
			m = max(m, v)
		}
		var sum float64
		for i, v := range row {
			e := math.Exp(float64(v - m))
			sum += e
			o[i] = T(e)
		}
		if log {
			ls := T(math.Log(sum))
			for i, v := range row {
				o[i] = v - m - ls
			}
			continue
		}
		inv := T(1 / sum)
		for i := range o {
			o[i] *= inv
		}
	}
}

// softmaxGradOp maps (y, dy) to dx, where y is the op's output: for softmax
// dx = (dy - sum(dy*y)) * y, for log-softmax dx = dy - exp(y) * sum(dy), row by row.
type softmaxGradOp softmaxOp

func (op softmaxGradOp) Arity() int { return 2 }
func (op softmaxGradOp) Type() hm.Type {
	a := hm.TypeVariable('a')
	return hm.NewFnType(a, a, a)
}
func (op softmaxGradOp) InferShape(in ...G.DimSizer) (tensor.Shape, error) {
	s, ok := in[0].(tensor.Shape)
	if !ok {
		return nil, fmt.Errorf("nn: softmax gradient needs tensor shapes")
	}
	return s.Clone(), nil
}
func (op softmaxGradOp) ReturnsPtr() bool      { return false }
func (op softmaxGradOp) CallsExtern() bool     { return false }
func (op softmaxGradOp) OverwritesInput() int  { return -1 }
func (op softmaxGradOp) WriteHash(h hash.Hash) { fmt.Fprint(h, op.String()) }
func (op softmaxGradOp) Hashcode() uint32      { return hashOf(op) }
func (op softmaxGradOp) String() string        { return softmaxOp(op).String() + "Grad" }

func (op softmaxGradOp) Do(in ...G.Value) (G.Value, error) {
	y, ok1 := in[0].(tensor.Tensor)
	dy, ok2 := in[1].(tensor.Tensor)
	if !ok1 || !ok2 || !y.Shape().Eq(dy.Shape()) {
		return nil, fmt.Errorf("nn: softmax gradient needs two tensors of one shape")
	}
	s := y.Shape()
	cols := s[s.Dims()-1]
	switch yd := y.Data().(type) {
	case []float32:
		out := make([]float32, len(yd))
		softmaxGradRows(out, yd, dy.Data().([]float32), cols, op.log)
		return tensor.New(tensor.WithShape(s.Clone()...), tensor.WithBacking(out)), nil
	case []float64:
		out := make([]float64, len(yd))
		softmaxGradRows(out, yd, dy.Data().([]float64), cols, op.log)
		return tensor.New(tensor.WithShape(s.Clone()...), tensor.WithBacking(out)), nil
	}
	return nil, fmt.Errorf("nn: softmax gradient of %v is not supported", y.Dtype())
}

func softmaxGradRows[T float32 | float64](dx, y, dy []T, cols int, log bool) {
	for lo := 0; lo < len(y); lo += cols {
		yr, gr, o := y[lo:lo+cols], dy[lo:lo+cols], dx[lo:lo+cols]
		var s T
		if log {
			for _, g := range gr {
				s += g
			}
			for i := range o {
				o[i] = gr[i] - T(math.Exp(float64(yr[i])))*s
			}
			continue
		}
		for i := range gr {
			s += gr[i] * yr[i]
		}
		for i := range o {
			o[i] = (gr[i] - s) * yr[i]
		}
	}
}

func hashOf(op fmt.Stringer) uint32 {
	h := fnv.New32a()
	fmt.Fprint(h, op.String())
	return h.Sum32()
}
