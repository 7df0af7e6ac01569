package models

import (
	crand "crypto/rand"
	"fmt"
	"math"
	"math/rand/v2"
)

// DPSGD makes local training differentially private per subject (per example): DP-SGD of
// Abadi et al. 2016. Each example's gradient is clipped to L2 norm Clip, the clipped gradients
// of a batch are summed, Gaussian noise of standard deviation NoiseMultiplier·Clip is added to
// every trainable coordinate and the sum is divided by the batch size.
//
// gorgonia computes batch gradients only, so the per-example gradients come from running the
// training graph with batch size 1 once per example: correct, and about a batch size times
// slower than ordinary training.
//
// The accounting (package crypto/dp, SampledGaussianRDP with q = BatchSize/examples,
// sigma = NoiseMultiplier, steps = TrainStats.Steps) assumes Poisson sampling; training
// shuffles and takes consecutive batches, the common approximation that Opacus and
// TF-Privacy tutorials make too.
type DPSGD struct {
	Clip            float64 // per-example L2 norm bound; must be positive
	NoiseMultiplier float64 // noise standard deviation over Clip; 0 clips without noise
	// Noise draws the Gaussian noise; nil means a ChaCha8 generator seeded from crypto/rand.
	Noise *rand.Rand
}

func (p *DPSGD) validate() error {
	if !(p.Clip > 0) || math.IsInf(p.Clip, 0) {
		return fmt.Errorf("models: DP-SGD clip %v, want a positive finite number", p.Clip)
	}
	if !(p.NoiseMultiplier >= 0) || math.IsInf(p.NoiseMultiplier, 0) {
		return fmt.Errorf("models: DP-SGD noise multiplier %v", p.NoiseMultiplier)
	}
	if p.Noise == nil {
		var seed [32]byte
		crand.Read(seed[:])
		p.Noise = rand.New(rand.NewChaCha8(seed))
	}
	return nil
}

// dpGradients sets grads to the DP-SGD gradient of rows: per-example gradients from the
// batch-1 graph n1, each clipped, summed, noised and divided by len(rows). It returns the
// mean loss of the rows.
func (m *Model) dpGradients(n1 *net, d *Encoded, rows []batchRow, sc *scratch, p *DPSGD, grads, one []float32) (float64, error) {
	clear(grads)
	var loss float64
	for _, r := range rows {
		n1.fill(d, []batchRow{r}, m.Spec.Classes, sc)
		if err := n1.run(); err != nil {
			return 0, err
		}
		loss += scalar(n1.loss)
		if err := n1.gradients(one); err != nil {
			return 0, err
		}
		var s float64
		for _, g := range one {
			s += float64(g) * float64(g)
		}
		scale := float32(1)
		if norm := math.Sqrt(s); norm > p.Clip {
			scale = float32(p.Clip / norm)
		}
		for i, g := range one {
			grads[i] += scale * g
		}
	}
	sd := p.NoiseMultiplier * p.Clip
	inv := float32(1 / float64(len(rows)))
	for _, seg := range m.layout.Segments {
		if !seg.Trainable {
			continue
		}
		for i := seg.Offset; i < seg.Offset+seg.Size(); i++ {
			if sd > 0 {
				grads[i] += float32(sd * p.Noise.NormFloat64())
			}
			grads[i] *= inv
		}
	}
	return loss / float64(len(rows)), nil
}
