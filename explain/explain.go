// Package explain says why a fedweave model predicted what it did for one record: how much each
// modality contributed, how the fusion head weighed them, which tabular fields, which words and
// which parts of the image mattered. It is what the Inference service's Explain and
// `fedweave explain` return.
//
// Start with Explain (everything) or Modalities (the cheap part, what the Inference service's
// Predict returns); NewResult names the parts for JSON and Heatmap draws the image's map. Every
// attribution explains one number, the value v: the model's probability of one class, by
// default the class it predicts for the whole record (ExplainClass picks another). The methods:
//
//   - Modality Shapley values: exact Shapley values (fusion.Shapley) of the game whose players
//     are the modalities the record carries and whose value for a coalition S is v with only
//     the modalities of S visible to the model (masked as missing, the way the model saw
//     records that lacked them in training, thanks to modality dropout). With m modalities that
//     is 2^m evaluations, and the values sum to v(all) - v(none) (efficiency); v(none) is the
//     model's output for a record with nothing in it, the same for every record.
//   - Fusion weights: the per-record gate values of the gated head and the attention weights of
//     the attention head, read from the model (Prediction.Weights). They say how the head mixed
//     the modality embeddings, not how much each changed the output; concat and late heads have
//     none.
//   - Tabular fields: Shapley values of the game whose players are the fields, by permutation
//     sampling (Castro et al. 2009) with antithetic pairs: a field outside the coalition is set
//     to its baseline, the mean of the model's standardiser (TabularNormalizer), which the
//     encoder sees as 0. The other modalities stay visible. Each estimate comes with its
//     standard error over the sampled pairs; the estimates sum exactly to v(record) - v(every
//     field at its mean) because every permutation does.
//   - Text: occlusion. Each of the tokens the model reads (the first MaxLen) is dropped from
//     the text in turn; its importance is v(text) - v(text without it): positive when the word
//     supports the class.
//   - Image: occlusion saliency (Zeiler and Fergus 2014). A square patch filled with the image's
//     mean value slides over the image; each pixel's saliency is the mean drop of v over the
//     patches that cover it. Heatmap renders it as a PNG.
//
// All the records an explanation needs are evaluated in one batched call of
// models.Model.Predict, models.PredictOptions.Visible masking each row's modalities. Nothing
// here is random except the permutations, drawn from Options.Seed, so an explanation is
// reproducible.
//
// Not here: Kernel SHAP, gradient-based saliency (the gorgonia graphs of package models are
// built for parameter gradients, not input gradients), and attributions within a modality for
// anything but the value of one class.
package explain

import (
	"errors"
	"fmt"
	"math"
	"math/rand/v2"
	"slices"
	"strings"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/models"
)

// Options tune Explain. The zero value picks the defaults noted.
type Options struct {
	// Samples is the number of permutations drawn for the tabular fields, in antithetic pairs;
	// default 32, at least 4.
	Samples int
	// Seed draws the permutations.
	Seed uint64
	// Patch is the side of the occluding square in pixels; default a quarter of the image's
	// smaller side (at least 2). Stride is its step; default half the patch (at least 1).
	Patch, Stride int
}

// DefaultSamples is the number of permutations Explain draws for the tabular fields.
const DefaultSamples = 32

// MaxSamples bounds Options.Samples.
const MaxSamples = 4096

// Explanation is why a model predicted what it did for one record.
type Explanation struct {
	Label         int       // the predicted class
	Probabilities []float32 // one per class
	Class         int       // the class whose probability every attribution explains

	// Shapley holds the modality Shapley values, one for each modality the record carries
	// (of those the model has an encoder for). Full and Empty are v with all of them visible
	// and with none: the values sum to Full - Empty.
	Shapley     map[dataset.Modality]float64
	Full, Empty float64

	// Weights are the fusion head's weights of each of the model's modalities for this record
	// (gated and attention heads; nil otherwise). A missing modality has weight 0.
	Weights map[dataset.Modality]float64

	// Features are the tabular attributions, one per field in schema order; nil when the
	// record has no tabular fields or only Modalities was asked for. TabularBase is v with
	// every field at its baseline: the attributions sum to Full - TabularBase.
	Features    []Feature
	TabularBase float64

	// Tokens are the words the model read, in order, with their importance; nil without text.
	// Truncated counts the words past the model's MaxLen, which it does not read.
	Tokens    []Token
	Truncated int

	// Saliency is the image's occlusion map; nil without an image.
	Saliency *Saliency

	// Evaluations is the number of records the model evaluated for this explanation.
	Evaluations int
}

