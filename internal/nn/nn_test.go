package nn

import (
	"math"
	"testing"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"
)

// TestSoftmax compares Softmax and LogSoftmax with a direct computation on rows whose scales
// differ by far more than exp can span: the case gorgonia's own kernels get wrong.
func TestSoftmax(t *testing.T) {
	rows := [][]float64{
		{1000, 999, 998},
		{-1000, -1001, -1030},
		{0, 0, 0},
		{3, -30, 0.5},
	}
	for _, log := range []bool{false, true} {
		g := G.NewGraph()
		var flat []float64
		for _, r := range rows {
			flat = append(flat, r...)
		}
		x := G.NewMatrix(g, G.Float64, G.WithShape(len(rows), 3), G.WithValue(tensor.New(tensor.WithShape(len(rows), 3), tensor.WithBacking(flat))))
		var y *G.Node
		if log {
			y = LogSoftmax(x)
		} else {
			y = Softmax(x)
		}
		vm := G.NewTapeMachine(g)
		if err := vm.RunAll(); err != nil {
			t.Fatal(err)
		}
		got := y.Value().Data().([]float64)
		for i, r := range rows {
			m := math.Max(r[0], math.Max(r[1], r[2]))
			var sum float64
			for _, v := range r {
				sum += math.Exp(v - m)
			}
			for j, v := range r {
				want := math.Exp(v-m) / sum
				if log {
					want = v - m - math.Log(sum)
				}
				if math.Abs(got[i*3+j]-want) > 1e-12 {
					t.Errorf("log=%v row %d col %d: got %v, want %v", log, i, j, got[i*3+j], want)
				}
			}
		}
	}
}

// TestSoftmaxGradient checks both ops' gradients by finite differences, through a weighted sum
// so that every output's gradient differs.
func TestSoftmaxGradient(t *testing.T) {
	for _, log := range []bool{false, true} {
		x0 := []float64{0.3, -1.2, 2.0, 0.1, 5, -4, 0, 0.7}
		w := []float64{1, -2, 0.5, 3, -1, 2, 0.25, -0.5}
		eval := func(x []float64, grad bool) (float64, []float64) {
			g := G.NewGraph()
			xn := G.NewMatrix(g, G.Float64, G.WithShape(2, 4), G.WithName("x"), G.WithValue(tensor.New(tensor.WithShape(2, 4), tensor.WithBacking(append([]float64(nil), x...)))))
			wn := G.NewMatrix(g, G.Float64, G.WithShape(2, 4), G.WithValue(tensor.New(tensor.WithShape(2, 4), tensor.WithBacking(w))))
			var y *G.Node
			if log {
				y = LogSoftmax(xn)
			} else {
				y = Softmax(xn)
			}
			cost := G.Must(G.Sum(G.Must(G.HadamardProd(y, wn))))
			if grad {
				if _, err := G.Grad(cost, xn); err != nil {
					t.Fatal(err)
				}
			}
			vm := G.NewTapeMachine(g, G.BindDualValues(xn))
			if err := vm.RunAll(); err != nil {
				t.Fatal(err)
			}
			var gv []float64
			if grad {
				gr, _ := xn.Grad()
				gv = append(gv, gr.Data().([]float64)...)
			}
			return cost.Value().Data().(float64), gv
		}
		_, analytic := eval(x0, true)
		for i := range x0 {
			up := append([]float64(nil), x0...)
			down := append([]float64(nil), x0...)
			up[i] += 1e-6
			down[i] -= 1e-6
			cu, _ := eval(up, false)
			cd, _ := eval(down, false)
			num := (cu - cd) / 2e-6
			if math.Abs(num-analytic[i]) > 1e-6 {
				t.Errorf("log=%v x[%d]: analytic %v, numeric %v", log, i, analytic[i], num)
			}
		}
	}
}

func TestLayout(t *testing.T) {
	b, err := NewBuilder([]float32(nil))
	if err != nil {
		t.Fatal(err)
	}
	x := b.Input("x", 2, 3)
	b.Dense("enc.tabular.hidden", x, 3, 4, InitHe)
	b.Buffer("enc.tabular.norm.std", []int{1, 3}, InitOnes)
	l := b.Layout()
	if got, want := l.Size(), 3*4+4+3; got != want {
		t.Fatalf("size %d, want %d", got, want)
	}
	if len(b.Trainable()) != 2 {
		t.Fatalf("%d trainable, want 2", len(b.Trainable()))
	}
	// The hash pins the layout rules: if it changes, so must LayoutVersion.
	const want = "6e0a735d"
	if got := l.Hash()[:8]; got != want {
		t.Errorf("layout hash %s, want %s (bump LayoutVersion when the layout's meaning changes)", got, want)
	}
	if err := l.Check(l.Hash()); err != nil {
		t.Fatal(err)
	}
	if err := l.Check("00"); err == nil {
		t.Fatal("wrong hash accepted")
	}
	p := make([]float32, l.Size())
	l.Initialize(p, 1)
	std, _ := l.Find("enc.tabular.norm.std")
	for _, v := range p[std.Offset : std.Offset+std.Size()] {
		if v != 1 {
			t.Fatalf("InitOnes gave %v", v)
		}
	}
	q := make([]float32, l.Size())
	l.Initialize(q, 1)
	for i := range p {
		if p[i] != q[i] {
			t.Fatal("initialisation is not deterministic")
		}
	}
	if _, err := NewBuilder([]int(nil)); err == nil {
		t.Fatal("a []int backing was accepted")
	}
}
