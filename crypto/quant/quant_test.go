package quant_test

import (
	"encoding/binary"
	"errors"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"github.com/fedweave/fedweave/crypto/quant"
)

func groupsOf(n, g int) []uint8 {
	out := make([]uint8, n)
	for i := range out {
		out[i] = uint8(i * g / n)
	}
	return out
}

func seeded(seed uint64) *rand.ChaCha8 {
	var s [32]byte
	binary.LittleEndian.PutUint64(s[:], seed)
	return rand.NewChaCha8(s)
}

func TestNewLayout(t *testing.T) {
	groups := groupsOf(10, 2)
	cases := []struct {
		name      string
		cfg       quant.Config
		cohort    int
		maxWeight uint64
		wide      bool
		wantMax   uint64 // 0: maxWeight
		err       bool
	}{
		{name: "defaults, small", cohort: 5, maxWeight: 1000},
		{name: "narrow at the edge", cohort: 100, maxWeight: 655},                 // 65500 <= 2^16
		{name: "wide one past the edge", cohort: 100, maxWeight: 656, wide: true}, // 65600 > 2^16
		{name: "exactly 2^16", cohort: 64, maxWeight: 1024},
		{name: "17 clients of 1000", cohort: 17, maxWeight: 1000},
		{name: "24 bits", cfg: quant.Config{Bits: 24}, cohort: 17, maxWeight: 1000, wide: true},
		{name: "8 bits, large weights", cfg: quant.Config{Bits: 8}, cohort: 100, maxWeight: 1 << 17},
		{name: "no bound", cohort: 10, wide: true, wantMax: (1 << 48) / 10},
		{name: "no bound, 32 bits", cfg: quant.Config{Bits: 32}, cohort: 3, wide: true, wantMax: (1 << 32) / 3},
		{name: "64 bits exactly", cfg: quant.Config{Bits: 32}, cohort: 1 << 16, maxWeight: 1 << 16, wide: true},
		{name: "beyond 64 bits", cfg: quant.Config{Bits: 32}, cohort: 1 << 16, maxWeight: 1<<16 + 1, err: true},
		{name: "product overflows", cohort: 1 << 20, maxWeight: math.MaxUint64 / 2, err: true},
		{name: "weight sums beyond 2^53", cfg: quant.Config{Bits: 8}, cohort: 1 << 20, maxWeight: 1<<33 + 1, err: true},
		{name: "weight sums at 2^53", cfg: quant.Config{Bits: 8}, cohort: 1 << 20, maxWeight: 1 << 33, wide: true},
		{name: "no bound, 8 bits", cfg: quant.Config{Bits: 8}, cohort: 5, wide: true, wantMax: (1 << 53) / 5},
		{name: "1 bit", cfg: quant.Config{Bits: 1}, cohort: 2, maxWeight: 1, err: true},
		{name: "33 bits", cfg: quant.Config{Bits: 33}, cohort: 2, maxWeight: 1, err: true},
		{name: "negative clip", cfg: quant.Config{Clip: -1}, cohort: 2, maxWeight: 1, err: true},
		{name: "NaN clip", cfg: quant.Config{Clip: math.NaN()}, cohort: 2, maxWeight: 1, err: true},
		{name: "infinite clip", cfg: quant.Config{Clip: math.Inf(1)}, cohort: 2, maxWeight: 1, err: true},
		{name: "no cohort", cohort: 0, maxWeight: 1, err: true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			l, err := quant.NewLayout(c.cfg, groups, 2, c.cohort, c.maxWeight)
			if c.err {
				if err == nil {
					t.Fatalf("NewLayout: %+v, want an error", l)
				}
				return
			}
			if err != nil {
				t.Fatalf("NewLayout: %v", err)
			}
			if l.Wide != c.wide {
				t.Errorf("Wide = %v, want %v", l.Wide, c.wide)
			}
			want := c.maxWeight
			if c.wantMax != 0 {
				want = c.wantMax
			}
			if l.MaxWeight != want {
				t.Errorf("MaxWeight = %d, want %d", l.MaxWeight, want)
			}
			if l.Bits == 0 || l.Clip == 0 {
				t.Errorf("defaults not filled in: %+v", l.Config)
			}
			if got := l.NewVector(); got.Wide() != l.Wide || got.Len() != 12 {
				t.Errorf("NewVector: %d words, wide %v", got.Len(), got.Wide())
			}
		})
	}
	t.Run("bad groups", func(t *testing.T) {
		if _, err := quant.NewLayout(quant.Config{}, []uint8{0, 2}, 2, 3, 1); err == nil {
			t.Error("value in group 2 of 2: no error")
		}
		if _, err := quant.NewLayout(quant.Config{}, nil, 1, 3, 1); err == nil {
			t.Error("no values: no error")
		}
		if _, err := quant.NewLayout(quant.Config{}, []uint8{0}, 0, 3, 1); err == nil {
			t.Error("no groups: no error")
		}
	})
}

