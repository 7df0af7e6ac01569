package explain_test

import (
	"bytes"
	"fmt"
	"image/png"
	"math"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/explain"
	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/models"
)

// Explain one record: the modality Shapley values (which sum to the prediction with every
// modality minus the prediction with none), the gate weights of a gated head, the tabular
// fields with their standard errors, the words and the image saliency as a PNG.
func Example() {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 1, Seed: 1})
	m, err := models.New(models.DefaultSpec(d.Schema, fusion.Gated, true), 1) // untrained, for brevity
	if err != nil {
		panic(err)
	}
	r := d.Records[0]
	e, err := explain.Explain(m, &r, explain.Options{Seed: 1})
	if err != nil {
		panic(err)
	}
	sum := 0.0
	for _, mod := range dataset.Modalities {
		sum += e.Shapley[mod]
	}
	fmt.Println("modalities:", len(e.Shapley), "gate weights:", len(e.Weights))
	fmt.Println("efficiency holds:", math.Abs(sum-(e.Full-e.Empty)) < 1e-6)
	fmt.Println("fields:", len(e.Features), "tokens read:", len(e.Tokens)+e.Truncated == len(dataset.Tokenizer{}.Tokens(r.Text)))
	heat, err := explain.Heatmap(r.Image, e.Saliency)
	if err != nil {
		panic(err)
	}
	img, err := png.Decode(bytes.NewReader(heat))
	if err != nil {
		panic(err)
	}
	fmt.Println("heatmap:", img.Bounds().Dx(), "x", img.Bounds().Dy())
	// Output:
	// modalities: 3 gate weights: 3
	// efficiency holds: true
	// fields: 6 tokens read: true
	// heatmap: 256 x 256
}
