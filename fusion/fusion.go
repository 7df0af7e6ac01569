// Package fusion merges per-modality embeddings into one prediction, and copes with records that
// lack a modality.
//
// Four heads are provided (see Kind):
//
//   - concat: feature fusion. The masked embeddings and the presence mask are concatenated and fed
//     to a two-layer perceptron.
//   - gated: a gated multimodal unit (Arevalo et al., ICLR workshop 2017) generalised to M
//     modalities: each embedding is projected through tanh, a softmax gate computed from all of
//     them (missing ones masked) weighs the projections, and a perceptron reads the weighted sum.
//     The gate values are per-sample modality weights and are returned for explanations.
//   - attention: a learned query attends over the projected modality embeddings, missing ones
//     masked; the attention weights are returned like the gate's.
//   - late: decision fusion. Each modality has its own linear classifier and the logits of the
//     modalities present are averaged.
//
// A presence mask per sample is a first-class input to every head: a missing modality's
// embedding is multiplied by zero, softmax entries are masked with a finite bias so that a record
// with no modality at all still gives finite, uniform output, and Dropout implements modality
// dropout for training so that a fused model survives missing inputs at prediction time.
//
// Build is the entry point; package models calls it after the encoders. Shapley computes exact
// Shapley values over the modalities from the value of every coalition, the attribution that
// package explain serves.
package fusion

import (
	"fmt"
	"math/rand/v2"

	G "gorgonia.org/gorgonia"

	"github.com/fedweave/fedweave/internal/nn"
)

// Kind names a fusion head.
type Kind string

const (
	Concat    Kind = "concat"
	Gated     Kind = "gated"
	Attention Kind = "attention"
	Late      Kind = "late"
)

// Kinds lists every head, in the order the CLI documents them.
var Kinds = []Kind{Concat, Gated, Attention, Late}

// ParseKind returns the head named s.
func ParseKind(s string) (Kind, error) {
	for _, k := range Kinds {
		if string(k) == s {
			return k, nil
		}
	}
	return "", fmt.Errorf("fusion: unknown head %q (want concat, gated, attention or late)", s)
}

// Inputs are the graph nodes a head reads. All have batch size B as their first dimension and
// list the model's modalities in the same order.
type Inputs struct {
	Names      []string  // modality names, used in parameter names: "fusion.gated.proj.text"
	Embeddings []*G.Node // [B, Dim] per modality
	Columns    []*G.Node // [B, 1] per modality: 1 present, 0 missing
	Present    *G.Node   // [B, M]: the Columns side by side
	Bias       *G.Node   // [B, M]: 0 present, nn.MaskBias missing
	InvCount   *G.Node   // [B, 1]: 1 / max(1, number present)
	Dim        int       // embedding width
	Hidden     int       // width of the head's hidden layer
	Classes    int       // number of output classes
}

// Output is what a head produces.
type Output struct {
	Logits  *G.Node // [B, Classes]
	Weights *G.Node // [B, M] per-sample modality weights (gated, attention); nil otherwise
}

// Build adds the head named kind to b's graph. Its parameters are registered under "fusion.".
func Build(b *nn.Builder, kind Kind, in Inputs) (Output, error) {
	m := len(in.Embeddings)
	if m == 0 || len(in.Columns) != m || len(in.Names) != m {
		return Output{}, fmt.Errorf("fusion: need one embedding, column and name per modality, got %d, %d, %d", m, len(in.Columns), len(in.Names))
	}
	masked := make([]*G.Node, m)
	for i, e := range in.Embeddings {
		masked[i] = nn.ColumnScale(e, in.Columns[i])
	}
	switch kind {
	case Concat:
		x := G.Must(G.Concat(1, append(masked, in.Present)...))
		h := nn.ReLU(b.Dense("fusion.concat.hidden", x, m*in.Dim+m, in.Hidden, nn.InitHe))
		return Output{Logits: b.Dense("fusion.concat.out", h, in.Hidden, in.Classes, nn.InitGlorot)}, nil

	case Gated:
		proj := make([]*G.Node, m)
		for i := range masked {
			proj[i] = nn.Tanh(b.Dense("fusion.gated.proj."+in.Names[i], masked[i], in.Dim, in.Hidden, nn.InitGlorot))
		}
		x := G.Must(G.Concat(1, append(masked, in.Present)...))
		scores := b.Dense("fusion.gated.gate", x, m*in.Dim+m, m, nn.InitGlorot)
		z := nn.Softmax(G.Must(G.Add(scores, in.Bias)))
		return Output{Logits: head(b, "fusion.gated", weightedSum(z, proj, in.Columns), in), Weights: z}, nil

	case Attention:
		proj := make([]*G.Node, m)
		scores := make([]*G.Node, m)
		q := b.Param("fusion.attention.query", []int{in.Hidden, 1}, nn.InitGlorot)
		for i := range masked {
			proj[i] = nn.Tanh(b.Dense("fusion.attention.proj."+in.Names[i], masked[i], in.Dim, in.Hidden, nn.InitGlorot))
			scores[i] = G.Must(G.Mul(proj[i], q)) // [B, 1]
		}
		s := G.Must(G.Concat(1, scores...))
		a := nn.Softmax(G.Must(G.Add(s, in.Bias)))
		return Output{Logits: head(b, "fusion.attention", weightedSum(a, proj, in.Columns), in), Weights: a}, nil

	case Late:
		var sum *G.Node
		for i := range masked {
			l := nn.ColumnScale(b.Dense("fusion.late."+in.Names[i], in.Embeddings[i], in.Dim, in.Classes, nn.InitGlorot), in.Columns[i])
			if sum == nil {
				sum = l
			} else {
				sum = G.Must(G.Add(sum, l))
			}
		}
		return Output{Logits: nn.ColumnScale(sum, in.InvCount)}, nil
	}
	return Output{}, fmt.Errorf("fusion: unknown head %q", kind)
}

// head is the perceptron on top of a weighted sum: hidden ReLU layer, then logits.
func head(b *nn.Builder, prefix string, x *G.Node, in Inputs) *G.Node {
	h := nn.ReLU(b.Dense(prefix+".hidden", x, in.Hidden, in.Hidden, nn.InitHe))
	return b.Dense(prefix+".out", h, in.Hidden, in.Classes, nn.InitGlorot)
}

// weightedSum is sum_i w[:, i] * x_i * present_i for weights w [B, M].
func weightedSum(w *G.Node, xs, cols []*G.Node) *G.Node {
	var sum *G.Node
	for i, x := range xs {
		wi := G.Must(G.Slice(w, nil, G.S(i, i+1))) // [B, 1]
		t := nn.ColumnScale(nn.ColumnScale(x, wi), cols[i])
		if sum == nil {
			sum = t
		} else {
			sum = G.Must(G.Add(sum, t))
		}
	}
	return sum
}

// Dropout is modality dropout for one training sample: each present modality is dropped with
// probability p, but at least one present modality is always kept. present is changed in place.
func Dropout(present []bool, p float64, rng *rand.Rand) {
	if p <= 0 {
		return
	}
	var idx [8]int
	n := 0
	for i, ok := range present {
		if ok && n < len(idx) {
			idx[n] = i
			n++
		}
	}
	if n < 2 {
		return
	}
	keep := idx[rng.IntN(n)]
	for _, i := range idx[:n] {
		if i != keep && rng.Float64() < p {
			present[i] = false
		}
	}
}
