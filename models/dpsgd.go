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
// With SampleRate > 0 the batches are Poisson samples, the sampling that the RDP accountant of
// Mironov et al. 2019 (package crypto/dp, SampledGaussianRDP) assumes: every step takes each
// labelled record independently with probability SampleRate, an epoch is ceil(1/SampleRate)
// steps, and the noisy sum is divided by the expected batch size SampleRate·n (n labelled
// records), not by the actual one: the analysis bounds what one record changes in the noisy
// sum, and the actual size is itself data-dependent, so dividing by it is not covered. An empty
// sample is still a step, on pure noise. The privacy cost of training is then exactly
// SampledGaussianRDP(SampleRate, NoiseMultiplier, Steps(epochs), ...).
//
// With SampleRate == 0 training shuffles and takes consecutive batches of BatchSize, dividing
// by the actual batch size; accounting it with q = BatchSize/examples is the common
// approximation that Opacus and TF-Privacy tutorials make too, not a guarantee.
//
// DP-SGD protects the gradients, not statistics computed from the data beside them: in DP mode
// TrainWith never fits the tabular normaliser exactly. A model with a tabular encoder whose
// normaliser is unset always fits it with FitNormalizerDP (noise multiplier NormalizerNoise),
// whatever the data holds, and says so in TrainStats.NormalizerReleased, so that the caller can
// charge that release too.
//
// Two more rules keep DP mode's behaviour within these mechanisms: an example whose loss or
// gradient is not finite contributes zero to the sum (see dpGradients) instead of failing the
// call, and modality dropout (TrainConfig.ModalityDropout) draws from Noise, not from
// TrainConfig.Seed.
type DPSGD struct {
	Clip            float64 // per-example L2 norm bound; must be positive
	NoiseMultiplier float64 // noise standard deviation over Clip; 0 clips without noise
	// SampleRate, in [0, 1], is the Poisson sampling probability of a record per step; 0 takes
	// shuffled batches of TrainConfig.BatchSize instead (BatchSize is ignored otherwise).
	SampleRate float64
	// NormalizerNoise is the noise multiplier of the tabular normaliser's release (see
	// FitNormalizerDP); 0 means DefaultNormalizerNoise.
	NormalizerNoise float64
	// Noise draws the Gaussian noise, the Poisson samples and the modality dropout masks; nil
	// means a ChaCha8 generator seeded from crypto/rand. All must be secret from whoever sees the
	// trained model: sampling from TrainConfig.Seed, often a default or public value, would
	// reveal which records each step used and void the amplification by sampling that the
	// accounting counts on, and dropout drawn from it would let one added record shift every
	// later record's masks predictably.
	Noise *rand.Rand
}

// DefaultNormalizerNoise is the noise multiplier of the tabular normaliser's release when
// DPSGD.NormalizerNoise is 0: one Gaussian mechanism of RDP alpha/(2·4²) = alpha/32, small next
// to the many steps of DP-SGD, and still accurate for a few thousand records or more.
const DefaultNormalizerNoise = 4

// maxStepsPerEpoch bounds ceil(1/SampleRate): a smaller rate is almost surely a mistake, and
// the step count must fit an int.
const maxStepsPerEpoch = 1 << 31

// Steps returns the number of optimizer steps that training for epochs epochs takes with
// Poisson sampling, epochs·ceil(1/SampleRate) (epochs <= 0 counts as 1, as in TrainConfig). It
// is the steps argument the caller passes to crypto/dp.SampledGaussianRDP(SampleRate,
// NoiseMultiplier, steps, orders). It returns 0 when SampleRate is not in (0, 1]: the shuffled
// batches then take ceil(examples/BatchSize) steps an epoch.
func (p *DPSGD) Steps(epochs int) int {
	if !(p.SampleRate > 0 && p.SampleRate <= 1) || 1/p.SampleRate > maxStepsPerEpoch {
		return 0
	}
	return max(epochs, 1) * p.stepsPerEpoch()
}

