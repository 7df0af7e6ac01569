package explain

import (
	"math"
	"strconv"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/models"
)

// Result is an explanation in the JSON form that fedweave's HTTP API and its predict and
// explain commands print: classes, modalities and tabular fields by name, numbers rounded to
// 1e-7. Maps marshal with sorted keys. A prediction (Modalities) fills everything up to
// Features, whose attributions stay empty; Explain fills the rest.
type Result struct {
	Task  string `json:"task,omitempty"`
	Round uint64 `json:"round,omitempty"`
	ID    string `json:"id,omitempty"`

	Label           string             `json:"label"`
	Probabilities   map[string]float64 `json:"probabilities"`
	ExplainedClass  string             `json:"explained_class"`
	ValueAll        float64            `json:"value_all"`
	ValueNone       float64            `json:"value_none"`
	ModalityShapley map[string]float64 `json:"modality_shapley"`
	GateWeights     map[string]float64 `json:"gate_weights,omitempty"`
	Features        []FeatureResult    `json:"features,omitempty"`

	ValueTabularBaseline *float64        `json:"value_tabular_baseline,omitempty"`
	Samples              int             `json:"samples,omitempty"`
	Tokens               []TokenResult   `json:"tokens,omitempty"`
	TruncatedTokens      int             `json:"truncated_tokens,omitempty"`
	Saliency             *SaliencyResult `json:"saliency,omitempty"`
	// HeatmapPNG is the saliency map rendered by Heatmap (base64 in JSON).
	HeatmapPNG []byte `json:"heatmap_png,omitempty"`
}

// FeatureResult is one tabular field: its value, the value standardised by the model, and
// after Explain its attribution and the attribution's standard error.
type FeatureResult struct {
	Name         string   `json:"name"`
	Value        float64  `json:"value"`
	Standardized float64  `json:"standardized"`
	Attribution  *float64 `json:"attribution,omitempty"`
	StdErr       *float64 `json:"std_err,omitempty"`
}

// TokenResult is one word and its importance.
type TokenResult struct {
	Token      string  `json:"token"`
	Importance float64 `json:"importance"`
}

// SaliencyResult is the saliency map, row-major.
type SaliencyResult struct {
	Height int       `json:"height"`
	Width  int       `json:"width"`
	Patch  int       `json:"patch"`
	Stride int       `json:"stride"`
	Values []float64 `json:"values,omitempty"`
}

// NewResult names the parts of e, an explanation of r by m, with the schema's classes and
// fields (which must be the model's), and adds the heatmap when e has a saliency map and
// heatmap is set. samples is what Options.Samples was, for the record.
func NewResult(m *models.Model, s *dataset.Schema, r *dataset.Record, e *Explanation, samples int, heatmap bool) (Result, error) {
	res := Result{
		ID:             r.ID,
		Label:          className(s, e.Label),
		Probabilities:  make(map[string]float64, len(e.Probabilities)),
		ExplainedClass: className(s, e.Class),
		ValueAll:       round(e.Full),
		ValueNone:      round(e.Empty),
	}
	for k, p := range e.Probabilities {
		res.Probabilities[className(s, k)] = round(float64(p))
	}
	res.ModalityShapley = make(map[string]float64, len(e.Shapley))
	for mod, v := range e.Shapley {
		res.ModalityShapley[mod.String()] = round(v)
	}
	if e.Weights != nil {
		res.GateWeights = make(map[string]float64, len(e.Weights))
		for mod, w := range e.Weights {
			res.GateWeights[mod.String()] = round(w)
		}
	}
	if r.Tabular != nil && m.Spec.Tabular != nil {
		mean, std, _ := m.TabularNormalizer()
		for j, v := range r.Tabular {
			f := FeatureResult{Name: fieldName(s, j), Value: shortest(v), Standardized: round((float64(v) - mean[j]) / std[j])}
			if e.Features != nil {
				a, se := round(e.Features[j].Attribution), round(e.Features[j].StdErr)
				f.Attribution, f.StdErr = &a, &se
			}
			res.Features = append(res.Features, f)
		}
		if e.Features != nil {
			base := round(e.TabularBase)
			res.ValueTabularBaseline = &base
			res.Samples = samples
		}
	}
	for _, t := range e.Tokens {
		res.Tokens = append(res.Tokens, TokenResult{Token: t.Text, Importance: round(t.Importance)})
	}
	res.TruncatedTokens = e.Truncated
	if sal := e.Saliency; sal != nil {
		sr := &SaliencyResult{Height: sal.H, Width: sal.W, Patch: sal.Patch, Stride: sal.Stride, Values: make([]float64, len(sal.Values))}
		for i, v := range sal.Values {
			sr.Values[i] = round(v)
		}
		res.Saliency = sr
		if heatmap {
			png, err := Heatmap(r.Image, sal)
			if err != nil {
				return Result{}, err
			}
			res.HeatmapPNG = png
		}
	}
	return res, nil
}

func round(x float64) float64 { return math.Round(x*1e7) / 1e7 }

// shortest is the float64 that prints as the shortest decimal of v, a float32: 49.989803, not
// 49.989803314208984.
func shortest(v float32) float64 {
	x, _ := strconv.ParseFloat(strconv.FormatFloat(float64(v), 'g', -1, 32), 64)
	return x
}

func className(s *dataset.Schema, k int) string {
	if k >= 0 && k < len(s.Classes) {
		return s.Classes[k]
	}
	return "?"
}

func fieldName(s *dataset.Schema, j int) string {
	if j < len(s.TabularFields) {
		return s.TabularFields[j]
	}
	return "?"
}
