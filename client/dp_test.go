package client

import (
	"errors"
	"math"
	"testing"
)

func TestClipL2(t *testing.T) {
	v := []float32{3, 4, 0}
	ClipL2(v, 10) // within: untouched
	if v[0] != 3 || v[1] != 4 {
		t.Fatalf("clipped a vector within the bound: %v", v)
	}
	ClipL2(v, 1)
	if n := math.Sqrt(norm2(v)); n > 1 || n < 0.999 {
		t.Fatalf("norm %v after clipping to 1", n)
	}
	if math.Abs(float64(v[0]/v[1])-0.75) > 1e-6 {
		t.Errorf("direction changed: %v", v)
	}
	big := make([]float32, 100000)
	for i := range big {
		big[i] = float32(i%7) - 3.3
	}
	ClipL2(big, 0.1)
	if norm2(big) > 0.01 {
		t.Errorf("norm² %v over 0.01", norm2(big))
	}
}

func TestRoundDPAndBudget(t *testing.T) {
	d, err := roundDP("secagg", []byte(`{"quant":{},"noise":5,"dp_clip":2,"dp_epsilon":3.5,"dp_delta":1e-5}`))
	if err != nil || d == nil || d.Clip != 2 || d.Epsilon != 3.5 || d.Delta != 1e-5 {
		t.Fatalf("roundDP = %+v, %v", d, err)
	}
	if d, err := roundDP("secagg", []byte(`{"quant":{}}`)); d != nil || err != nil {
		t.Fatalf("no DP: %+v, %v", d, err)
	}
	if _, err := roundDP("secagg", []byte(`{"dp_clip":0,"dp_epsilon":1,"dp_delta":1e-5}`)); err == nil {
		t.Error("clip 0 accepted")
	}
	var none *SharingPolicy
	if err := none.checkBudget(nil); err != nil {
		t.Error(err)
	}
	p := &SharingPolicy{MaxEpsilon: 4}
	if err := p.checkBudget(d); err != nil {
		t.Errorf("3.5 under 4: %v", err)
	}
	if err := p.checkBudget(&RoundDP{Clip: 1, Epsilon: 4.01, Delta: 1e-5}); !errors.Is(err, ErrNotShared) {
		t.Errorf("4.01 over 4: %v", err)
	}
	if err := p.checkBudget(nil); !errors.Is(err, ErrNotShared) {
		t.Errorf("a round without DP: %v", err)
	}
	if err := (&SharingPolicy{MaxEpsilon: -1}).Validate(); err == nil {
		t.Error("negative max_epsilon valid")
	}
}
