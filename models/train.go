package models

import (
	"context"
	"fmt"
	"math"
	"math/rand/v2"
	"time"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
)

// TrainConfig configures local training. The zero value of each field picks the default noted.
type TrainConfig struct {
	Epochs          int     // passes over the data; default 1
	BatchSize       int     // default 64; ignored by DP-SGD with Poisson sampling (DPSGD.SampleRate)
	Optimizer       string  // "adam" (default) or "sgd"
	LR              float64 // default 0.003 for adam, 0.05 for sgd
	Momentum        float64 // sgd only
	Seed            uint64  // shuffling, and modality dropout without DP (DPSGD.Noise draws it with DP)
	ModalityDropout float64 // probability of hiding each present modality of a sample (one is always kept); default 0, negative means 0

	// Prox > 0 adds the FedProx term Prox/2 * ||w - Anchor||^2 over the trainable parameters to
	// the loss. Anchor must then be a parameter vector of the model's layout (the round's global
	// model).
	Prox   float64
	Anchor []float32

	// DP, if set, makes training DP-SGD (see DPSGD); per-example gradients make it slow.
	DP *DPSGD

	// OnStep, if set, is called after every optimizer step with the steps done and the total.
	OnStep func(done, total int)
}

// TrainStats summarises a call to Train.
type TrainStats struct {
	Steps         int // optimizer steps; DPSGD.Steps(Epochs) with Poisson sampling
	Samples       int // samples processed, counting each epoch
	Loss          float64
	Seconds       float64
	SamplesPerSec float64

	// NormalizerReleased is true when this call fitted the tabular normaliser with
	// FitNormalizerDP (DP mode, tabular encoder, normaliser unset; whatever the data holds,
	// records with tabular fields or none): one Gaussian mechanism of noise multiplier
	// DPSGD.NormalizerNoise (DefaultNormalizerNoise if 0), RDP alpha/(2·sigma²), that the caller
	// must charge to its privacy ledger besides the DP-SGD steps. It is set also when the call
	// then fails or is cancelled: the release happened.
	NormalizerReleased bool
}

// Optimizer updates a flat parameter vector in place from its gradient. Buffers (segments that
// are not trainable) receive a zero gradient and are left unchanged by both implementations.
type Optimizer interface {
	Step(params, grads []float32)
}

// Adam is Kingma and Ba's optimizer with bias correction.
type Adam struct {
	LR, Beta1, Beta2, Eps float64
	m, v                  []float32
	t                     int
}

// NewAdam returns Adam with the usual betas (0.9, 0.999) and epsilon 1e-8.
func NewAdam(lr float64) *Adam { return &Adam{LR: lr, Beta1: 0.9, Beta2: 0.999, Eps: 1e-8} }

func (a *Adam) Step(p, g []float32) {
	if a.m == nil {
		a.m, a.v = make([]float32, len(p)), make([]float32, len(p))
	}
	a.t++
	b1, b2 := float32(a.Beta1), float32(a.Beta2)
	c1 := 1 - math.Pow(a.Beta1, float64(a.t))
	c2 := 1 - math.Pow(a.Beta2, float64(a.t))
	step := float32(a.LR * math.Sqrt(c2) / c1)
	eps := float32(a.Eps * math.Sqrt(c2))
	for i, gi := range g {
		if gi == 0 && a.m[i] == 0 {
			continue
		}
		a.m[i] = b1*a.m[i] + (1-b1)*gi
		a.v[i] = b2*a.v[i] + (1-b2)*gi*gi
		p[i] -= step * a.m[i] / (float32(math.Sqrt(float64(a.v[i]))) + eps)
	}
}

// SGD is stochastic gradient descent with optional momentum.
type SGD struct {
	LR, Momentum float64
	vel          []float32
}

