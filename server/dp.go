package server

import (
	"encoding/json"
	"errors"
	"fmt"
	"math"

	"github.com/fedweave/fedweave/crypto/dp"
	"github.com/fedweave/fedweave/crypto/quant"
	"github.com/fedweave/fedweave/crypto/secagg"
	"github.com/fedweave/fedweave/models"
)

// DPConfig is a task's differential privacy (task.dp). Two mechanisms, either or both, each
// with its own unit of privacy:
//
//   - record: DP-SGD inside every client (RecordDP). The guarantee protects one record (one
//     data subject's row) of any partner, and holds for everything the client sends, whatever
//     the protection: it is the figure a hospital's patients care about.
//   - partner: distributed noise under secure aggregation (PartnerDP, secure: secagg only).
//     The guarantee protects a partner's whole contribution, all of its records at once; with
//     a handful of partners it needs noise that costs accuracy.
//
// Both are accounted with Rényi DP (package crypto/dp), composed over the task's committed
// rounds and converted to epsilon at Delta. A round is only started if committing it keeps
// every unit's epsilon within MaxEpsilon; when the next round would not, Run stops with an
// error matching dp.ErrBudget and the last committed model stays the release.
//
// The accounting on the server is of the released models: committed rounds, each charged in
// full to every unit. A partner that skipped rounds spent less; its own ledger
// (client.Ledger) counts what it sent, across tasks, and its sharing policy can stop it.
type DPConfig struct {
	Delta      float64    `json:"delta,omitempty"`       // 0 means 1e-5
	MaxEpsilon float64    `json:"max_epsilon,omitempty"` // per unit; 0: no limit
	Record     *RecordDP  `json:"record,omitempty"`
	Partner    *PartnerDP `json:"partner,omitempty"`
}

// RecordDP is DP-SGD in every client with Poisson sampling (models.DPSGD): each record's
// gradient clipped to Clip, Gaussian noise of NoiseMultiplier·Clip on each step's sum, each
// record in a step with probability SampleRate, local_epochs·ceil(1/SampleRate) steps a
// round. A round is SampledGaussianRDP(SampleRate, NoiseMultiplier, steps); the first round
// from a model without tabular statistics adds one Gaussian mechanism of NormalizerNoise
// (every client fits them with noise, models.FitNormalizerDP).
//
// Each client's update is a function of its DP-SGD run, so the guarantee holds for what the
// server sees under any protection; secure aggregation only hides more. The record counts a
// client declares when it joins, which weight its update in the mean, are treated as public,
// as DP-SGD's accounting does (the sampling rate is a share of them): adding or removing one
// record is covered in the steps, not in the count.
type RecordDP struct {
	NoiseMultiplier float64 `json:"noise_multiplier"`
	Clip            float64 `json:"clip"`
	SampleRate      float64 `json:"sample_rate"`
	NormalizerNoise float64 `json:"normalizer_noise,omitempty"` // 0: models.DefaultNormalizerNoise
}

// PartnerDP is distributed differential privacy for secure: secagg, after Kairouz et al. 2021
// (distributed discrete Gaussian) with the Skellam noise of Agarwal et al. 2021: each client
// clips its update to an L2 norm of Clip, quantizes it (secagg.quant, whose clip defaults to
// Clip) and adds Skellam noise to the integer vector before masking, so that the sum the
// server unmasks carries the whole cohort's noise.
//
// Sensitivity, in quantization steps (dp.QuantizedSensitivity): Δ2 = Clip/step + sqrt(d),
// Δ1 = min(Δ2², sqrt(d)·Δ2). Partners contribute with weight 1, so the sensitivity is one
// partner's update whatever its record count; the aggregate is an unweighted mean.
//
// Noise: each client adds variance σ²/(min_clients-1) with σ = NoiseMultiplier·Clip/step, so
// in a round that commits (at least min_clients contributors) the others' noise around any one
// partner has a variance of at least σ²: a partner's own noise is not counted, since removing
// the partner removes its noise too. A committed round with k contributors is
// SkellamRDP(Δ1, Δ2, (k-1)·σ²/(min_clients-1)) (Agarwal et al. 2021, Theorem 3.5); min_clients
// must be at least 2.
type PartnerDP struct {
	NoiseMultiplier float64 `json:"noise_multiplier"`
	Clip            float64 `json:"clip"` // L2 norm bound of one partner's update
}

// DefaultDelta is the delta of task.dp unless set.
const DefaultDelta = dp.DefaultDelta

func (c *DPConfig) delta() float64 {
	if c.Delta == 0 {
		return DefaultDelta
	}
	return c.Delta
}

func positive(x float64) bool { return x > 0 && !math.IsInf(x, 0) }

