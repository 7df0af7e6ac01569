package explain

import (
	"bytes"
	"context"
	"image/png"
	"math"
	"os"
	"slices"
	"sync"
	"testing"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/models"
)

// train returns a model of head trained on n synthetic records for the given epochs.
func train(t testing.TB, head fusion.Kind, n, epochs int) *models.Model {
	t.Helper()
	d := dataset.Synthetic(dataset.SyntheticConfig{N: n, Seed: 1})
	m, err := models.New(models.DefaultSpec(d.Schema, head, true), 1)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := m.Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Train(context.Background(), enc, models.TrainConfig{Epochs: epochs, LR: 0.006, Seed: 1, ModalityDropout: 0.5}); err != nil {
		t.Fatal(err)
	}
	return m
}

var gated struct {
	once sync.Once
	m    *models.Model
}

// trainedGated is a gated model that has learned every pair of modalities (about 2.5 s to
// train, shared by the tests).
func trainedGated(t *testing.T) *models.Model {
	gated.once.Do(func() { gated.m = train(t, fusion.Gated, 1000, 5) })
	if gated.m == nil {
		t.Fatal("training failed in another test")
	}
	return gated.m
}

// clean returns synthetic records whose every modality shows its true bit.
func clean(n int, seed uint64) *dataset.Dataset {
	return dataset.Synthetic(dataset.SyntheticConfig{N: n, Seed: seed, Flip: -1})
}

// TestShapleyEfficiency: for every fusion head and records with any set of modalities, the
// modality Shapley values sum to v(all) - v(none), v(all) is the predicted class's
// probability, and the tabular attributions sum to v(all) - v(fields at baseline).
func TestShapleyEfficiency(t *testing.T) {
	recs := clean(24, 7).Records
	avail := []dataset.Availability{dataset.AllModalities, {true, true, false}, {false, true, true}, {true, false, false}, {false, false, true}, {false, true, false}}
	for _, head := range fusion.Kinds {
		t.Run(string(head), func(t *testing.T) {
			m := train(t, head, 300, 1)
			for i := range recs {
				r := recs[i]
				for _, mod := range dataset.Modalities {
					if !avail[i%len(avail)][mod] {
						r = r.Without(mod)
					}
				}
				var e *Explanation
				var err error
				if i < 6 {
					e, err = Explain(m, &r, Options{Samples: 8, Seed: uint64(i)})
				} else {
					e, err = Modalities(m, &r)
				}
				if err != nil {
					t.Fatal(err)
				}
				sum := 0.0
				for _, v := range e.Shapley {
					sum += v
				}
				if d := sum - (e.Full - e.Empty); math.Abs(d) > 1e-5 {
					t.Errorf("record %d (%v): Shapley values sum to %.8f, v(all) - v(none) = %.8f", i, avail[i%len(avail)], sum, e.Full-e.Empty)
				}
				if len(e.Shapley) != len(avail[i%len(avail)].Names()) {
					t.Errorf("record %d: %d Shapley values for %v", i, len(e.Shapley), avail[i%len(avail)])
				}
				if e.Class != e.Label || e.Full != float64(e.Probabilities[e.Label]) {
					t.Errorf("record %d: explains class %d with v = %v, predicted %d with %v", i, e.Class, e.Full, e.Label, e.Probabilities)
				}
				if (head == fusion.Gated || head == fusion.Attention) != (e.Weights != nil) {
					t.Errorf("record %d: weights %v from a %s head", i, e.Weights, head)
				}
				wsum := 0.0
				for mod, w := range e.Weights {
					wsum += w
					if !r.Has(mod) && w > 1e-6 {
						t.Errorf("record %d: missing %s has weight %g", i, mod, w)
					}
				}
				if e.Weights != nil && math.Abs(wsum-1) > 1e-4 {
					t.Errorf("record %d: weights sum to %g", i, wsum)
				}
				if e.Features != nil {
					fsum := 0.0
					for _, f := range e.Features {
						fsum += f.Attribution
					}
					if d := fsum - (e.Full - e.TabularBase); math.Abs(d) > 1e-5 {
						t.Errorf("record %d: field attributions sum to %.8f, want %.8f", i, fsum, e.Full-e.TabularBase)
					}
				}
			}
		})
	}
}

