package server

import (
	"fmt"
	"math"

	"github.com/fedweave/fedweave/models"
)

// Strategy names a server update rule.
type Strategy string

const (
	FedAvg  Strategy = "fedavg"  // sample-weighted average of the clients' models (McMahan et al. 2017)
	FedProx Strategy = "fedprox" // FedAvg on the server, a proximal term on the clients (Li et al. 2020)
	FedAdam Strategy = "fedadam" // Adam on the averaged update as a pseudo-gradient (Reddi et al. 2021)
	FedYogi Strategy = "fedyogi" // Yogi likewise (Reddi et al. 2021)
)

// ParseStrategy returns the strategy named s.
func ParseStrategy(s string) (Strategy, error) {
	switch st := Strategy(s); st {
	case FedAvg, FedProx, FedAdam, FedYogi:
		return st, nil
	}
	return "", fmt.Errorf("unknown strategy %q (want fedavg, fedprox, fedadam or fedyogi)", s)
}

// OptState is the server optimizer's state for FedAdam and FedYogi; it is part of every
// checkpoint so that a restarted server continues where it left.
type OptState struct {
	M, V []float32
}

// Update holds the server-side settings of a strategy.
type Update struct {
	Strategy Strategy
	LR       float64 // server learning rate: 1 for FedAvg and FedProx (the plain average), ~0.01-0.05 for the adaptive ones
	Beta1    float64 // default 0.9
	Beta2    float64 // default 0.99
	Tau      float64 // adaptivity, default 1e-3
}

// Apply turns the aggregate of weighted deltas into the next global parameters. sum[i] is the
// sum over clients of weight_g(i) * (local_i - global_i), weights[g] the sum of the clients'
// weights of group g. Non-trainable segments (normalisation statistics) are always averaged
// plainly. global is updated in place; st is updated for the adaptive strategies. A group nobody
// trained keeps its parameters.
func (u Update) Apply(l *models.Layout, global []float32, sum []float64, weights []float64, st *OptState) error {
	if len(sum) != len(global) || len(weights) != models.NumGroups {
		return fmt.Errorf("server: aggregate of %d values in %d groups, want %d in %d", len(sum), len(weights), len(global), models.NumGroups)
	}
	lr := u.LR
	if lr == 0 {
		lr = 1
		if u.Strategy == FedAdam || u.Strategy == FedYogi {
			lr = 0.02
		}
	}
	b1, b2, tau := orDefault(u.Beta1, 0.9), orDefault(u.Beta2, 0.99), orDefault(u.Tau, 1e-3)
	adaptive := u.Strategy == FedAdam || u.Strategy == FedYogi
	if adaptive && (len(st.M) != len(global) || len(st.V) != len(global)) {
		st.M, st.V = make([]float32, len(global)), make([]float32, len(global))
	}
	next := make([]float32, len(global))
	copy(next, global)
	for _, s := range l.Segments {
		w := weights[models.GroupOf(s.Name)]
		if w <= 0 {
			continue
		}
		for i := s.Offset; i < s.Offset+s.Size(); i++ {
			delta := sum[i] / w
			if !s.Trainable || !adaptive {
				step := delta
				if s.Trainable {
					step *= lr
				}
				next[i] = float32(float64(global[i]) + step)
				continue
			}
			m := b1*float64(st.M[i]) + (1-b1)*delta
			v := float64(st.V[i])
			d2 := delta * delta
			if u.Strategy == FedAdam {
				v = b2*v + (1-b2)*d2
			} else {
				v -= (1 - b2) * d2 * sign(v-d2)
			}
			st.M[i], st.V[i] = float32(m), float32(v)
			next[i] = float32(float64(global[i]) + lr*m/(math.Sqrt(v)+tau))
		}
	}
	for i, v := range next {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			return fmt.Errorf("server: update made parameter %d non-finite; lower the server learning rate", i)
		}
	}
	copy(global, next)
	return nil
}

func orDefault(v, d float64) float64 {
	if v == 0 {
		return d
	}
	return v
}

func sign(x float64) float64 {
	switch {
	case x > 0:
		return 1
	case x < 0:
		return -1
	}
	return 0
}
