package cli

import (
	"fmt"
	"io"
	"slices"
	"strings"

	"github.com/fedweave/fedweave/explain"
	"github.com/fedweave/fedweave/internal/demo"
)

// printServed prints the demo's served prediction: the label, the probabilities, the modality
// Shapley values, the gate weights, and the strongest field and word.
func printServed(w io.Writer, s *demo.Served) {
	if s == nil {
		return
	}
	r := &s.Result
	fmt.Fprintf(w, "\n\nserved: %s asked the inference service to explain held-out record %s", s.Reader, s.Record)
	if s.TrueLabel != "" {
		fmt.Fprintf(w, " (true label %s)", s.TrueLabel)
	}
	fmt.Fprintf(w, "\n  prediction      %s, model of round %d (%.0f ms)\n", r.Label, r.Round, 1000*s.Seconds)
	fmt.Fprintf(w, "  probabilities   %s\n", namedValues(r.Probabilities, nil, "%.3f"))
	sum := 0.0
	for _, v := range r.ModalityShapley {
		sum += v
	}
	fmt.Fprintf(w, "  modality Shapley %s  (sum %+.3f = p(all) %.3f - p(none) %.3f)\n",
		namedValues(r.ModalityShapley, modalityOrder, "%+.3f"), sum, r.ValueAll, r.ValueNone)
	if r.GateWeights != nil {
		fmt.Fprintf(w, "  gate weights    %s\n", namedValues(r.GateWeights, modalityOrder, "%.3f"))
	}
	if f := topFeature(r.Features); f != nil {
		fmt.Fprintf(w, "  top field       %s = %v: %+.3f ± %.3f\n", f.Name, float32(f.Value), *f.Attribution, *f.StdErr)
	}
	if len(r.Tokens) > 0 {
		top := slices.MaxFunc(r.Tokens, func(a, b explain.TokenResult) int {
			switch {
			case a.Importance < b.Importance:
				return -1
			case a.Importance > b.Importance:
				return 1
			}
			return 0
		})
		fmt.Fprintf(w, "  top word        %q: %+.3f\n", top.Token, top.Importance)
	}
}

var modalityOrder = []string{"text", "image", "tabular"}

// namedValues prints a map in the given key order (sorted keys when order is nil).
func namedValues(m map[string]float64, order []string, format string) string {
	if order == nil {
		for k := range m {
			order = append(order, k)
		}
		slices.Sort(order)
	}
	var parts []string
	for _, k := range order {
		if v, ok := m[k]; ok {
			parts = append(parts, k+" "+fmt.Sprintf(format, v))
		}
	}
	return strings.Join(parts, "  ")
}

func topFeature(fs []explain.FeatureResult) *explain.FeatureResult {
	var top *explain.FeatureResult
	for i := range fs {
		f := &fs[i]
		if f.Attribution != nil && (top == nil || abs(*f.Attribution) > abs(*top.Attribution)) {
			top = f
		}
	}
	return top
}

func abs(x float64) float64 {
	if x < 0 {
		return -x
	}
	return x
}