// TestNoWrap sums the largest encodings a layout admits, at the edge of 32-bit words and in
// wide ones, and requires the exact extreme sums back.
func TestNoWrap(t *testing.T) {
	for _, c := range []struct {
		name      string
		cfg       quant.Config
		cohort    int
		maxWeight uint64
	}{
		{"narrow edge", quant.Config{}, 100, 655},
		{"2^16 exactly", quant.Config{}, 64, 1024},
		{"wide", quant.Config{}, 100, 656},
		{"wide, no bound", quant.Config{Bits: 20}, 7, 0},
		{"32-bit values in 64 bits", quant.Config{Bits: 32, Clip: 0.5}, 1 << 10, 1 << 22},
	} {
		t.Run(c.name, func(t *testing.T) {
			l, err := quant.NewLayout(c.cfg, groupsOf(4, 1), 1, c.cohort, c.maxWeight)
			if err != nil {
				t.Fatal(err)
			}
			sum := l.NewVector()
			w := float64(l.MaxWeight)
			for range l.Cohort {
				// Beyond the clip range on purpose: clipped to ±Clip, so q = ±S exactly.
				enc, err := l.Encode([]float32{2, -2, float32(l.Clip), -float32(l.Clip)}, []float64{w}, seeded(1))
				if err != nil {
					t.Fatal(err)
				}
				sum.Add(enc)
			}
			vals, weights, err := l.Decode(sum)
			if err != nil {
				t.Fatal(err)
			}
			total := float64(l.Cohort) * w
			want := total * l.Clip
			if vals[0] != want || vals[1] != -want || vals[2] != want || vals[3] != -want {
				t.Errorf("extreme sums %v, want ±%v", vals, want)
			}
			if weights[0] != total {
				t.Errorf("weight sum %v, want %v", weights[0], total)
			}
		})
	}
}

func TestRoundTrip(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	for _, cfg := range []quant.Config{{}, {Bits: 8}, {Bits: 24, Clip: 0.01}, {Bits: 32, Clip: 3}} {
		l, err := quant.NewLayout(cfg, groupsOf(1000, 3), 3, 10, 1000)
		if err != nil {
			t.Fatal(err)
		}
		values := make([]float32, l.N)
		for i := range values {
			values[i] = float32((2*rng.Float64() - 1) * 1.5 * l.Clip) // some beyond the clip range
		}
		weights := []float64{0, 1, 1000}
		enc, err := l.Encode(values, weights, seeded(2))
		if err != nil {
			t.Fatal(err)
		}
		got, gotW, err := l.Decode(enc)
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(gotW, weights) {
			t.Errorf("bits %d: weights %v, want %v", l.Bits, gotW, weights)
		}
		for i, v := range values {
			w := weights[l.Groups[i]]
			clipped := math.Max(-l.Clip, math.Min(l.Clip, float64(v)))
			if d := math.Abs(got[i] - w*clipped); d > l.ErrorBound(w)*(1+1e-9) {
				t.Fatalf("bits %d: value %d = %v with weight %v decodes to %v, off by %.3g > %.3g", l.Bits, i, v, w, got[i], d, l.ErrorBound(w))
			}
		}
	}
}

