package fusion_test

import (
	"fmt"
	"math/rand/v2"

	"github.com/fedweave/fedweave/fusion"
)

// Modality dropout hides modalities of a training sample at random but always keeps one, so
// that a fused model learns to predict from whatever a record carries.
func ExampleDropout() {
	head, err := fusion.ParseKind("gated")
	if err != nil {
		panic(err)
	}
	rng := rand.New(rand.NewPCG(1, 2))
	kept := 0
	for range 1000 {
		present := []bool{true, true, true} // text, image, tabular
		fusion.Dropout(present, 0.5, rng)
		for _, p := range present {
			if p {
				kept++
				break
			}
		}
	}
	fmt.Println(head, "head; samples that kept a modality:", kept)
	// Output: gated head; samples that kept a modality: 1000
}
