package models

import (
	"fmt"
	"math"
	"sync"

	G "gorgonia.org/gorgonia"
	"gorgonia.org/tensor"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/internal/nn"
)

// net is one compiled gorgonia graph of a model for a fixed batch size. Its parameter nodes are
// views onto the model's flat vector. Gorgonia graphs have static shapes, so a model keeps one
// net per (batch size, training) pair; a partial batch is padded with zero-weight rows.
type net struct {
	b     *nn.Builder
	batch int
	mods  []dataset.Modality

	tokens  []*G.Node // per kernel offset: [B*T] token ids shifted by that offset
	tokBias *G.Node   // [B, T]: 0 for a token, nn.MaskBias for padding
	image   *G.Node   // [B, C, H, W]
	tab     *G.Node   // [B, F], standardised values (0 where a record has none)

	tabMean, tabLogStd *G.Node // the compressed tabular statistics (buffers)

	cols     []*G.Node // [B, 1] per modality
	present  *G.Node   // [B, M]
	bias     *G.Node   // [B, M]
	invCount *G.Node   // [B, 1]
	target   *G.Node   // [B, K]: one-hot times the sample's share of the batch weight

	embeddings []*G.Node // [B, Dim] per modality, before masking
	logits     *G.Node
	probs      *G.Node
	weights    *G.Node // fusion weights, or nil
	loss       *G.Node // scalar: weighted mean cross-entropy

	trainable []*G.Node
	vm        G.VM
}

// buildMu serialises graph construction: gorgonia numbers node groups from an unsynchronised
// package counter (internal/encoding.NewGroup), so two graphs built at once race. Running built
// graphs concurrently is safe.
var buildMu sync.Mutex

// buildNet builds the graph of spec for batch size batch over backing (a []float32 or []float64
// of the layout's size; nil of either type to probe the layout). With train set, it also builds
// the gradient of the loss with respect to every trainable parameter.
func buildNet(spec *Spec, backing any, batch int, train bool) (*net, error) {
	buildMu.Lock()
	defer buildMu.Unlock()
	b, err := nn.NewBuilder(backing)
	if err != nil {
		return nil, err
	}
	n := &net{b: b, batch: batch, mods: spec.Modalities()}
	B, M := batch, len(n.mods)

	in := fusion.Inputs{Dim: spec.Dim, Hidden: spec.Hidden, Classes: spec.Classes}
	for _, m := range n.mods {
		var e *G.Node
		switch m {
		case dataset.Text:
			e = n.textEncoder(spec.Text, spec.Dim)
		case dataset.Image:
			e = n.imageEncoder(spec.Image, spec.Dim)
		case dataset.Tabular:
			e = n.tabularEncoder(spec.Tabular, spec.Dim)
		}
		col := b.Input("present."+m.String(), B, 1)
		n.embeddings = append(n.embeddings, e)
		n.cols = append(n.cols, col)
		in.Names = append(in.Names, m.String())
	}
	in.Embeddings, in.Columns = n.embeddings, n.cols
	n.present = b.Input("present", B, M)
	n.bias = b.Input("present.bias", B, M)
	n.invCount = b.Input("present.inv_count", B, 1)
	in.Present, in.Bias, in.InvCount = n.present, n.bias, n.invCount

	out, err := fusion.Build(b, spec.Fusion, in)
	if err != nil {
		return nil, err
	}
	n.logits, n.weights = out.Logits, out.Weights
	n.target = b.Input("target", B, spec.Classes)
	logp := nn.LogSoftmax(n.logits)
	n.loss = G.Must(G.Neg(G.Must(G.Sum(G.Must(G.HadamardProd(n.target, logp))))))
	if !train {
		n.probs = nn.Softmax(n.logits)
	}
	if backing == nil || isNilSlice(backing) {
		return n, nil // a probe: nothing will run
	}
	n.trainable = b.Trainable()
	if train {
		if _, err := G.Grad(n.loss, n.trainable...); err != nil {
			return nil, fmt.Errorf("models: gradient: %w", err)
		}
		n.vm = G.NewTapeMachine(b.G, G.BindDualValues(n.trainable...))
	} else {
		n.vm = G.NewTapeMachine(b.G)
	}
	return n, nil
}

func isNilSlice(v any) bool {
	switch s := v.(type) {
	case []float32:
		return s == nil
	case []float64:
		return s == nil
	}
	return true
}

// textEncoder: embeddings of hashed ids -> 1-D convolution over tokens (ReLU) -> attention
// pooling with padding masked -> dense (ReLU).
//
// The convolution is written as an unfold: the host feeds the token ids shifted by each kernel
// offset, the graph looks up and concatenates their embeddings into [B*T, Kernel*E] and applies
// one matrix multiply. That is the same arithmetic as im2col, keeps every intermediate in
// [B*T, ...] order, and avoids a transpose-then-reshape, whose gradient gorgonia v0.9.18 gets
// wrong (TestGradients caught it). Positions outside the text read the padding id 0, whose
// embedding row is learned like any other. Pooling uses a batched matrix multiply for the same
// reason: an elementwise product over a reshape of h overwrote h in place before its gradient
// was taken.
func (n *net) textEncoder(s *TextSpec, dim int) *G.Node {
	b, B, T := n.b, n.batch, s.MaxLen
	n.tokBias = b.Input("text.token_bias", B, T)
	emb := b.Param("enc.text.embedding", []int{s.Buckets, s.EmbedDim}, nn.InitNormal1)
	cols := make([]*G.Node, s.Kernel)
	for k := range s.Kernel {
		ids := b.IntInput(fmt.Sprintf("text.tokens.%d", k), B*T)
		n.tokens = append(n.tokens, ids)
		cols[k] = G.Must(G.ByIndices(emb, ids, 0)) // [B*T, E]
	}
	x := cols[0]
	if s.Kernel > 1 {
		x = G.Must(G.Concat(1, cols...)) // [B*T, Kernel*E]
	}
	h := nn.ReLU(b.Dense("enc.text.conv", x, s.Kernel*s.EmbedDim, s.Filters, nn.InitHe)) // [B*T, F]
	u := nn.Tanh(b.Dense("enc.text.attn", h, s.Filters, s.Attention, nn.InitGlorot))
	v := b.Param("enc.text.attn.v", []int{s.Attention, 1}, nn.InitGlorot)
	scores := G.Must(G.Reshape(G.Must(G.Mul(u, v)), tensor.Shape{B, T}))
	alpha := nn.Softmax(G.Must(G.Add(scores, n.tokBias))) // [B, T]
	alpha = G.Must(G.Reshape(alpha, tensor.Shape{B, 1, T}))
	h3 := G.Must(G.Reshape(h, tensor.Shape{B, T, s.Filters}))
	pooled := G.Must(G.Reshape(G.Must(G.BatchedMatMul(alpha, h3)), tensor.Shape{B, s.Filters})) // [B, F]
	return nn.ReLU(b.Dense("enc.text.out", pooled, s.Filters, dim, nn.InitHe))
}

