package agg_test

import (
	"bytes"
	"encoding/binary"
	"encoding/hex"
	"errors"
	"math"
	"os"
	"slices"
	"strings"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/agg/aggtest"
)

func TestPlain(t *testing.T) {
	aggtest.TestProtocol(t, agg.Plain{}, aggtest.Options{
		// The suite's values lie in [-1, 1) and its cohorts have at most 17 clients, so two
		// float64 sums of the same float32 values in different orders differ by at most
		// 2·16·2⁻⁵³·17 < 7e-14. A float32 accumulator would be off by about 1e-7.
		Tolerance:    1e-12,
		MaxDropPhase: 0,  // one phase: a client sends its update or is absent
		HeaderLen:    52, // magic, round, layout hash, counts
	})
}

// plainHeader is the length of the header of a plaintext update.
const plainHeader = 4 + 8 + 32 + 4 + 4

// codecParams are the parameters of the codec tests and of testdata/plain-v1.hex.
var codecParams = agg.Params{
	Round:      7,
	LayoutHash: [32]byte{0, 1, 2, 3, 4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19, 20, 21, 22, 23, 24, 25, 26, 27, 28, 29, 30, 31},
	NumValues:  3,
	NumGroups:  2,
	Groups:     []uint8{0, 0, 1},
}

// codecInput is the input of testdata/plain-v1.hex.
func codecInput() agg.Input {
	return agg.Input{Values: []float32{1.5, -0.25, 0}, Weights: []float64{10, 0}}
}

// sameInput compares bit for bit, so that -0 and 0 differ.
func sameInput(a, b agg.Input) bool {
	return slices.EqualFunc(a.Values, b.Values, func(x, y float32) bool { return math.Float32bits(x) == math.Float32bits(y) }) &&
		slices.EqualFunc(a.Weights, b.Weights, func(x, y float64) bool { return math.Float64bits(x) == math.Float64bits(y) })
}

func TestPlainKnownAnswer(t *testing.T) {
	text, err := os.ReadFile("testdata/plain-v1.hex")
	if err != nil {
		t.Fatal(err)
	}
	var digits strings.Builder
	for line := range strings.Lines(string(text)) {
		line, _, _ = strings.Cut(line, "#")
		digits.WriteString(strings.TrimSpace(line))
	}
	want, err := hex.DecodeString(digits.String())
	if err != nil {
		t.Fatal(err)
	}
	if got := agg.EncodePlain(codecParams, codecInput()); !bytes.Equal(got, want) {
		t.Errorf("EncodePlain:\n got %x\nwant %x", got, want)
	}
	in, err := agg.DecodePlain(codecParams, want)
	if err != nil {
		t.Fatalf("DecodePlain: %v", err)
	}
	if !sameInput(in, codecInput()) {
		t.Errorf("DecodePlain: %v, want %v", in, codecInput())
	}
}

func TestPlainRoundTrip(t *testing.T) {
	cases := []struct {
		name string
		in   agg.Input
	}{
		{"small integers", codecInput()},
		{"signed zeros", agg.Input{Values: []float32{float32(math.Copysign(0, -1)), 0, 1}, Weights: []float64{math.Copysign(0, -1), 0}}},
		{"extremes", agg.Input{
			Values:  []float32{math.MaxFloat32, -math.MaxFloat32, math.SmallestNonzeroFloat32},
			Weights: []float64{math.MaxFloat64, math.SmallestNonzeroFloat64},
		}},
		{"fractions", agg.Input{Values: []float32{0.1, -1.0 / 3, 2.5e-20}, Weights: []float64{0.1, 1e300}}},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := agg.EncodePlain(codecParams, c.in)
			if want := plainHeader + 8*codecParams.NumGroups + 4*codecParams.NumValues; len(b) != want {
				t.Errorf("encoding of %d bytes, want %d", len(b), want)
			}
			got, err := agg.DecodePlain(codecParams, b)
			if err != nil {
				t.Fatalf("DecodePlain: %v", err)
			}
			if !sameInput(got, c.in) {
				t.Errorf("DecodePlain: %v, want %v", got, c.in)
			}
		})
	}
}

