package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/fedweave/fedweave/crypto/dp"
	"github.com/fedweave/fedweave/crypto/quant"
	"github.com/fedweave/fedweave/crypto/secagg"
)

// DPConfig is a task's distributed differential privacy (task.dp), for secure: secagg, after
// Kairouz et al. 2021 (distributed discrete Gaussian) with the Skellam noise of Agarwal et al.
// 2021: each client clips its update to an L2 norm of Clip, quantizes it (secagg.quant, whose
// clip defaults to Clip) and adds Skellam noise to the integer vector before masking, so that
// the sum the server unmasks carries the whole cohort's noise.
//
// Sensitivity, in quantization units (one step is quant.clip / S, S = 2^(bits-1) - 1): one
// partner's clipped update has L2 norm at most Clip; quantized, Δ2 = Clip/step + sqrt(d)
// (stochastic rounding moves each of the d values by less than one step), and Δ1 =
// min(Δ2², sqrt(d)·Δ2). Partners contribute with weight 1, so the sensitivity is one
// partner's update, whatever its record count: the guarantee is per partner (a partner's
// whole dataset), the aggregate an unweighted mean.
//
// Noise: each client adds variance σ²/min_clients with σ = noise_multiplier·Clip/step, so a
// round that commits (at least min_clients contributors) carries a total variance of at least
// σ², a Gaussian-equivalent noise multiplier of noise_multiplier. Each committed round with
// k contributors is accounted as SkellamRDP(Δ1, Δ2, k·σ²/min_clients) (Agarwal et al. 2021,
// Theorem 3.5), composed over rounds by a dp.Accountant, and converted to epsilon at delta.
type DPConfig struct {
	NoiseMultiplier float64 `json:"noise_multiplier"`
	Clip            float64 `json:"clip"`                  // L2 norm bound of one partner's update
	Delta           float64 `json:"delta,omitempty"`       // 0 means 1e-5
	MaxEpsilon      float64 `json:"max_epsilon,omitempty"` // 0: no limit; a round beyond it is aborted
}

// DefaultDelta is the delta of task.dp unless set.
const DefaultDelta = 1e-5

func (c *DPConfig) delta() float64 {
	if c.Delta == 0 {
		return DefaultDelta
	}
	return c.Delta
}

func (c *DPConfig) validate() error {
	switch {
	case !(c.NoiseMultiplier > 0) || math.IsInf(c.NoiseMultiplier, 0):
		return fmt.Errorf("dp.noise_multiplier: %v, want a positive number", c.NoiseMultiplier)
	case !(c.Clip > 0) || math.IsInf(c.Clip, 0):
		return fmt.Errorf("dp.clip: %v, want a positive number", c.Clip)
	case !(c.delta() > 0 && c.delta() < 1):
		return fmt.Errorf("dp.delta: %v, want between 0 and 1", c.Delta)
	case !(c.MaxEpsilon >= 0) || math.IsInf(c.MaxEpsilon, 0):
		return fmt.Errorf("dp.max_epsilon: %v, want 0 (none) or a positive number", c.MaxEpsilon)
	}
	return nil
}

// secaggConfig is the task's secagg.Config with DP applied: quant clip defaulting to dp.clip,
// and the per-client noise variance.
func (t *TaskConfig) secaggConfig() (secagg.Config, error) {
	cfg := t.SecAgg
	if t.DP == nil {
		return cfg, nil
	}
	if err := t.DP.validate(); err != nil {
		return cfg, err
	}
	if cfg.Quant.Clip == 0 {
		cfg.Quant.Clip = t.DP.Clip
	}
	scale, err := dpScale(cfg.Quant, t.DP.Clip)
	if err != nil {
		return cfg, err
	}
	sigma := t.DP.NoiseMultiplier * scale
	cfg.Noise = sigma * sigma / float64(max(t.MinClients, 1))
	return cfg, nil
}

// dpScale is Clip in quantization steps.
func dpScale(q quant.Config, clip float64) (float64, error) {
	if err := q.Validate(); err != nil {
		return 0, fmt.Errorf("secagg.quant: %w", err)
	}
	bits, qclip := q.Bits, q.Clip
	if bits == 0 {
		bits = quant.DefaultBits
	}
	if qclip == 0 {
		qclip = quant.DefaultClip
	}
	return clip / (qclip / float64(uint64(1)<<(bits-1)-1)), nil
}

// dpState is a server's accounting of a task's privacy loss.
type dpState struct {
	cfg    *DPConfig
	acc    *dp.Accountant
	task   string
	l1, l2 float64 // sensitivity in quantization steps
	noise  float64 // per-client variance
	min    int
}

func newDPState(t *TaskConfig, numValues int) (*dpState, error) {
	if t.DP == nil {
		return nil, nil
	}
	cfg, err := t.secaggConfig()
	if err != nil {
		return nil, err
	}
	acc, err := dp.NewAccountant(nil, t.DP.delta())
	if err != nil {
		return nil, err
	}
	scale, _ := dpScale(cfg.Quant, t.DP.Clip)
	sd := math.Sqrt(float64(numValues))
	l2 := scale + sd
	return &dpState{cfg: t.DP, acc: acc, task: t.Name, l1: math.Min(l2*l2, sd*l2), l2: l2, noise: cfg.Noise, min: max(t.MinClients, 1)}, nil
}

// rdp is the RDP curve of a round with k contributors.
func (d *dpState) rdp(k int) []float64 {
	r, err := dp.SkellamRDP(d.l1, d.l2, float64(max(k, 1))*d.noise, d.acc.Orders())
	if err != nil {
		panic(err) // validated: positive noise and sensitivity
	}
	return r
}

// announce is the cumulative epsilon a round will have spent if it commits with the fewest
// contributors that can commit it (more contributors mean more noise, less epsilon).
func (d *dpState) announce() float64 { return d.acc.Would(d.task, d.rdp(d.min)) }

// check returns the epsilon a round of k contributors would bring the task to, and an error
// (matching dp.ErrBudget) if that is beyond max_epsilon.
func (d *dpState) check(k int) (float64, error) {
	e := d.acc.Would(d.task, d.rdp(k))
	if d.cfg.MaxEpsilon > 0 && e > d.cfg.MaxEpsilon {
		return e, fmt.Errorf("%w: committing the round would bring epsilon to %.4g at delta %g, over the task's max_epsilon %g", dp.ErrBudget, e, d.acc.Delta(), d.cfg.MaxEpsilon)
	}
	return e, nil
}

// charge counts a committed round of k contributors.
func (d *dpState) charge(k int) float64 {
	e, _ := d.acc.Charge(d.task, d.rdp(k), 0)
	return e
}

// replay charges every committed round of a history, so that a restarted server counts the
// privacy loss of what it released before, rounds later rolled back by an erasure included
// (their aggregates were released all the same).
func (d *dpState) replay(hist []RoundRecord) {
	for _, r := range hist {
		if r.Committed {
			d.charge(len(r.Participants))
		}
	}
}

// spent is the epsilon of the committed rounds.
func (d *dpState) spent() float64 { return d.acc.Epsilon(d.task) }

// withDP adds to a round's secagg settings what clients need: the clip to apply and the
// cumulative epsilon and delta announced for the round (client.RoundDP).
func withDP(settings []byte, clip, eps, delta float64) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(settings, &m); err != nil {
		return nil, errors.New("dp: secagg settings are not a JSON object")
	}
	m["dp_clip"], m["dp_epsilon"], m["dp_delta"] = clip, eps, delta
	return json.Marshal(m)
}
