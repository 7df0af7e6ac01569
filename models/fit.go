package models

import (
	"context"
	"time"
)

// EpochStats reports one epoch of Fit.
type EpochStats struct {
	Epoch         int     `json:"epoch"`
	TrainLoss     float64 `json:"train_loss"`
	Test          Metrics `json:"test"`
	Seconds       float64 `json:"seconds"`
	SamplesPerSec float64 `json:"samples_per_sec"`
}

// FitResult is what Fit measured.
type FitResult struct {
	Epochs        []EpochStats       `json:"epochs"`
	Final         Metrics            `json:"final"`
	Ablation      map[string]float64 `json:"ablation"`        // test accuracy with only that modality present
	Seconds       float64            `json:"seconds"`         // whole run, evaluation included
	SamplesPerSec float64            `json:"samples_per_sec"` // training samples per second of training time
}

// Fit trains on train for cfg.Epochs epochs, evaluating on test after each one (onEpoch, if set,
// sees each epoch's figures as they come), then scores the final model and its single-modality
// ablation on test. It fits the tabular normaliser on train first. One Adam state spans the run.
func (m *Model) Fit(ctx context.Context, train, test *Encoded, cfg TrainConfig, onEpoch func(EpochStats)) (FitResult, error) {
	start := time.Now()
	epochs := max(cfg.Epochs, 1)
	opt, err := cfg.optimizer()
	if err != nil {
		return FitResult{}, err
	}
	if cfg.DP == nil {
		m.FitNormalizer(train) // with DP, training fits it with noise (FitNormalizerDP)
	}
	var res FitResult
	var trainSec float64
	samples := 0
	onStep := cfg.OnStep
	for e := range epochs {
		c := cfg
		c.Epochs = 1
		c.Seed = cfg.Seed + uint64(e)*0x9e3779b97f4a7c15
		if onStep != nil {
			done := 0
			c.OnStep = func(d, total int) { onStep(done+e*total+d, total*epochs) }
		}
		st, err := m.TrainWith(ctx, train, c, opt)
		if err != nil {
			return res, err
		}
		met, err := m.Evaluate(test, PredictOptions{})
		if err != nil {
			return res, err
		}
		trainSec += st.Seconds
		samples += st.Samples
		es := EpochStats{Epoch: e + 1, TrainLoss: st.Loss, Test: met, Seconds: st.Seconds, SamplesPerSec: st.SamplesPerSec}
		res.Epochs = append(res.Epochs, es)
		if onEpoch != nil {
			onEpoch(es)
		}
	}
	res.Final = res.Epochs[len(res.Epochs)-1].Test
	if res.Ablation, err = m.Ablation(test); err != nil {
		return res, err
	}
	res.Seconds = time.Since(start).Seconds()
	if trainSec > 0 {
		res.SamplesPerSec = float64(samples) / trainSec
	}
	return res, nil
}