// TestUnbiased rounds the same value many times: the mean of the rounded values must be the
// value, within a few standard errors (the test is deterministic: the generator is seeded).
func TestUnbiased(t *testing.T) {
	const n = 200_000
	l, err := quant.NewLayout(quant.Config{Bits: 8, Clip: 1}, make([]uint8, n), 1, 1, 1)
	if err != nil {
		t.Fatal(err)
	}
	step := l.Clip / l.Steps()
	for _, frac := range []float64{0.5, 0.1, 0.9, 0.01, 0.3} {
		v := float32((3 + frac) * step) // between steps 3 and 4, frac of the way
		frac := float64(v)/step - 3     // what float32 made of it
		values := make([]float32, n)
		for i := range values {
			values[i] = v
		}
		enc, err := l.Encode(values, []float64{1}, seeded(uint64(frac*1000)))
		if err != nil {
			t.Fatal(err)
		}
		ups := 0
		for _, x := range enc.U32[:n] {
			switch x {
			case 4:
				ups++
			case 3:
			default:
				t.Fatalf("frac %v: rounded to %d, want 3 or 4", frac, x)
			}
		}
		mean := float64(ups) / n
		se := math.Sqrt(frac * (1 - frac) / n)
		if d := math.Abs(mean - frac); d > 5*se {
			t.Errorf("frac %v: rounded up %.5f of the time, off by %.2f standard errors", frac, mean, d/se)
		}
	}
}

func TestRefusals(t *testing.T) {
	l, err := quant.NewLayout(quant.Config{}, groupsOf(4, 2), 2, 3, 100)
	if err != nil {
		t.Fatal(err)
	}
	good := []float32{0.1, 0.2, 0.3, 0.4}
	cases := []struct {
		name    string
		values  []float32
		weights []float64
		want    error
	}{
		{"NaN value", []float32{0, float32(math.NaN()), 0, 0}, []float64{1, 1}, quant.ErrNotFinite},
		{"+Inf value", []float32{0, 0, float32(math.Inf(1)), 0}, []float64{1, 1}, quant.ErrNotFinite},
		{"-Inf value", []float32{0, 0, 0, float32(math.Inf(-1))}, []float64{1, 1}, quant.ErrNotFinite},
		{"fractional weight", good, []float64{1.5, 1}, quant.ErrWeight},
		{"negative weight", good, []float64{1, -1}, quant.ErrWeight},
		{"weight above the bound", good, []float64{101, 1}, quant.ErrWeight},
		{"NaN weight", good, []float64{math.NaN(), 1}, quant.ErrWeight},
		{"infinite weight", good, []float64{math.Inf(1), 1}, quant.ErrWeight},
		{"too few values", good[:3], []float64{1, 1}, nil},
		{"too few weights", good, []float64{1}, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			_, err := l.Encode(c.values, c.weights, seeded(1))
			if err == nil {
				t.Fatal("no error")
			}
			if c.want != nil && !errors.Is(err, c.want) {
				t.Errorf("%v, want %v", err, c.want)
			}
		})
	}
	t.Run("weight at the bound", func(t *testing.T) {
		if _, err := l.Encode(good, []float64{100, 0}, seeded(1)); err != nil {
			t.Error(err)
		}
	})
	t.Run("vector of another layout", func(t *testing.T) {
		wide, _ := quant.NewLayout(quant.Config{}, groupsOf(4, 2), 2, 3, 0)
		if _, _, err := l.Decode(wide.NewVector()); err == nil {
			t.Error("Decode of a wide vector in a narrow layout: no error")
		}
		if err := l.EncodeTo(wide.NewVector(), good, []float64{1, 1}, nil); err == nil {
			t.Error("EncodeTo a wide vector in a narrow layout: no error")
		}
	})
}

