package agg_test

import (
	"crypto/sha256"
	"fmt"
	"log"

	"github.com/fedweave/fedweave/crypto/agg"
)

// Three clients aggregate a model of two encoders, text (values 0 and 1) and image (values 2
// and 3). Each client's values count with the number of its samples that fed each encoder; the
// third has no images, so it adds nothing to the image encoder, neither values nor weight, and
// the image mean is that of the two clients that have images.
func ExampleRun() {
	p := agg.Params{
		Round:      1,
		LayoutHash: sha256.Sum256([]byte("text+image layout")),
		NumValues:  4,
		NumGroups:  2,
		Groups:     []uint8{0, 0, 1, 1},
	}
	inputs := []agg.Input{
		{Values: []float32{0.5, -0.25, 0.5, 0.25}, Weights: []float64{10, 4}},     // 10 texts, 4 images
		{Values: []float32{0.375, -0.25, 0.25, 0.25}, Weights: []float64{30, 12}}, // 30 texts, 12 images
		{Values: []float32{0.5, -0.125, 0, 0}, Weights: []float64{20, 0}},         // 20 texts, no images
	}
	sum, err := agg.Run(agg.Plain{}, p, inputs, nil)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("contributors:", sum.Contributors)
	fmt.Println("sum:", sum.Values)
	fmt.Println("weights:", sum.Weights)

	group := []int{0, 0, 1, 1} // the encoder of each value
	mean := make([]float64, len(sum.Values))
	for i, v := range sum.Values {
		mean[i] = v / sum.Weights[group[i]]
	}
	fmt.Printf("mean: %.4g\n", mean)
	// Output:
	// contributors: [1 2 3]
	// sum: [26.25 -12.5 5 4]
	// weights: [60 16]
	// mean: [0.4375 -0.2083 0.3125 0.25]
}