func (p *DPSGD) stepsPerEpoch() int { return int(math.Ceil(1 / p.SampleRate)) }

// validate checks p and fills in its defaults; TrainWith calls it on a copy.
func (p *DPSGD) validate() error {
	if !(p.Clip > 0) || math.IsInf(p.Clip, 0) {
		return fmt.Errorf("models: DP-SGD clip %v, want a positive finite number", p.Clip)
	}
	if !(p.NoiseMultiplier >= 0) || math.IsInf(p.NoiseMultiplier, 0) {
		return fmt.Errorf("models: DP-SGD noise multiplier %v", p.NoiseMultiplier)
	}
	if !(p.SampleRate >= 0 && p.SampleRate <= 1) {
		return fmt.Errorf("models: DP-SGD sample rate %v, want a number in [0, 1]", p.SampleRate)
	}
	if p.SampleRate > 0 && 1/p.SampleRate > maxStepsPerEpoch {
		return fmt.Errorf("models: DP-SGD sample rate %v makes an epoch of more than 2^31 steps", p.SampleRate)
	}
	if !(p.NormalizerNoise >= 0) || math.IsInf(p.NormalizerNoise, 0) {
		return fmt.Errorf("models: DP-SGD normalizer noise %v, want a finite number >= 0", p.NormalizerNoise)
	}
	if p.NormalizerNoise == 0 {
		p.NormalizerNoise = DefaultNormalizerNoise
	}
	if p.Noise == nil {
		p.Noise = secretRand()
	}
	return nil
}

// secretRand returns a ChaCha8 generator seeded from crypto/rand.
func secretRand() *rand.Rand {
	var seed [32]byte
	crand.Read(seed[:])
	return rand.New(rand.NewChaCha8(seed))
}

// poissonSample appends to dst the records of idx that one step of Poisson sampling takes: each
// independently with probability q, in the order of idx, one draw of rng per record.
func poissonSample(dst, idx []int, q float64, rng *rand.Rand) []int {
	for _, r := range idx {
		if rng.Float64() < q {
			dst = append(dst, r)
		}
	}
	return dst
}

// dpGradients sets grads to the DP-SGD gradient of rows: per-example gradients from the
// batch-1 graph n1, each clipped, summed, noised and divided by div (the batch size, or the
// expected one under Poisson sampling). rows may be empty: the gradient is then the noise over
// div.
//
// An example whose loss or gradient norm is not finite (a NaN or infinite input, an overflow)
// contributes nothing to the sum: clipping cannot bound it (NaN > Clip is false, and Clip/Inf
// times Inf is NaN), and a zero contribution is within the Clip bound that the accounting
// assumes. It still counts as sampled: div, fixed before the data is read, is unchanged.
//
// It returns the mean loss of the rows whose contribution was summed, 0 for none.
func (m *Model) dpGradients(n1 *net, d *Encoded, rows []batchRow, sc *scratch, p *DPSGD, div float64, grads, one []float32) (float64, error) {
	clear(grads)
	var loss float64
	finite := 0
	for _, r := range rows {
		n1.fill(d, []batchRow{r}, m.Spec.Classes, sc)
		if err := n1.run(); err != nil {
			return 0, err
		}
		l := scalar(n1.loss)
		// Read the gradient even when it is discarded: reading it resets the graph's gradients.
		if err := n1.gradients(one); err != nil {
			return 0, err
		}
		var s float64
		for _, g := range one {
			s += float64(g) * float64(g)
		}
		norm := math.Sqrt(s)
		if math.IsNaN(l) || math.IsInf(l, 0) || math.IsNaN(norm) || math.IsInf(norm, 0) {
			continue
		}
		loss += l
		finite++
		scale := float32(1)
		if norm > p.Clip {
			scale = float32(p.Clip / norm)
		}
		for i, g := range one {
			grads[i] += scale * g
		}
	}
	sd := p.NoiseMultiplier * p.Clip
	inv := float32(1 / div)
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
	if finite == 0 {
		return 0, nil
	}
	return loss / float64(finite), nil
}