// FuzzSumLaw checks the law the protocols rely on: the decoded sum of encodings is exactly the
// weighted sum of the clients' quantized values, with weights summed exactly, for any cohort,
// values and weights the layout admits.
func FuzzSumLaw(f *testing.F) {
	f.Add([]byte{3, 16, 0, 1, 2, 3, 4, 5, 6, 7, 8, 9}, uint64(1))
	f.Add([]byte{17, 8, 255, 255, 0, 0, 128, 127}, uint64(2))
	f.Add([]byte{1, 32, 7}, uint64(3))
	f.Fuzz(func(t *testing.T, data []byte, seed uint64) {
		if len(data) < 3 {
			return
		}
		cohort := 1 + int(data[0])%20
		bitsV := 2 + int(data[1])%31
		var maxWeight uint64
		if data[2]%4 != 0 {
			maxWeight = 1 + uint64(data[2])*uint64(data[2])*13
		}
		l, err := quant.NewLayout(quant.Config{Bits: bitsV, Clip: 0.25 + float64(data[2]%8)}, groupsOf(8, 2), 2, cohort, maxWeight)
		if err != nil {
			return // a layout that cannot exist
		}
		rng := rand.New(rand.NewPCG(seed, uint64(len(data))))
		sum := l.NewVector()
		want := make([]int64, l.N) // Σ w_k q_k, exactly (|.| < 2^63 by the layout's rule)
		wantW := make([]uint64, l.G)
		for k := range cohort {
			values := make([]float32, l.N)
			for i := range values {
				if j := 3 + k*l.N + i; j < len(data) {
					values[i] = float32(int8(data[j])) / 64 * float32(l.Clip)
				} else {
					values[i] = float32((2*rng.Float64() - 1) * 1.2 * l.Clip)
				}
			}
			weights := []float64{float64(rng.Uint64N(l.MaxWeight + 1)), float64(l.MaxWeight)}
			if k%3 == 1 {
				weights[0] = 0
			}
			enc, err := l.Encode(values, weights, seeded(seed+uint64(k)))
			if err != nil {
				t.Fatal(err)
			}
			// The same rounding with weight 1 gives q itself.
			one, err := l.Encode(values, []float64{1, 1}, seeded(seed+uint64(k)))
			if err != nil {
				t.Fatal(err)
			}
			for i := range l.N {
				var q int64
				if l.Wide {
					q = int64(one.U64[i])
				} else {
					q = int64(int32(one.U32[i]))
				}
				exact := math.Max(-l.Clip, math.Min(l.Clip, float64(values[i]))) * l.Steps() / l.Clip
				if !(math.Abs(float64(q)-exact) < 1+1e-9) {
					t.Fatalf("value %v rounded to %d, want within one step of %v", values[i], q, exact)
				}
				want[i] += int64(uint64(weights[l.Groups[i]])) * q
			}
			wantW[0] += uint64(weights[0])
			wantW[1] += uint64(weights[1])
			sum.Add(enc)
		}
		for i := range l.N {
			var got int64
			if l.Wide {
				got = int64(sum.U64[i])
			} else {
				got = int64(int32(sum.U32[i]))
			}
			if got != want[i] {
				t.Fatalf("value %d: sum %d, want %d", i, got, want[i])
			}
		}
		vals, weights, err := l.Decode(sum)
		if err != nil {
			t.Fatal(err)
		}
		for i, v := range vals {
			if w := float64(want[i]) * (l.Clip / l.Steps()); v != w {
				t.Fatalf("decoded value %d is %v, want %v", i, v, w)
			}
		}
		for g, w := range weights {
			if w != float64(wantW[g]) {
				t.Fatalf("weight %d is %v, want %d", g, w, wantW[g])
			}
		}
	})
}

func TestVector(t *testing.T) {
	a := quant.Vector{U32: []uint32{1, math.MaxUint32}}
	b := quant.Vector{U32: []uint32{2, 2}}
	c := a.Clone()
	c.Add(b)
	if !c.Equal(quant.Vector{U32: []uint32{3, 1}}) {
		t.Errorf("Add: %v", c.U32)
	}
	c.Sub(b)
	if !c.Equal(a) {
		t.Errorf("Sub: %v, want %v", c.U32, a.U32)
	}
	w := quant.Vector{U64: []uint64{1, 2}}
	if w.Equal(b) || !w.Wide() || b.Wide() {
		t.Error("a wide vector equals a narrow one")
	}
	defer func() {
		if recover() == nil {
			t.Error("Add of vectors of two widths: no panic")
		}
	}()
	c.Add(w)
}

func BenchmarkEncode(b *testing.B) {
	const n = 1_000_000
	l, err := quant.NewLayout(quant.Config{}, make([]uint8, n), 1, 100, 100)
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	values := make([]float32, n)
	for i := range values {
		values[i] = float32(rng.NormFloat64() * 0.1)
	}
	dst := l.NewVector()
	src := seeded(1)
	b.SetBytes(4 * n)
	for b.Loop() {
		if err := l.EncodeTo(dst, values, []float64{37}, src); err != nil {
			b.Fatal(err)
		}
	}
}
