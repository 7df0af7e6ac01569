package client

import (
	"encoding/json"
	"fmt"
	"math"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/dp"
	"github.com/fedweave/fedweave/crypto/secagg"
	"github.com/fedweave/fedweave/models"
)

// RoundDP is what a round with distributed differential privacy announces in its secagg
// settings (RoundStart.protocol): the L2 bound to clip the update to. The privacy it costs the
// client computes itself (partnerRDP).
type RoundDP struct {
	Clip float64 `json:"dp_clip"`
}

// roundDP reads a round's DP announcement; nil when the round has none.
func roundDP(secure string, settings []byte) (*RoundDP, error) {
	if secure != "secagg" || len(settings) == 0 {
		return nil, nil
	}
	var d struct {
		Clip *float64 `json:"dp_clip"`
	}
	if err := json.Unmarshal(settings, &d); err != nil {
		return nil, fmt.Errorf("client: the round's secagg settings: %w", err)
	}
	if d.Clip == nil {
		return nil, nil
	}
	if !(*d.Clip > 0) || math.IsInf(*d.Clip, 0) {
		return nil, fmt.Errorf("client: the round announces a malformed DP clip (%v)", *d.Clip)
	}
	return &RoundDP{Clip: *d.Clip}, nil
}

// recordDP turns the round's DP-SGD settings into local training's; nil when the round has
// none.
func recordDP(p *pb.DPSGD) (*models.DPSGD, error) {
	if p == nil {
		return nil, nil
	}
	ok := func(x float64) bool { return x > 0 && !math.IsInf(x, 0) }
	if !ok(p.GetClip()) || !ok(p.GetNoiseMultiplier()) || !(p.GetSampleRate() > 0 && p.GetSampleRate() <= 1) || !ok(p.GetNormalizerNoise()) {
		return nil, fmt.Errorf("client: the round announces malformed DP-SGD settings (clip %v, noise multiplier %v, sample rate %v, normalizer noise %v)",
			p.GetClip(), p.GetNoiseMultiplier(), p.GetSampleRate(), p.GetNormalizerNoise())
	}
	return &models.DPSGD{Clip: p.GetClip(), NoiseMultiplier: p.GetNoiseMultiplier(), SampleRate: p.GetSampleRate(), NormalizerNoise: p.GetNormalizerNoise()}, nil
}

// recordRDP is the curve of one round of DP-SGD at orders: epochs·ceil(1/q) steps of the
// subsampled Gaussian, and one Gaussian release of the tabular statistics if normalizer.
func recordRDP(p *models.DPSGD, epochs int, normalizer bool, orders []float64) ([]float64, error) {
	extra := 0.0
	if normalizer {
		extra = p.NormalizerNoise
	}
	return dp.DPSGDRDP(p.SampleRate, p.NoiseMultiplier, p.Steps(epochs), extra, orders)
}

// partnerRDP is the curve of one update under distributed Skellam noise (secagg settings with
// Noise), counted as if only the other inputs among the fewest the server can unmask had added
// noise. That is t, the shares that rebuild a secret: a survivor set smaller than t leaves a
// dropped neighbour's mask unrecoverable, whatever the graph (secagg's Threshold, the liveness
// bound n-(k+1)+t, is larger on sparse graphs and not a bound on what a server that picks the
// dropouts can do). The cohort is checked against the protocol's own in round.phase.
func partnerRDP(settings []byte, clip float64, cohort, numValues int, orders []float64) ([]float64, error) {
	var sc secagg.Config
	if err := json.Unmarshal(settings, &sc); err != nil {
		return nil, fmt.Errorf("client: the round's secagg settings: %w", err)
	}
	step, err := sc.Quant.Step()
	if err != nil {
		return nil, fmt.Errorf("client: the round's secagg settings: %w", err)
	}
	if !(sc.Noise > 0) || math.IsInf(sc.Noise, 0) {
		return nil, fmt.Errorf("client: the round announces distributed DP without noise (%v)", sc.Noise)
	}
	_, t, err := sc.Shape(cohort)
	if err != nil {
		return nil, fmt.Errorf("client: the round's secagg settings: %w", err)
	}
	others := t - 1
	if others < 1 {
		return nil, fmt.Errorf("client: the round's secure aggregation can unmask with no other partner's noise (cohort %d): distributed DP gives nothing", cohort)
	}
	l1, l2 := dp.QuantizedSensitivity(clip/step, numValues)
	return dp.SkellamRDP(l1, l2, float64(others)*sc.Noise, orders)
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

// checkBudget refuses a round that would take the ledger past the policy's max_epsilon in a
// unit (charges: the round's curve per unit), or that has no differential privacy at all when
// the policy sets one.
func (p *SharingPolicy) checkBudget(l *Ledger, charges map[string][]float64) error {
	if p == nil || p.MaxEpsilon == 0 {
		return nil
	}
	if len(charges) == 0 {
		return fmt.Errorf("%w: the round has no differential privacy and the policy's max_epsilon is %g", ErrNotShared, p.MaxEpsilon)
	}
	for _, unit := range []string{UnitRecord, UnitPartner} {
		rdp, ok := charges[unit]
		if !ok {
			continue
		}
		if e := l.Would(unit, rdp, p.delta()); e > p.MaxEpsilon {
			return fmt.Errorf("%w: sending this round's update would bring the partner's epsilon per %s to %.4g (delta %g, over all its tasks), over the policy's max_epsilon %g",
				ErrNotShared, unit, e, p.delta(), p.MaxEpsilon)
		}
	}
	return nil
}