func (s *SGD) Step(p, g []float32) {
	if s.Momentum == 0 {
		lr := float32(s.LR)
		for i, gi := range g {
			p[i] -= lr * gi
		}
		return
	}
	if s.vel == nil {
		s.vel = make([]float32, len(p))
	}
	mu, lr := float32(s.Momentum), float32(s.LR)
	for i, gi := range g {
		s.vel[i] = mu*s.vel[i] + gi
		p[i] -= lr * s.vel[i]
	}
}

// optimizer builds the configured optimizer.
func (c *TrainConfig) optimizer() (Optimizer, error) {
	switch c.Optimizer {
	case "", "adam":
		lr := c.LR
		if lr == 0 {
			lr = 0.003
		}
		return NewAdam(lr), nil
	case "sgd":
		lr := c.LR
		if lr == 0 {
			lr = 0.05
		}
		return &SGD{LR: lr, Momentum: c.Momentum}, nil
	}
	return nil, fmt.Errorf("models: unknown optimizer %q (want adam or sgd)", c.Optimizer)
}

// Train runs mini-batch training on d for cfg.Epochs epochs. Records whose label is unknown are
// skipped. The parameter vector is updated in place; ctx cancels between steps.
func (m *Model) Train(ctx context.Context, d *Encoded, cfg TrainConfig) (TrainStats, error) {
	opt, err := cfg.optimizer()
	if err != nil {
		return TrainStats{}, err
	}
	return m.TrainWith(ctx, d, cfg, opt)
}

