package quant_test

import (
	"fmt"
	"log"

	"github.com/fedweave/fedweave/crypto/quant"
)

// Two clients encode their updates of a model of three values in two parameter groups; the
// sum of the encodings, taken modulo 2^32 as a secure aggregation protocol would, decodes to
// the weighted sums of the values and the sums of the weights. The values here are multiples
// of the quantization step, so the stochastic rounding has nothing to round.
func Example() {
	groups := []uint8{0, 0, 1} // values 0 and 1 in group 0, value 2 in group 1
	layout, err := quant.NewLayout(quant.Config{Bits: 16, Clip: 32767.0 / 1024}, groups, 2, 2, 100)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("bits:", layout.Bits, "wide:", layout.Wide, "step:", layout.Clip/layout.Steps())

	sum := layout.NewVector()
	for _, c := range []struct {
		values  []float32
		weights []float64
	}{
		{[]float32{0.5, -0.25, 1}, []float64{10, 4}},
		{[]float32{0.125, 0.75, -2}, []float64{30, 0}}, // no samples for group 1
	} {
		enc, err := layout.Encode(c.values, c.weights, nil)
		if err != nil {
			log.Fatal(err)
		}
		sum.Add(enc)
	}
	values, weights, err := layout.Decode(sum)
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("weighted sums:", values)
	fmt.Println("weights:", weights)
	fmt.Println("means:", values[0]/weights[0], values[1]/weights[0], values[2]/weights[1])
	// Output:
	// bits: 16 wide: false step: 0.0009765625
	// weighted sums: [8.75 20 4]
	// weights: [40 4]
	// means: 0.21875 0.5 1
}