// Feature is one tabular field's attribution.
type Feature struct {
	Index       int     // position in the record's Tabular slice and in the schema's fields
	Value       float32 // the record's value
	Baseline    float64 // the value it takes outside a coalition: the standardiser's mean
	Attribution float64 // sampled Shapley value
	StdErr      float64 // standard error of Attribution over the antithetic pairs
}

// Token is one word of the text and the drop of v when it is left out.
type Token struct {
	Text       string
	Importance float64
}

// Saliency is an occlusion map over the image's pixels, row-major: Values[y*W+x] is the mean
// drop of v when a patch covering (x, y) is hidden.
type Saliency struct {
	H, W          int
	Values        []float64
	Patch, Stride int
}

// Modalities returns the part of an explanation that Predict serves: the prediction, the
// modality Shapley values and the fusion weights, explaining the predicted class. It costs
// 2^m evaluations for m modalities. The record must pass the model's Encode, its label is
// ignored.
func Modalities(m *models.Model, r *dataset.Record) (*Explanation, error) {
	return run(m, r, -1, Options{}, false)
}

// Explain returns the whole explanation of the predicted class: Modalities plus the tabular
// fields, the tokens and the image saliency, as far as the record carries them.
func Explain(m *models.Model, r *dataset.Record, opt Options) (*Explanation, error) {
	return run(m, r, -1, opt, true)
}

// ExplainClass is Explain for the probability of the given class instead of the predicted one:
// "what speaks for class c, and what against it".
func ExplainClass(m *models.Model, r *dataset.Record, class int, opt Options) (*Explanation, error) {
	if class < 0 || class >= m.Spec.Classes {
		return nil, fmt.Errorf("explain: class %d out of range (the model has %d)", class, m.Spec.Classes)
	}
	return run(m, r, class, opt, true)
}

// ErrNoModality is returned for a record that carries none of the model's modalities.
var ErrNoModality = errors.New("explain: the record carries none of the model's modalities")

func run(m *models.Model, r *dataset.Record, class int, opt Options, full bool) (*Explanation, error) {
	if opt.Samples == 0 {
		opt.Samples = DefaultSamples
	}
	if opt.Samples < 4 || opt.Samples > MaxSamples {
		return nil, fmt.Errorf("explain: samples must be from 4 to %d, got %d", MaxSamples, opt.Samples)
	}
	rec := *r
	rec.Label = -1
	var players []dataset.Modality
	for _, mod := range m.Spec.Modalities() {
		if rec.Has(mod) {
			players = append(players, mod)
		}
	}
	if len(players) == 0 {
		return nil, ErrNoModality
	}
	b := &batch{m: m}

	// The record under every coalition of its modalities, the empty one (row 0) included.
	nc := 1 << len(players)
	coalition := make([]int, nc)
	for mask := range nc {
		var vis [dataset.NumModalities]bool
		for i, mod := range players {
			vis[mod] = mask&(1<<i) != 0
		}
		coalition[mask] = b.addMasked(rec, vis)
	}
	whole := coalition[nc-1]

	var tab *tabularGame
	var tokens *tokenGame
	var img *imageGame
	if full {
		if rec.Has(dataset.Tabular) && m.Spec.Tabular != nil {
			var err error
			if tab, err = newTabularGame(m, &rec, b, opt); err != nil {
				return nil, err
			}
		}
		if rec.Has(dataset.Text) && m.Spec.Text != nil {
			tokens = newTokenGame(m, &rec, b)
		}
		if rec.Has(dataset.Image) && m.Spec.Image != nil {
			img = newImageGame(m, &rec, b, opt)
		}
	}

	preds, err := b.run()
	if err != nil {
		return nil, err
	}
	top := preds[whole]
	if class < 0 {
		class = top.Label
	}
	v := func(row int) float64 { return float64(preds[row].Probabilities[class]) }
	e := &Explanation{
		Label: top.Label, Probabilities: top.Probabilities, Class: class,
		Full: v(whole), Empty: v(coalition[0]), Evaluations: b.evaluations,
	}
	values := make([]float64, nc)
	for mask := range nc {
		values[mask] = v(coalition[mask])
	}
	phi, err := fusion.Shapley(values)
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	e.Shapley = make(map[dataset.Modality]float64, len(players))
	for i, mod := range players {
		e.Shapley[mod] = phi[i]
	}
	if w := top.Weights; w != nil {
		e.Weights = make(map[dataset.Modality]float64, len(w))
		for i, mod := range m.Spec.Modalities() {
			e.Weights[mod] = float64(w[i])
		}
	}
	if tab != nil {
		e.Features, e.TabularBase = tab.attributions(v)
	}
	if tokens != nil {
		e.Tokens, e.Truncated = tokens.importance(v, e.Full)
	}
	if img != nil {
		e.Saliency = img.saliency(v, e.Full)
	}
	return e, nil
}

