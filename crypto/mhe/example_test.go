package mhe_test

import (
	"crypto/sha256"
	"fmt"
	"log"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/mhe"
)

// A federation of three members, any two of which decrypt together: one key set-up for the
// task, then a round in which member 3 sends its encrypted update and goes offline before
// decryption. Members 1 and 2 suffice, and the sum still includes member 3's update.
func Example() {
	// Once per task: the set-up. Each member keeps its KeyMaterial (encrypted, see
	// KeyMaterial.MarshalBinary), the server the PublicSetup.
	pub, kms, err := mhe.RunSetup(mhe.SetupConfig{Task: "example", Members: 3, Threshold: 2, MaxWeight: 100})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("members", pub.Members(), "threshold", pub.Threshold())

	// Each round: four values in one parameter group.
	p := agg.Params{
		Round: 1, LayoutHash: sha256.Sum256([]byte("example layout")),
		NumValues: 4, NumGroups: 1, Groups: []uint8{0, 0, 0, 0},
	}
	inputs := []agg.Input{
		{Values: []float32{0.5, -0.25, 0.25, 0}, Weights: []float64{2}},
		{Values: []float32{0.3, 0.1, -0.5, 0.7}, Weights: []float64{1}},
		{Values: []float32{-0.5, 0, 0.2, 0.3}, Weights: []float64{1}},
	}
	proto := mhe.New(mhe.Config{}, mhe.KeyRing(kms)) // in memory; a real client holds one KeyMaterial
	sum, err := agg.Run(proto, p, inputs, map[int][]int{1: {3}})
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("contributors", sum.Contributors, "weight", sum.Weights[0])
	fmt.Print("mean")
	for _, v := range sum.Values {
		fmt.Printf(" %.2f", v/sum.Weights[0])
	}
	fmt.Println()
	// Output:
	// members [1 2 3] threshold 2
	// contributors [1 2 3] weight 4
	// mean 0.20 -0.10 0.05 0.25
}