// imageEncoder: two blocks of conv 3x3 (ReLU) and 2x2 max-pool, then dense (ReLU).
func (n *net) imageEncoder(s *ImageSpec, dim int) *G.Node {
	b, B := n.b, n.batch
	n.image = b.Input("image.pixels", B, s.C, s.H, s.W)
	x := nn.ReLU(b.Conv2d("enc.image.conv1", n.image, s.C, s.Conv1, 3, 3))
	x = G.Must(G.MaxPool2D(x, tensor.Shape{2, 2}, []int{0, 0}, []int{2, 2}))
	x = nn.ReLU(b.Conv2d("enc.image.conv2", x, s.Conv1, s.Conv2, 3, 3))
	x = G.Must(G.MaxPool2D(x, tensor.Shape{2, 2}, []int{0, 0}, []int{2, 2}))
	flat := s.Conv2 * (s.H / 4) * (s.W / 4)
	x = G.Must(G.Reshape(x, tensor.Shape{B, flat}))
	return nn.ReLU(b.Dense("enc.image.out", x, flat, dim, nn.InitHe))
}

// tabularEncoder: two dense ReLU layers over standardised values. The standardisation happens
// on the host when a batch is filled (see fill), from statistics kept as buffers of the
// parameter vector in a compressed form that survives fixed-point secure aggregation:
//
//	enc.tabular.norm.mean   = asinh(mean) / NormScale
//	enc.tabular.norm.logstd = ln(std) / NormScale
//
// Raw statistics can be in the tens of thousands (an income), far outside the clipping range
// of a quantized update; in this form every field's statistics lie within about [-1, 1] and
// keep a relative precision of about 5e-4 at 16 bits. Averaging them across clients averages
// in that space, which is close to, not exactly, the pooled statistics: good enough to
// standardise, and nothing that a client's records could be recovered from.
func (n *net) tabularEncoder(s *TabularSpec, dim int) *G.Node {
	b := n.b
	n.tab = b.Input("tabular.values", n.batch, s.Fields)
	n.tabMean = b.Buffer("enc.tabular.norm.mean", []int{1, s.Fields}, nn.InitZeros)
	n.tabLogStd = b.Buffer("enc.tabular.norm.logstd", []int{1, s.Fields}, nn.InitZeros)
	x := nn.ReLU(b.Dense("enc.tabular.hidden", n.tab, s.Fields, s.Hidden, nn.InitHe))
	return nn.ReLU(b.Dense("enc.tabular.out", x, s.Hidden, dim, nn.InitHe))
}

// NormScale is the scale of the compressed tabular statistics (see tabularEncoder).
const NormScale = 16

// normalizer returns the mean and standard deviation of every tabular field, decoded from the
// buffers.
func (n *net) normalizer() (mean, std []float64) {
	m, ls := values64(n.tabMean), values64(n.tabLogStd)
	mean, std = make([]float64, len(m)), make([]float64, len(ls))
	for j := range m {
		mean[j] = math.Sinh(NormScale * m[j])
		std[j] = math.Max(math.Exp(NormScale*ls[j]), 1e-6)
	}
	return mean, std
}

func values64(node *G.Node) []float64 {
	switch v := node.Value().Data().(type) {
	case []float32:
		out := make([]float64, len(v))
		for i, x := range v {
			out[i] = float64(x)
		}
		return out
	case []float64:
		return append([]float64(nil), v...)
	}
	return nil
}

// run executes the graph once.
func (n *net) run() error {
	n.vm.Reset()
	if err := n.vm.RunAll(); err != nil {
		return fmt.Errorf("models: run graph: %w", err)
	}
	return nil
}

// scalar reads a scalar node as float64.
func scalar(n *G.Node) float64 {
	switch v := n.Value().Data().(type) {
	case float32:
		return float64(v)
	case float64:
		return v
	}
	return 0
}

// readInto copies a node's value into dst as float32.
func readInto(dst []float32, n *G.Node) {
	switch v := n.Value().Data().(type) {
	case []float32:
		copy(dst, v)
	case []float64:
		for i := range dst {
			dst[i] = float32(v[i])
		}
	}
}

// writeFrom copies src into an input node's value.
func writeFrom(n *G.Node, src []float32) {
	switch v := n.Value().Data().(type) {
	case []float32:
		copy(v, src)
	case []float64:
		for i := range src {
			v[i] = float64(src[i])
		}
	}
}
