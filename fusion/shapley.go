package fusion

import (
	"fmt"
	"math"
	"math/bits"
)

// MaxShapleyPlayers bounds the players of Shapley: 2^16 coalitions is far more than the three
// modalities a model has, and little enough to enumerate.
const MaxShapleyPlayers = 16

// Shapley returns the exact Shapley values of an m-player game given by the value of every
// coalition: values[mask] is the value of the coalition whose members are the set bits of mask
// (bit i is player i), so len(values) must be 1<<m. Player i gets
//
//	phi_i = sum over S not containing i of |S|! (m-|S|-1)! / m! * (v(S + i) - v(S))
//
// and the values satisfy efficiency: they sum to values[1<<m-1] - values[0], up to rounding.
// The caller keeps values; the result is new.
//
// Package models' callers use it with the modalities a record carries as players and the
// model's output with only the coalition's modalities visible as the value (see package
// explain): exact attribution over modalities by masking, 2^m evaluations.
func Shapley(values []float64) ([]float64, error) {
	m := 0
	for 1<<m < len(values) {
		m++
	}
	if len(values) == 0 || 1<<m != len(values) || m > MaxShapleyPlayers {
		return nil, fmt.Errorf("fusion: Shapley needs the values of 2^m coalitions (m <= %d), got %d values", MaxShapleyPlayers, len(values))
	}
	for mask, v := range values {
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("fusion: Shapley: the value of coalition %b is %v", mask, v)
		}
	}
	// weight[s] = s! (m-s-1)! / m!, the share of a coalition of size s without the player.
	weight := make([]float64, max(m, 1))
	for s := range m {
		weight[s] = math.Exp(lgamma(s+1) + lgamma(m-s) - lgamma(m+1))
	}
	phi := make([]float64, m)
	for i := range m {
		bit := 1 << i
		for mask := range values {
			if mask&bit != 0 {
				continue
			}
			phi[i] += weight[bits.OnesCount(uint(mask))] * (values[mask|bit] - values[mask])
		}
	}
	return phi, nil
}

func lgamma(n int) float64 {
	v, _ := math.Lgamma(float64(n))
	return v
}