// batch collects the records an explanation evaluates, each with the modalities the model may
// see of it, and runs them through the model in one call. Row 0 is always the empty coalition,
// which add returns for a record left with nothing.
type batch struct {
	m           *models.Model
	recs        []dataset.Record
	vis         [][dataset.NumModalities]bool
	evaluations int
}

func (b *batch) addMasked(r dataset.Record, vis [dataset.NumModalities]bool) int {
	b.recs = append(b.recs, r)
	b.vis = append(b.vis, vis)
	return len(b.recs) - 1
}

var allVisible = [dataset.NumModalities]bool{true, true, true}

func (b *batch) add(r dataset.Record) int {
	if !r.Has(dataset.Text) && !r.Has(dataset.Image) && !r.Has(dataset.Tabular) {
		return 0
	}
	return b.addMasked(r, allVisible)
}

// Graph sizes: package models compiles one graph per batch size, so batches are padded to a
// power of two up to maxBatch.
const maxBatch = 64

func (b *batch) run() ([]models.Prediction, error) {
	n := len(b.recs)
	size := 1
	for size < n && size < maxBatch {
		size *= 2
	}
	recs, vis := b.recs, b.vis
	for len(recs) < size {
		recs, vis = append(recs, b.recs[n-1]), append(vis, b.vis[n-1])
	}
	enc, err := b.m.Encode(&dataset.Dataset{Records: recs})
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	preds, err := b.m.Predict(enc, models.PredictOptions{BatchSize: maxBatch, Visible: vis})
	if err != nil {
		return nil, fmt.Errorf("explain: %w", err)
	}
	b.evaluations = len(recs)
	return preds[:n], nil
}

// tabularGame is the permutation-sampling estimate over the tabular fields.
type tabularGame struct {
	rec      *dataset.Record
	baseline []float64
	perms    [][]int // pairs: perms[2k+1] is perms[2k] reversed
	rows     map[string]int
	b        *batch
}

func newTabularGame(m *models.Model, r *dataset.Record, b *batch, opt Options) (*tabularGame, error) {
	mean, _, ok := m.TabularNormalizer()
	if !ok || len(mean) != len(r.Tabular) {
		return nil, fmt.Errorf("explain: the record has %d tabular fields, the model %d", len(r.Tabular), len(mean))
	}
	g := &tabularGame{rec: r, baseline: mean, rows: map[string]int{}, b: b}
	F := len(mean)
	rng := rand.New(rand.NewPCG(opt.Seed, 0x7461627368617021))
	for range opt.Samples / 2 {
		p := rng.Perm(F)
		g.perms = append(g.perms, p, reversed(p))
	}
	in := make([]bool, F)
	for _, p := range g.perms {
		clear(in)
		g.row(in)
		for _, j := range p {
			in[j] = true
			g.row(in)
		}
	}
	return g, nil
}

func reversed(p []int) []int {
	q := slices.Clone(p)
	slices.Reverse(q)
	return q
}

// row returns the batch row of the record whose fields in the coalition keep their values and
// the others take their baseline, adding it on first use.
func (g *tabularGame) row(in []bool) int {
	key := coalitionKey(in)
	if i, ok := g.rows[key]; ok {
		return i
	}
	c := *g.rec
	c.Tabular = make([]float32, len(in))
	for j := range in {
		if in[j] {
			c.Tabular[j] = g.rec.Tabular[j]
		} else {
			c.Tabular[j] = float32(g.baseline[j])
		}
	}
	i := g.b.add(c)
	g.rows[key] = i
	return i
}

func coalitionKey(in []bool) string {
	k := make([]byte, (len(in)+7)/8)
	for j, ok := range in {
		if ok {
			k[j/8] |= 1 << (j % 8)
		}
	}
	return string(k)
}

