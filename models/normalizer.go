package models

import "math"

// TabularNormalizer returns the mean and standard deviation with which the model standardises
// each tabular field, decoded from its enc.tabular.norm buffers, and false for a model without
// a tabular encoder. A field whose value is its mean standardises to exactly 0, the value a
// record without tabular fields feeds the encoder: explanations use it as the baseline of a
// field (package explain). The slices are new on every call.
func (m *Model) TabularNormalizer() (mean, std []float64, ok bool) {
	ms, found := m.layout.Find("enc.tabular.norm.mean")
	if !found {
		return nil, nil, false
	}
	ls, _ := m.layout.Find("enc.tabular.norm.logstd")
	mean, std = make([]float64, ms.Size()), make([]float64, ls.Size())
	for j := range mean {
		mean[j] = math.Sinh(NormScale * float64(m.params[ms.Offset+j]))
		std[j] = math.Max(math.Exp(NormScale*float64(m.params[ls.Offset+j])), 1e-6)
	}
	return mean, std, true
}

// NormalizerUnset reports whether params, a parameter vector of layout l, hold a tabular
// encoder whose statistics were never set (all zero, as a fresh model's are): whoever trains
// from them fits the statistics on its data first. False for a layout without a tabular
// encoder.
func NormalizerUnset(l *Layout, params []float32) bool {
	seen := false
	for _, name := range []string{"enc.tabular.norm.mean", "enc.tabular.norm.logstd"} {
		s, ok := l.Find(name)
		if !ok {
			return false
		}
		seen = true
		for _, v := range params[s.Offset : s.Offset+s.Size()] {
			if v != 0 {
				return false
			}
		}
	}
	return seen
}