func (c *DPConfig) validate() error {
	switch {
	case c.Record == nil && c.Partner == nil:
		return errors.New("dp: set record (DP-SGD in every client), partner (distributed noise) or both")
	case !(c.delta() > 0 && c.delta() < 1):
		return fmt.Errorf("dp.delta: %v, want between 0 and 1", c.Delta)
	case !(c.MaxEpsilon >= 0) || math.IsInf(c.MaxEpsilon, 0):
		return fmt.Errorf("dp.max_epsilon: %v, want 0 (none) or a positive number", c.MaxEpsilon)
	}
	if r := c.Record; r != nil {
		switch {
		case !positive(r.NoiseMultiplier):
			return fmt.Errorf("dp.record.noise_multiplier: %v, want a positive number", r.NoiseMultiplier)
		case !positive(r.Clip):
			return fmt.Errorf("dp.record.clip: %v, want a positive number", r.Clip)
		case !(r.SampleRate > 0 && r.SampleRate <= 1):
			return fmt.Errorf("dp.record.sample_rate: %v, want above 0 and at most 1 (the share of a partner's records in each step)", r.SampleRate)
		case !(r.NormalizerNoise >= 0) || math.IsInf(r.NormalizerNoise, 0):
			return fmt.Errorf("dp.record.normalizer_noise: %v, want 0 (the default) or a positive number", r.NormalizerNoise)
		}
	}
	if p := c.Partner; p != nil {
		switch {
		case !positive(p.NoiseMultiplier):
			return fmt.Errorf("dp.partner.noise_multiplier: %v, want a positive number", p.NoiseMultiplier)
		case !positive(p.Clip):
			return fmt.Errorf("dp.partner.clip: %v, want a positive number", p.Clip)
		}
	}
	return nil
}

// validateFor checks task.dp against the rest of the task.
func (c *DPConfig) validateFor(t *TaskConfig) error {
	if err := c.validate(); err != nil {
		return err
	}
	if c.Partner != nil && t.MinClients < 2 {
		return fmt.Errorf("dp.partner: distributed noise needs min_clients of at least 2 (the others' noise protects each partner), the task has %d", t.MinClients)
	}
	return nil
}

func (r *RecordDP) normalizerNoise() float64 {
	if r.NormalizerNoise == 0 {
		return models.DefaultNormalizerNoise
	}
	return r.NormalizerNoise
}

// secaggConfig is the task's secagg.Config with partner DP applied: quant clip defaulting to
// dp.partner.clip, and the per-client noise variance.
func (t *TaskConfig) secaggConfig() (secagg.Config, error) {
	cfg := t.SecAgg
	if t.DP == nil {
		return cfg, nil
	}
	if err := t.DP.validateFor(t); err != nil {
		return cfg, err
	}
	p := t.DP.Partner
	if p == nil {
		return cfg, nil
	}
	if cfg.Quant.Clip == 0 {
		cfg.Quant.Clip = p.Clip
	}
	scale, err := dpScale(cfg.Quant, p.Clip)
	if err != nil {
		return cfg, err
	}
	sigma := p.NoiseMultiplier * scale
	cfg.Noise = sigma * sigma / float64(t.MinClients-1)
	return cfg, nil
}

// dpScale is Clip in quantization steps.
func dpScale(q quant.Config, clip float64) (float64, error) {
	step, err := q.Step()
	if err != nil {
		return 0, fmt.Errorf("secagg.quant: %w", err)
	}
	return clip / step, nil
}

// RoundDP is what a round spent, recorded with it so that a restarted server replays exactly
// what was charged, whatever the config says now.
type RoundDP struct {
	RecordEpsilon  float64        `json:"record_epsilon,omitempty"`  // the task's cumulative epsilon per record
	PartnerEpsilon float64        `json:"partner_epsilon,omitempty"` // the task's cumulative epsilon per partner
	Record         *RecordCharge  `json:"record_charge,omitempty"`
	Partner        *PartnerCharge `json:"partner_charge,omitempty"`
}

// RecordCharge is one round of DP-SGD: SampledGaussianRDP(SampleRate, NoiseMultiplier,
// Steps), plus a Gaussian mechanism of NormalizerNoise when it is not 0.
type RecordCharge struct {
	SampleRate      float64 `json:"sample_rate"`
	NoiseMultiplier float64 `json:"noise_multiplier"`
	Steps           int     `json:"steps"`
	NormalizerNoise float64 `json:"normalizer_noise,omitempty"`
}

// PartnerCharge is one round of distributed Skellam noise: SkellamRDP(L1, L2, Variance).
type PartnerCharge struct {
	L1       float64 `json:"l1"`
	L2       float64 `json:"l2"`
	Variance float64 `json:"variance"`
}

func (c *RecordCharge) rdp(orders []float64) ([]float64, error) {
	return dp.DPSGDRDP(c.SampleRate, c.NoiseMultiplier, c.Steps, c.NormalizerNoise, orders)
}

func (c *PartnerCharge) rdp(orders []float64) ([]float64, error) {
	return dp.SkellamRDP(c.L1, c.L2, c.Variance, orders)
}