func (g *tabularGame) attributions(v func(int) float64) ([]Feature, float64) {
	F := len(g.baseline)
	in := make([]bool, F)
	base := v(g.row(in))
	pairs := len(g.perms) / 2
	sum, sq := make([]float64, F), make([]float64, F)
	contrib := make([]float64, F)
	pair := make([]float64, F)
	for k, p := range g.perms {
		clear(in)
		prev := base
		for _, j := range p {
			in[j] = true
			cur := v(g.row(in))
			contrib[j] = cur - prev
			prev = cur
		}
		if k%2 == 0 {
			copy(pair, contrib)
			continue
		}
		for j := range F {
			x := (pair[j] + contrib[j]) / 2
			sum[j] += x
			sq[j] += x * x
		}
	}
	out := make([]Feature, F)
	for j := range F {
		mean := sum[j] / float64(pairs)
		variance := max(sq[j]/float64(pairs)-mean*mean, 0) * float64(pairs) / float64(pairs-1)
		out[j] = Feature{
			Index: j, Value: g.rec.Tabular[j], Baseline: g.baseline[j],
			Attribution: mean, StdErr: math.Sqrt(variance / float64(pairs)),
		}
	}
	return out, base
}

// tokenGame is occlusion over the words of the text.
type tokenGame struct {
	words []string
	rows  []int
}

func newTokenGame(m *models.Model, r *dataset.Record, b *batch) *tokenGame {
	tok := dataset.NewTokenizer(m.Spec.Text.Buckets, m.Spec.Text.MaxLen)
	g := &tokenGame{words: tok.Tokens(r.Text)}
	read := min(len(g.words), tok.MaxLen)
	for i := range read {
		c := *r
		c.Text = strings.Join(slices.Concat(g.words[:i], g.words[i+1:]), " ")
		g.rows = append(g.rows, b.add(c))
	}
	return g
}

func (g *tokenGame) importance(v func(int) float64, full float64) ([]Token, int) {
	out := make([]Token, len(g.rows))
	for i, row := range g.rows {
		out[i] = Token{Text: g.words[i], Importance: full - v(row)}
	}
	return out, len(g.words) - len(g.rows)
}

// imageGame is occlusion over the image.
type imageGame struct {
	h, w, patch, stride int
	ys, xs              []int
	rows                []int
}

func newImageGame(m *models.Model, r *dataset.Record, b *batch, opt Options) *imageGame {
	im := r.Image
	g := &imageGame{h: im.H, w: im.W, patch: opt.Patch, stride: opt.Stride}
	if g.patch <= 0 {
		g.patch = max(2, min(im.H, im.W)/4)
	}
	g.patch = min(g.patch, im.H, im.W)
	if g.stride <= 0 {
		g.stride = max(1, g.patch/2)
	}
	g.ys, g.xs = positions(im.H, g.patch, g.stride), positions(im.W, g.patch, g.stride)
	// The fill: each channel's mean, so that a patch hides structure, not brightness.
	plane := im.H * im.W
	fill := make([]float32, im.C)
	for c := range im.C {
		s := 0.0
		for _, p := range im.Pix[c*plane : (c+1)*plane] {
			s += float64(p)
		}
		fill[c] = float32(s / float64(plane))
	}
	for _, y0 := range g.ys {
		for _, x0 := range g.xs {
			occ := *im
			occ.Pix = slices.Clone(im.Pix)
			for c := range im.C {
				for y := y0; y < y0+g.patch; y++ {
					for x := x0; x < x0+g.patch; x++ {
						occ.Pix[c*plane+y*im.W+x] = fill[c]
					}
				}
			}
			rec := *r
			rec.Image = &occ
			g.rows = append(g.rows, b.add(rec))
		}
	}
	return g
}

// positions are the patch offsets along a side: every stride, and the last one flush with the
// edge so that every pixel is covered.
func positions(side, patch, stride int) []int {
	var out []int
	for p := 0; p+patch <= side; p += stride {
		out = append(out, p)
	}
	if last := side - patch; out[len(out)-1] != last {
		out = append(out, last)
	}
	return out
}

func (g *imageGame) saliency(v func(int) float64, full float64) *Saliency {
	sum := make([]float64, g.h*g.w)
	cnt := make([]int, g.h*g.w)
	k := 0
	for _, y0 := range g.ys {
		for _, x0 := range g.xs {
			drop := full - v(g.rows[k])
			k++
			for y := y0; y < y0+g.patch; y++ {
				for x := x0; x < x0+g.patch; x++ {
					sum[y*g.w+x] += drop
					cnt[y*g.w+x]++
				}
			}
		}
	}
	for i := range sum {
		sum[i] /= float64(cnt[i])
	}
	return &Saliency{H: g.h, W: g.w, Values: sum, Patch: g.patch, Stride: g.stride}
}
