package cli

import (
	"errors"
	"fmt"
	"os"
	"strings"

	"github.com/fedweave/fedweave/dataset"
)

// dataOptions are the flags every command that loads data shares.
type dataOptions struct {
	N          int     // synthetic records
	Seed       uint64  // synthetic generation and the train/test split
	TestFrac   float64 // held-out share, for data without a test split of its own
	TabularCSV string  // extra tabular columns for a manifest
	ImageSize  int     // side images of a manifest are resized to
}

// loadedData is a data set split for training and evaluation.
type loadedData struct {
	Name        string
	Train, Test *dataset.Dataset
	HasText     bool // some record carries text, so the model needs a text encoder
}

// loadData resolves a --data value: "synthetic", "fashion-mnist" or "fashion-mnist:DIR", or the
// path of a JSONL manifest.
func loadData(spec string, opt dataOptions) (*loadedData, error) {
	var ld loadedData
	switch {
	case spec == "synthetic":
		d := dataset.Synthetic(dataset.SyntheticConfig{N: opt.N, Seed: opt.Seed})
		ld.Name = fmt.Sprintf("synthetic (%d records, seed %d)", opt.N, opt.Seed)
		ld.Train, ld.Test = dataset.Split(d, opt.TestFrac, opt.Seed)
	case spec == "fashion-mnist" || strings.HasPrefix(spec, "fashion-mnist:"):
		dir := strings.TrimPrefix(strings.TrimPrefix(spec, "fashion-mnist"), ":")
		if dir == "" {
			var err error
			if dir, err = dataset.FashionMNISTDir(); err != nil {
				return nil, Hint(err, "apt-get install dataset-fashion-mnist, or pass --data fashion-mnist:DIR")
			}
		}
		train, test, err := dataset.LoadFashionMNIST(dir)
		if err != nil {
			return nil, err
		}
		ld.Name, ld.Train, ld.Test = "Fashion-MNIST ("+dir+")", train, test
	default:
		if _, err := os.Stat(spec); errors.Is(err, os.ErrNotExist) {
			return nil, Hint(fmt.Errorf("--data %q: no such file", spec), "use synthetic, fashion-mnist[:DIR] or the path of a JSONL manifest")
		}
		d, err := dataset.LoadManifest(spec, dataset.ManifestOptions{TabularCSV: opt.TabularCSV, ImageSize: opt.ImageSize})
		if err != nil {
			return nil, Hint(err, "fix the line named above; the manifest format is in the dataset package documentation")
		}
		ld.Name = spec
		ld.Train, ld.Test = dataset.Split(d, opt.TestFrac, opt.Seed)
	}
	if len(ld.Train.Records) == 0 || len(ld.Test.Records) == 0 {
		return nil, fmt.Errorf("--data %s: too few records to hold out a test split (%d train, %d test)", spec, len(ld.Train.Records), len(ld.Test.Records))
	}
	for _, r := range ld.Train.Records {
		if r.Has(dataset.Text) {
			ld.HasText = true
			break
		}
	}
	return &ld, nil
}
