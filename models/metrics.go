package models

import (
	"math"

	"github.com/fedweave/fedweave/dataset"
)

// Metrics are classification metrics over the labelled records of a data set.
type Metrics struct {
	N        int     `json:"n"`
	Accuracy float64 `json:"accuracy"`
	MacroF1  float64 `json:"macro_f1"`
	Loss     float64 `json:"loss"` // mean cross-entropy, natural log
}

// Score computes metrics of predictions against labels; records with label -1 are skipped.
// Macro-F1 averages the F1 of every class that occurs in the labels or the predictions.
func Score(preds []Prediction, labels []int, classes int) Metrics {
	tp, fp, fn := make([]int, classes), make([]int, classes), make([]int, classes)
	var m Metrics
	correct := 0
	for i, p := range preds {
		y := labels[i]
		if y < 0 || y >= classes {
			continue
		}
		m.N++
		py := float64(p.Probabilities[y])
		if !(py > 1e-12) { // also NaN: a model whose output is not finite scores as certain and wrong
			py = 1e-12
		}
		m.Loss -= math.Log(py)
		if p.Label == y {
			correct++
			tp[y]++
		} else {
			fp[p.Label]++
			fn[y]++
		}
	}
	if m.N == 0 {
		return m
	}
	m.Accuracy = float64(correct) / float64(m.N)
	m.Loss /= float64(m.N)
	seen := 0
	for k := range classes {
		if tp[k]+fp[k]+fn[k] == 0 {
			continue
		}
		seen++
		m.MacroF1 += 2 * float64(tp[k]) / float64(2*tp[k]+fp[k]+fn[k])
	}
	m.MacroF1 /= float64(seen)
	return m
}

// Evaluate predicts every record of d and scores the predictions.
func (m *Model) Evaluate(d *Encoded, opt PredictOptions) (Metrics, error) {
	preds, err := m.Predict(d, opt)
	if err != nil {
		return Metrics{}, err
	}
	return Score(preds, d.labels, m.Spec.Classes), nil
}

// Ablation returns, for each modality of the model, the accuracy on the records of d that carry
// it when the model sees that modality alone.
func (m *Model) Ablation(d *Encoded) (map[string]float64, error) {
	out := map[string]float64{}
	for _, mod := range m.Spec.Modalities() {
		var only [dataset.NumModalities]bool
		only[mod] = true
		var idx []int
		for i := range d.n {
			if d.present[i][mod] {
				idx = append(idx, i)
			}
		}
		if len(idx) == 0 {
			continue
		}
		sub := d.subset(idx)
		met, err := m.Evaluate(sub, PredictOptions{Only: &only})
		if err != nil {
			return nil, err
		}
		out[mod.String()] = met.Accuracy
	}
	return out, nil
}