func TestDecodePlainMalformed(t *testing.T) {
	const w0, v0 = plainHeader, plainHeader + 8*2 // offsets of the first weight and value
	putF32 := func(off int, v float32) func(b []byte) []byte {
		return func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[off:], math.Float32bits(v))
			return b
		}
	}
	putF64 := func(off int, w float64) func(b []byte) []byte {
		return func(b []byte) []byte {
			binary.LittleEndian.PutUint64(b[off:], math.Float64bits(w))
			return b
		}
	}
	putU32 := func(off int, n uint32) func(b []byte) []byte {
		return func(b []byte) []byte {
			binary.LittleEndian.PutUint32(b[off:], n)
			return b
		}
	}
	cases := []struct {
		name   string
		mutate func(b []byte) []byte
		want   error
	}{
		{"empty", func(b []byte) []byte { return nil }, agg.ErrBadMessage},
		{"header cut short", func(b []byte) []byte { return b[:plainHeader-1] }, agg.ErrBadMessage},
		{"header only", func(b []byte) []byte { return b[:plainHeader] }, agg.ErrBadMessage},
		{"a byte short", func(b []byte) []byte { return b[:len(b)-1] }, agg.ErrBadMessage},
		{"a byte over", func(b []byte) []byte { return append(b, 0) }, agg.ErrBadMessage},
		{"a value over", func(b []byte) []byte { return append(b, 0, 0, 0, 0) }, agg.ErrBadMessage},
		{"wrong magic", func(b []byte) []byte { copy(b, "FWP2"); return b }, agg.ErrBadMessage},
		{"no magic", func(b []byte) []byte { copy(b, "\x00\x00\x00\x00"); return b }, agg.ErrBadMessage},
		{"another round", func(b []byte) []byte { b[4]++; return b }, agg.ErrBadMessage},
		{"round off in its high byte", func(b []byte) []byte { b[11] ^= 0x80; return b }, agg.ErrBadMessage},
		{"another layout", func(b []byte) []byte { b[43] ^= 1; return b }, agg.ErrBadMessage},
		{"a value count over", putU32(44, 4), agg.ErrBadMessage},
		{"a value count over, and the bytes", func(b []byte) []byte { return append(putU32(44, 4)(b), 0, 0, 0, 0) }, agg.ErrBadMessage},
		{"no values", putU32(44, 0), agg.ErrBadMessage},
		{"a group count short", putU32(48, 1), agg.ErrBadMessage},
		{"huge counts", func(b []byte) []byte { return putU32(48, math.MaxUint32)(putU32(44, math.MaxUint32)(b)) }, agg.ErrBadMessage},
		{"NaN value", putF32(v0+4, float32(math.NaN())), agg.ErrBadInput},
		{"+Inf value", putF32(v0, float32(math.Inf(1))), agg.ErrBadInput},
		{"-Inf value", putF32(v0+8, float32(math.Inf(-1))), agg.ErrBadInput},
		{"NaN weight", putF64(w0, math.NaN()), agg.ErrBadInput},
		{"+Inf weight", putF64(w0+8, math.Inf(1)), agg.ErrBadInput},
		{"-Inf weight", putF64(w0, math.Inf(-1)), agg.ErrBadInput},
		{"negative weight", putF64(w0, -1), agg.ErrBadInput},
		{"tiny negative weight", putF64(w0+8, -math.SmallestNonzeroFloat64), agg.ErrBadInput},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			b := c.mutate(agg.EncodePlain(codecParams, codecInput()))
			in, err := agg.DecodePlain(codecParams, b)
			if !errors.Is(err, c.want) {
				t.Errorf("DecodePlain: %v, want %v", err, c.want)
			}
			if in.Values != nil || in.Weights != nil {
				t.Errorf("DecodePlain returned %v with its error", in)
			}
		})
	}
}

// A server takes a client's non-finite or negative numbers for what they are to it: a bad
// message, refused like any other, and not a fault of its own.
func TestPlainReceiveBadNumbers(t *testing.T) {
	srv, err := agg.Plain{}.NewServer(codecParams, 2)
	if err != nil {
		t.Fatal(err)
	}
	bad := agg.EncodePlain(codecParams, codecInput())
	binary.LittleEndian.PutUint32(bad[plainHeader+16:], math.Float32bits(float32(math.NaN())))
	if err := srv.Receive(1, bad); !errors.Is(err, agg.ErrBadMessage) {
		t.Errorf("Receive of a NaN value: %v, want %v", err, agg.ErrBadMessage)
	}
	if err := srv.Receive(2, agg.EncodePlain(codecParams, codecInput())); err != nil {
		t.Fatalf("Receive: %v", err)
	}
	if _, _, err := srv.Next(); err != nil {
		t.Fatalf("Next: %v", err)
	}
	sum, err := srv.Result()
	if err != nil {
		t.Fatalf("Result: %v", err)
	}
	if want := []float64{15, -2.5, 0}; !slices.Equal(sum.Values, want) || !slices.Equal(sum.Contributors, []int{2}) {
		t.Errorf("sum %v, want values %v from client 2", sum, want)
	}
}