// TrainWith is Train with a caller-owned optimizer, so that its state (Adam's moments) can span
// several calls.
//
// A model whose tabular statistics were never set (see FitNormalizer) fits them on d first: raw
// tabular values can be in the tens of thousands and would wreck the first steps. In a
// federation this means each client starts from its own statistics in the first round, and the
// averaged statistics travel in the global parameters from then on. With cfg.DP the exact
// statistics would leak outside DP-SGD's guarantee, so they are fitted with FitNormalizerDP
// instead, with cfg.DP.Noise, and TrainStats.NormalizerReleased reports it. That release
// happens whenever the model has a tabular encoder and its normaliser is unset, even if no
// record of d has tabular fields: whether one does must not change what is released.
//
// With cfg.DP, a non-finite loss does not fail the call (see dpGradients), and modality
// dropout draws from cfg.DP.Noise instead of the generator seeded with cfg.Seed.
func (m *Model) TrainWith(ctx context.Context, d *Encoded, cfg TrainConfig, opt Optimizer) (TrainStats, error) {
	if cfg.Epochs <= 0 {
		cfg.Epochs = 1
	}
	if cfg.BatchSize <= 0 {
		cfg.BatchSize = 64
	}
	if cfg.Prox > 0 && len(cfg.Anchor) != len(m.params) {
		return TrainStats{}, fmt.Errorf("models: prox anchor has %d values, layout wants %d", len(cfg.Anchor), len(m.params))
	}
	var idx []int
	for i, l := range d.labels {
		if l >= 0 {
			idx = append(idx, i)
		}
	}
	if len(idx) == 0 {
		return TrainStats{}, fmt.Errorf("models: no labelled records to train on")
	}
	var st TrainStats
	var n, n1 *net
	var one []float32
	var err error
	poisson := false
	if cfg.DP == nil {
		if n, err = m.trainNet(cfg.BatchSize); err != nil {
			return TrainStats{}, err
		}
		if m.normalizerUnset() {
			m.FitNormalizer(d)
		}
	} else {
		dp := *cfg.DP
		if err := dp.validate(); err != nil {
			return TrainStats{}, err
		}
		cfg.DP = &dp
		poisson = dp.SampleRate > 0
		if n1, err = m.trainNet(1); err != nil {
			return TrainStats{}, err
		}
		one = make([]float32, len(m.params))
		// Decided on public information only (the model, not d): whether d has tabular records
		// must not change what is released.
		if m.Spec.Tabular != nil && m.normalizerUnset() {
			if err := m.FitNormalizerDP(d, dp.NormalizerNoise, dp.Noise); err != nil {
				return TrainStats{}, err
			}
			st.NormalizerReleased = true
		}
	}
	rng := rand.New(rand.NewPCG(cfg.Seed, 0x747261696e))
	// dropRng draws the modality dropout masks: the seeded rng without DP, the secret
	// generator with it (a public seed would make every mask predictable, and one added record
	// would shift all later ones).
	dropRng := rng
	if cfg.DP != nil {
		dropRng = cfg.DP.Noise
	}
	grads := make([]float32, len(m.params))
	rows := make([]batchRow, 0, cfg.BatchSize)
	var sc scratch
	stepsPerEpoch := (len(idx) + cfg.BatchSize - 1) / cfg.BatchSize
	// div is what DP-SGD divides the noisy sum by: the expected batch size under Poisson
	// sampling, the actual one otherwise.
	var div float64
	var sampled []int
	if poisson {
		stepsPerEpoch = cfg.DP.stepsPerEpoch()
		div = cfg.DP.SampleRate * float64(len(idx))
	}
	total := stepsPerEpoch * cfg.Epochs
	start := time.Now()
	var lossSum float64
	for epoch := 0; epoch < cfg.Epochs; epoch++ {
		if !poisson {
			rng.Shuffle(len(idx), func(i, j int) { idx[i], idx[j] = idx[j], idx[i] })
		}
		for step := 0; step < stepsPerEpoch; step++ {
			if err := ctx.Err(); err != nil {
				return st, err
			}
			var batch []int
			if poisson {
				sampled = poissonSample(sampled[:0], idx, cfg.DP.SampleRate, cfg.DP.Noise)
				batch = sampled
			} else {
				batch = idx[step*cfg.BatchSize : min((step+1)*cfg.BatchSize, len(idx))]
			}
			rows = rows[:0]
			for _, r := range batch {
				row := batchRow{rec: r, weight: 1, present: d.present[r]}
				if cfg.ModalityDropout > 0 {
					fusion.Dropout(row.present[:], cfg.ModalityDropout, dropRng)
				}
				rows = append(rows, row)
			}
			var loss float64
			if cfg.DP != nil {
				if !poisson {
					div = float64(len(rows))
				}
				if loss, err = m.dpGradients(n1, d, rows, &sc, cfg.DP, div, grads, one); err != nil {
					return st, err
				}
			} else {
				n.fill(d, rows, m.Spec.Classes, &sc)
				if err := n.run(); err != nil {
					return st, err
				}
				loss = scalar(n.loss)
				if err := n.gradients(grads); err != nil {
					return st, err
				}
			}
			// Without DP a diverging loss fails the call. With DP it must not: failing would
			// reveal one record's value outside the accounted mechanisms (and dpGradients already
			// leaves non-finite examples out of the sum and the loss).
			if cfg.DP == nil && (math.IsNaN(loss) || math.IsInf(loss, 0)) {
				return st, fmt.Errorf("models: loss became %v at step %d: lower the learning rate", loss, st.Steps)
			}
			if cfg.Prox > 0 {
				mu := float32(cfg.Prox)
				for _, seg := range m.layout.Segments {
					if !seg.Trainable {
						continue
					}
					for i := seg.Offset; i < seg.Offset+seg.Size(); i++ {
						grads[i] += mu * (m.params[i] - cfg.Anchor[i])
					}
				}
			}
			opt.Step(m.params, grads)
			lossSum += loss * float64(len(rows))
			st.Steps++
			st.Samples += len(rows)
			if cfg.OnStep != nil {
				cfg.OnStep(st.Steps, total)
			}
		}
	}
	st.Seconds = time.Since(start).Seconds()
	if st.Samples > 0 {
		st.Loss = lossSum / float64(st.Samples)
	}
	if st.Seconds > 0 {
		st.SamplesPerSec = float64(st.Samples) / st.Seconds
	}
	return st, nil
}