// TestDecisiveModality checks that credit goes where the synthetic generator put the label.
// Each modality shows one bit (dataset.SyntheticBits) and any two bits determine the label,
// so in a record that carries two modalities both are decisive. Over many records:
//
//   - explaining the predicted class, both modalities get positive credit;
//   - when one modality's content is replaced by that of a record whose bit differs, so that
//     it now speaks for another label, then, explaining the record's true label, the replaced
//     modality gets negative credit, and less than the one that still shows the true bit.
//
// The model must have learned every pair for this to hold, which is checked first.
func TestDecisiveModality(t *testing.T) {
	m := trainedGated(t)
	test := clean(60, 99)
	enc, err := m.Encode(test)
	if err != nil {
		t.Fatal(err)
	}
	bitsOf := func(label int) [dataset.NumModalities]int {
		var b [dataset.NumModalities]int
		b[dataset.Text], b[dataset.Image], b[dataset.Tabular] = dataset.SyntheticBits(label)
		return b
	}
	for _, missing := range dataset.Modalities {
		var pair []dataset.Modality
		for _, mod := range dataset.Modalities {
			if mod != missing {
				pair = append(pair, mod)
			}
		}
		t.Run(pair[0].String()+"+"+pair[1].String(), func(t *testing.T) {
			only := [dataset.NumModalities]bool{true, true, true}
			only[missing] = false
			met, err := m.Evaluate(enc, models.PredictOptions{Only: &only})
			if err != nil {
				t.Fatal(err)
			}
			if met.Accuracy < 0.85 {
				t.Fatalf("the model has not learned this pair (accuracy %.2f): the test cannot tell anything", met.Accuracy)
			}
			n := len(test.Records)
			bothPositive := 0
			var spliced, below [2]int
			for i := range test.Records {
				r := test.Records[i].Without(missing)
				e, err := Modalities(m, &r)
				if err != nil {
					t.Fatal(err)
				}
				if e.Shapley[pair[0]] > 0 && e.Shapley[pair[1]] > 0 {
					bothPositive++
				}
				for k, mod := range pair {
					// The next record whose bit for mod differs lends its content.
					var lender *dataset.Record
					for j := 1; j < n; j++ {
						o := &test.Records[(i+j)%n]
						if bitsOf(o.Label)[mod] != bitsOf(r.Label)[mod] {
							lender = o
							break
						}
					}
					c := r
					switch mod {
					case dataset.Text:
						c.Text = lender.Text
					case dataset.Image:
						c.Image = lender.Image
					case dataset.Tabular:
						c.Tabular = lender.Tabular
					}
					e, err := run(m, &c, r.Label, Options{}, false)
					if err != nil {
						t.Fatal(err)
					}
					if e.Shapley[mod] < 0 {
						spliced[k]++
					}
					if e.Shapley[mod] < e.Shapley[pair[1-k]] {
						below[k]++
					}
				}
			}
			t.Logf("both positive %d of %d; replaced modality negative %v, below the other %v", bothPositive, n, spliced, below)
			if bothPositive < n*8/10 {
				t.Errorf("both modalities got positive credit in %d of %d records", bothPositive, n)
			}
			for k, mod := range pair {
				if spliced[k] < n*8/10 || below[k] < n*8/10 {
					t.Errorf("%s showing the wrong bit: negative credit for the true label in %d of %d records, less than %s's in %d",
						mod, spliced[k], n, pair[1-k], below[k])
				}
			}
		})
	}
}

// syntheticSignal are the signal words of dataset.Synthetic's text (its syntheticSignal).
var syntheticSignal = []string{
	"stable", "steady", "calm", "mild", "routine", "normal", "gentle", "settled",
	"acute", "sharp", "severe", "sudden", "intense", "urgent", "critical", "unstable",
}

