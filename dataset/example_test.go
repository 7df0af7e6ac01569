package dataset_test

import (
	"fmt"

	"github.com/fedweave/fedweave/dataset"
)

// ExampleSynthetic builds the demo federation: a synthetic task, a held-out
// test set, four label-skewed clients and the standard pattern of which
// modalities each client holds.
func ExampleSynthetic() {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 1000, Seed: 1})
	if err := d.Validate(); err != nil {
		panic(err)
	}
	train, test := dataset.Split(d, 0.2, 1)
	fmt.Printf("train %d, test %d, classes %v\n", len(train.Records), len(test.Records), train.Schema.Classes)

	const clients = 4
	parts := dataset.DirichletPartition(train.Labels(), len(train.Schema.Classes), clients, 0.5, 1)
	avail := dataset.StandardAvailabilities(clients)
	for i, idx := range parts {
		local := dataset.ApplyAvailability(train.Subset(idx), avail[i])
		perClass := make([]int, len(train.Schema.Classes))
		for _, l := range local.Labels() {
			perClass[l]++
		}
		n := local.ModalityCounts()
		fmt.Printf("client %d (%s): %d records, per class %v, text %d image %d tabular %d\n",
			i, avail[i], len(local.Records), perClass, n[dataset.Text], n[dataset.Image], n[dataset.Tabular])
	}

	r := test.Records[0]
	tok := dataset.NewTokenizer(0, 16)
	fmt.Printf("%s is %s: %q -> %d token ids\n", r.ID, test.Schema.Classes[r.Label], r.Text, len(tok.Encode(r.Text, nil)))
	// Output:
	// train 800, test 200, classes [amber birch cedar dune]
	// client 0 (text+image+tabular): 156 records, per class [0 48 17 91], text 156 image 156 tabular 156
	// client 1 (text+tabular): 237 records, per class [105 12 68 52], text 237 image 0 tabular 237
	// client 2 (image+tabular): 289 records, per class [8 111 123 47], text 0 image 289 tabular 289
	// client 3 (text+image): 118 records, per class [93 11 14 0], text 118 image 118 tabular 0
	// syn-000006 is cedar: "that work acute urgent for sudden large" -> 16 token ids
}