// gradients copies the gradient of every trainable parameter into its segment of g (a vector of
// the layout's size) and resets the graph's gradients; buffer segments of g are zeroed.
func (n *net) gradients(g []float32) error {
	clear(g)
	for i, s := range n.b.Layout().Segments {
		if !s.Trainable {
			continue
		}
		node := n.b.Params()[i]
		gv, err := node.Grad()
		if err != nil {
			return fmt.Errorf("models: gradient of %s: %w", s.Name, err)
		}
		readIntoValue(g[s.Offset:s.Offset+s.Size()], gv)
		// Gradients accumulate across runs of a tape machine until zeroed (gorgonia's own
		// solvers zero them in Step); reading one consumes it.
		if t, ok := gv.(tensor.Tensor); ok {
			t.Zero()
		}
	}
	return nil
}

func readIntoValue(dst []float32, v G.Value) {
	switch d := v.Data().(type) {
	case []float32:
		copy(dst, d)
	case []float64:
		for i := range dst {
			dst[i] = float32(d[i])
		}
	case float32:
		dst[0] = d
	case float64:
		dst[0] = float32(d)
	}
}

// Prediction is a model's output for one record.
type Prediction struct {
	Label         int
	Probabilities []float32
	Weights       []float32 // per-modality fusion weights (gated and attention heads), in Spec.Modalities order
}

// PredictOptions choose which modalities a prediction may see.
type PredictOptions struct {
	// Only, when non-nil, hides every modality it marks false, as if the records lacked it.
	Only *[dataset.NumModalities]bool
	// Visible, when non-nil, holds one mask per record: record i is predicted seeing only the
	// modalities that Visible[i] marks true (and Only allows). With it one call evaluates the
	// same record under many coalitions of its modalities, the empty one included.
	Visible [][dataset.NumModalities]bool
	// BatchSize for the evaluation graph; default 256.
	BatchSize int
}

// Predict returns a prediction for every record of d.
func (m *Model) Predict(d *Encoded, opt PredictOptions) ([]Prediction, error) {
	bs := opt.BatchSize
	if bs <= 0 {
		bs = 256
	}
	bs = min(bs, max(d.n, 1))
	if opt.Visible != nil && len(opt.Visible) != d.n {
		return nil, fmt.Errorf("models: %d visibility masks for %d records", len(opt.Visible), d.n)
	}
	n, err := m.evalNet(bs)
	if err != nil {
		return nil, err
	}
	K, M := m.Spec.Classes, len(n.mods)
	out := make([]Prediction, d.n)
	probs := make([]float32, bs*K)
	var weights []float32
	if n.weights != nil {
		weights = make([]float32, bs*M)
	}
	rows := make([]batchRow, 0, bs)
	var sc scratch
	for lo := 0; lo < d.n; lo += bs {
		rows = rows[:0]
		for i := lo; i < min(lo+bs, d.n); i++ {
			row := batchRow{rec: i, weight: 1, present: d.present[i]}
			if opt.Only != nil {
				for j := range row.present {
					row.present[j] = row.present[j] && opt.Only[j]
				}
			}
			if opt.Visible != nil {
				for j := range row.present {
					row.present[j] = row.present[j] && opt.Visible[i][j]
				}
			}
			rows = append(rows, row)
		}
		n.fill(d, rows, K, &sc)
		if err := n.run(); err != nil {
			return nil, err
		}
		readInto(probs, n.probs)
		if weights != nil {
			readInto(weights, n.weights)
		}
		for i, r := range rows {
			p := append([]float32(nil), probs[i*K:(i+1)*K]...)
			pr := Prediction{Label: argmax(p), Probabilities: p}
			if weights != nil {
				pr.Weights = append([]float32(nil), weights[i*M:(i+1)*M]...)
			}
			out[r.rec] = pr
		}
	}
	return out, nil
}

func argmax(p []float32) int {
	best := 0
	for i, v := range p {
		if v > p[best] {
			best = i
		}
	}
	return best
}