// Units of the accountant.
const (
	unitRecord  = "record"
	unitPartner = "partner"
)

// dpState is a server's accounting of a task's privacy loss.
type dpState struct {
	cfg    *DPConfig
	acc    *dp.Accountant
	epochs int
	l1, l2 float64 // partner sensitivity in quantization steps
	noise  float64 // per-client variance (partner)
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
	d := &dpState{cfg: t.DP, acc: acc, epochs: max(t.LocalEpochs, 1), noise: cfg.Noise, min: max(t.MinClients, 1)}
	if p := t.DP.Partner; p != nil {
		scale, _ := dpScale(cfg.Quant, p.Clip)
		d.l1, d.l2 = dp.QuantizedSensitivity(scale, numValues)
	}
	return d, nil
}

// charges returns what a round of k contributors spends; normalizer says whether the round
// starts from a model without tabular statistics (clients then fit them, with noise).
func (d *dpState) charges(k int, normalizer bool) *RoundDP {
	out := &RoundDP{}
	if r := d.cfg.Record; r != nil {
		out.Record = &RecordCharge{SampleRate: r.SampleRate, NoiseMultiplier: r.NoiseMultiplier,
			Steps: (&models.DPSGD{SampleRate: r.SampleRate}).Steps(d.epochs)}
		if normalizer {
			out.Record.NormalizerNoise = r.normalizerNoise()
		}
	}
	if d.cfg.Partner != nil {
		out.Partner = &PartnerCharge{L1: d.l1, L2: d.l2, Variance: float64(max(k-1, 1)) * d.noise}
	}
	return out
}

// would returns the cumulative epsilons per unit if c were charged, and an error matching
// dp.ErrBudget if one is beyond max_epsilon.
func (d *dpState) would(c *RoundDP) (RoundDP, error) {
	var out RoundDP
	var over []string
	check := func(unit string, rdp []float64, eps *float64) {
		*eps = d.acc.Would(unit, rdp)
		if d.cfg.MaxEpsilon > 0 && *eps > d.cfg.MaxEpsilon {
			over = append(over, fmt.Sprintf("%s epsilon to %.4g", unit, *eps))
		}
	}
	if c.Record != nil {
		r, err := c.Record.rdp(d.acc.Orders())
		if err != nil {
			return out, err
		}
		check(unitRecord, r, &out.RecordEpsilon)
	}
	if c.Partner != nil {
		r, err := c.Partner.rdp(d.acc.Orders())
		if err != nil {
			return out, err
		}
		check(unitPartner, r, &out.PartnerEpsilon)
	}
	if over != nil {
		return out, fmt.Errorf("%w: another round would bring %v at delta %g, over the task's max_epsilon %g", dp.ErrBudget, over, d.acc.Delta(), d.cfg.MaxEpsilon)
	}
	return out, nil
}

// charge counts a committed round and fills in the cumulative epsilons.
func (d *dpState) charge(c *RoundDP) error {
	if c.Record != nil {
		r, err := c.Record.rdp(d.acc.Orders())
		if err != nil {
			return err
		}
		if c.RecordEpsilon, err = d.acc.Charge(unitRecord, r, 0); err != nil {
			return err
		}
	}
	if c.Partner != nil {
		r, err := c.Partner.rdp(d.acc.Orders())
		if err != nil {
			return err
		}
		if c.PartnerEpsilon, err = d.acc.Charge(unitPartner, r, 0); err != nil {
			return err
		}
	}
	return nil
}

// replay charges every committed round of a history, so that a restarted server counts the
// privacy loss of what it released before, rounds later rolled back by an erasure included
// (their aggregates were released all the same).
func (d *dpState) replay(hist []RoundRecord) error {
	for _, r := range hist {
		if r.Committed && r.DP != nil {
			c := *r.DP
			if err := d.charge(&c); err != nil {
				return fmt.Errorf("round %d: %w", r.Round, err)
			}
		}
	}
	return nil
}

// headline returns the epsilon RoundRecord.Epsilon reports: per record when DP-SGD is on,
// else per partner.
func (d *dpState) headline(c *RoundDP) float64 {
	if d.cfg.Record != nil {
		return c.RecordEpsilon
	}
	return c.PartnerEpsilon
}

// spent returns the cumulative epsilons so far.
func (d *dpState) spent() RoundDP {
	return RoundDP{RecordEpsilon: d.acc.Epsilon(unitRecord), PartnerEpsilon: d.acc.Epsilon(unitPartner)}
}

// withDP adds to a round's secagg settings the L2 bound clients clip their update to for
// partner DP (client.RoundDP). Epsilon is not announced: each client computes its own.
func withDP(settings []byte, clip float64) ([]byte, error) {
	var m map[string]any
	if err := json.Unmarshal(settings, &m); err != nil {
		return nil, errors.New("dp: secagg settings are not a JSON object")
	}
	m["dp_clip"] = clip
	return json.Marshal(m)
}