// TestTokensAndSaliency: the words that carry the text's bit matter more than filler words,
// and the image's saliency falls on the bar that carries its bit more than on the background.
func TestTokensAndSaliency(t *testing.T) {
	m := trainedGated(t)
	test := clean(30, 5)
	var signal, filler float64
	var nSignal, nFiller int
	var onBar, offBar float64
	var nOn, nOff int
	for i := range test.Records {
		r := test.Records[i].Without(dataset.Tabular) // text and image both decide
		e, err := Explain(m, &r, Options{Seed: 1})
		if err != nil {
			t.Fatal(err)
		}
		if len(e.Tokens) == 0 || e.Saliency == nil || e.Features != nil {
			t.Fatalf("record %d: tokens %v, saliency %v, features %v", i, e.Tokens, e.Saliency, e.Features)
		}
		for _, tok := range e.Tokens {
			if slices.Contains(syntheticSignal, tok.Text) {
				signal += tok.Importance
				nSignal++
			} else {
				filler += tok.Importance
				nFiller++
			}
		}
		s := e.Saliency
		if s.H != r.Image.H || s.W != r.Image.W || len(s.Values) != s.H*s.W {
			t.Fatalf("saliency %dx%d with %d values", s.H, s.W, len(s.Values))
		}
		// The bar is drawn at brightness 1 before noise (sigma 0.25); the background at 0.
		for p, v := range r.Image.Pix {
			if v > 0.85 {
				onBar += s.Values[p]
				nOn++
			} else if v < 0.3 {
				offBar += s.Values[p]
				nOff++
			}
		}
	}
	signal, filler = signal/float64(nSignal), filler/float64(nFiller)
	t.Logf("importance: signal words %.4f, filler %.4f; saliency: bright pixels %.4f, dark %.4f", signal, filler, onBar/float64(nOn), offBar/float64(nOff))
	if !(signal > 0.02 && signal > filler+0.02) {
		t.Errorf("mean importance of signal words %.4f, of filler words %.4f", signal, filler)
	}
	onBar, offBar = onBar/float64(nOn), offBar/float64(nOff)
	if !(onBar > 0.01 && onBar > 3*offBar) {
		t.Errorf("mean saliency on bright pixels %.4f, on dark ones %.4f", onBar, offBar)
	}
}

func TestHeatmap(t *testing.T) {
	m := trainedGated(t)
	r := clean(1, 3).Records[0].Without(dataset.Tabular)
	e, err := Explain(m, &r, Options{})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Heatmap(r.Image, e.Saliency)
	if err != nil {
		t.Fatal(err)
	}
	if out := os.Getenv("FEDWEAVE_HEATMAP"); out != "" {
		os.WriteFile(out, b, 0o644)
	}
	img, err := png.Decode(bytes.NewReader(b))
	if err != nil {
		t.Fatal(err)
	}
	if got := img.Bounds().Size(); got.X != 256 || got.Y != 256 {
		t.Errorf("heatmap is %v, want 256x256 for a 16x16 image", got)
	}
	other := &Saliency{H: 8, W: 8, Values: make([]float64, 64)}
	if _, err := Heatmap(r.Image, other); err == nil {
		t.Error("a map of another size was drawn")
	}
}

func TestDeterministicAndOptions(t *testing.T) {
	m := train(t, fusion.Concat, 200, 1)
	r := clean(1, 11).Records[0]
	a, err := Explain(m, &r, Options{Seed: 3, Samples: 16, Patch: 4, Stride: 4})
	if err != nil {
		t.Fatal(err)
	}
	b, err := Explain(m, &r, Options{Seed: 3, Samples: 16, Patch: 4, Stride: 4})
	if err != nil {
		t.Fatal(err)
	}
	for j := range a.Features {
		if a.Features[j] != b.Features[j] {
			t.Fatalf("field %d: %+v then %+v", j, a.Features[j], b.Features[j])
		}
		if f := a.Features[j]; f.StdErr < 0 || math.IsNaN(f.StdErr) || f.Index != j || f.Value != r.Tabular[j] {
			t.Errorf("field %d: %+v", j, f)
		}
	}
	if a.Saliency.Patch != 4 || a.Saliency.Stride != 4 {
		t.Errorf("patch %d stride %d", a.Saliency.Patch, a.Saliency.Stride)
	}
	c, err := ExplainClass(m, &r, (a.Label+1)%4, Options{Seed: 3, Samples: 16})
	if err != nil {
		t.Fatal(err)
	}
	if c.Class == c.Label || c.Full != float64(c.Probabilities[c.Class]) {
		t.Errorf("ExplainClass explained %d (predicted %d) with v = %v", c.Class, c.Label, c.Full)
	}
	for _, bad := range []Options{{Samples: 2}, {Samples: MaxSamples + 1}} {
		if _, err := Explain(m, &r, bad); err == nil {
			t.Errorf("%+v accepted", bad)
		}
	}
	if _, err := ExplainClass(m, &r, 4, Options{}); err == nil {
		t.Error("class 4 of 4 accepted")
	}
	if _, err := Modalities(m, &dataset.Record{ID: "empty"}); err != ErrNoModality {
		t.Errorf("a record without modalities: %v", err)
	}
}