// Whole numbers, as values and weights, add up exactly: each value times its group's weight.
func TestPlainExactIntegers(t *testing.T) {
	inputs := []agg.Input{
		{Values: []float32{1 << 20, -3, 0}, Weights: []float64{1 << 40, 1}},
		{Values: []float32{1 << 20, 5, -7}, Weights: []float64{1, 0}},
		{Values: []float32{-(1 << 24), 1, 7}, Weights: []float64{3, 2}},
	}
	sum, err := agg.Run(agg.Plain{}, codecParams, inputs, nil)
	if err != nil {
		t.Fatal(err)
	}
	// Values 0 and 1 are in group 0, value 2 in group 1 (codecParams).
	want := agg.Sum{
		Values:       []float64{1<<60 + 1<<20 - 3<<24, -3<<40 + 5 + 3, 0*1 + 0*(-7) + 2*7},
		Weights:      []float64{1<<40 + 4, 3},
		Contributors: []int{1, 2, 3},
	}
	if !slices.Equal(sum.Values, want.Values) || !slices.Equal(sum.Weights, want.Weights) || !slices.Equal(sum.Contributors, want.Contributors) {
		t.Errorf("sum %v, want %v", sum, want)
	}
}

func FuzzDecodePlain(f *testing.F) {
	for _, in := range []agg.Input{
		codecInput(),
		{Values: []float32{0, 0, 0}, Weights: []float64{0, 0}},
		{Values: []float32{math.MaxFloat32, -math.SmallestNonzeroFloat32, 1}, Weights: []float64{math.MaxFloat64, 0.5}},
	} {
		b := agg.EncodePlain(codecParams, in)
		f.Add(b)
		f.Add(b[:len(b)-1])
		f.Add(append(slices.Clone(b), 0))
		f.Add(b[:plainHeader])
		for _, off := range []int{0, 4, 12, 44, 48, plainHeader, plainHeader + 16, len(b) - 1} {
			m := slices.Clone(b)
			m[off] ^= 0xff
			f.Add(m)
		}
	}
	// Another shape, which only the parameters read from its own header accept.
	f.Add(agg.EncodePlain(agg.Params{Round: 1 << 40}, agg.Input{Values: make([]float32, 5), Weights: []float64{1}}))
	f.Add([]byte{})
	f.Add([]byte("FWP1"))

	f.Fuzz(func(t *testing.T, b []byte) {
		params := []agg.Params{codecParams}
		if p, ok := headerParams(b); ok {
			params = append(params, p)
		}
		for _, p := range params {
			in, err := agg.DecodePlain(p, b)
			if err != nil {
				if !errors.Is(err, agg.ErrBadMessage) && !errors.Is(err, agg.ErrBadInput) {
					t.Fatalf("DecodePlain: %v, which is neither %v nor %v", err, agg.ErrBadMessage, agg.ErrBadInput)
				}
				continue
			}
			if err := in.Check(p); err != nil {
				t.Fatalf("DecodePlain accepted an input that fails Check: %v", err)
			}
			if got := agg.EncodePlain(p, in); !bytes.Equal(got, b) {
				t.Fatalf("re-encoding differs:\n got %x\nwant %x", got, b)
			}
		}
	})
}

// headerParams returns the parameters that a plaintext update's header claims, if they are
// valid, so that the fuzzer can reach the numbers of updates of any shape.
func headerParams(b []byte) (agg.Params, bool) {
	if len(b) < plainHeader {
		return agg.Params{}, false
	}
	p := agg.Params{
		Round:     binary.LittleEndian.Uint64(b[4:]),
		NumValues: int(binary.LittleEndian.Uint32(b[44:])),
		NumGroups: int(binary.LittleEndian.Uint32(b[48:])),
	}
	copy(p.LayoutHash[:], b[12:44])
	if p.NumValues > 1<<20 {
		return agg.Params{}, false
	}
	p.Groups = make([]uint8, p.NumValues)
	return p, p.Validate() == nil
}
