package client

import (
	"encoding/json"
	"fmt"
	"math"
)

// RoundDP is what a round with distributed differential privacy announces in its secagg
// settings (RoundStart.protocol): the L2 bound to clip the update to, and the task's
// cumulative epsilon, at Delta, once the round is committed.
type RoundDP struct {
	Clip    float64 `json:"dp_clip"`
	Epsilon float64 `json:"dp_epsilon"`
	Delta   float64 `json:"dp_delta"`
}

// roundDP reads a round's DP announcement; nil when the round has none.
func roundDP(secure string, settings []byte) (*RoundDP, error) {
	if secure != "secagg" || len(settings) == 0 {
		return nil, nil
	}
	var d struct {
		Clip    *float64 `json:"dp_clip"`
		Epsilon float64  `json:"dp_epsilon"`
		Delta   float64  `json:"dp_delta"`
	}
	if err := json.Unmarshal(settings, &d); err != nil {
		return nil, fmt.Errorf("client: the round's secagg settings: %w", err)
	}
	if d.Clip == nil {
		return nil, nil
	}
	if !(*d.Clip > 0) || math.IsInf(*d.Clip, 0) || !(d.Epsilon >= 0) || !(d.Delta > 0 && d.Delta < 1) {
		return nil, fmt.Errorf("client: the round announces malformed DP settings (clip %v, epsilon %v, delta %v)", *d.Clip, d.Epsilon, d.Delta)
	}
	return &RoundDP{Clip: *d.Clip, Epsilon: d.Epsilon, Delta: d.Delta}, nil
}

// ClipL2 scales v down, if needed, to an L2 norm of at most c.
func ClipL2(v []float32, c float64) {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	if n := math.Sqrt(ss); n > c {
		f := c / n
		for i := range v {
			v[i] = float32(float64(v[i]) * f)
		}
		// float32 rounding may leave the norm a hair above c: shave it.
		for norm2(v) > c*c {
			for i := range v {
				v[i] = float32(float64(v[i]) * (1 - 1e-6))
			}
		}
	}
}

func norm2(v []float32) float64 {
	var ss float64
	for _, x := range v {
		ss += float64(x) * float64(x)
	}
	return ss
}

// checkBudget refuses a round whose announced cumulative epsilon exceeds the policy's
// max_epsilon, or that announces no DP at all when the policy sets one.
func (p *SharingPolicy) checkBudget(d *RoundDP) error {
	if p == nil || p.MaxEpsilon == 0 {
		return nil
	}
	if d == nil {
		return fmt.Errorf("%w: the round has no differential privacy and the policy's max_epsilon is %g", ErrNotShared, p.MaxEpsilon)
	}
	if d.Epsilon > p.MaxEpsilon {
		return fmt.Errorf("%w: the round would bring epsilon to %.4g (delta %g), over the policy's max_epsilon %g", ErrNotShared, d.Epsilon, d.Delta, p.MaxEpsilon)
	}
	return nil
}
