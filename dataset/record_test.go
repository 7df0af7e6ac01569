package dataset

import (
	"math"
	"slices"
	"strings"
	"testing"
)

func TestModalityString(t *testing.T) {
	for _, tc := range []struct {
		m    Modality
		want string
	}{
		{Text, "text"},
		{Image, "image"},
		{Tabular, "tabular"},
		{Modality(3), "Modality(3)"},
		{Modality(-1), "Modality(-1)"},
	} {
		t.Run(tc.want, func(t *testing.T) {
			if got := tc.m.String(); got != tc.want {
				t.Errorf("String() = %q, want %q", got, tc.want)
			}
		})
	}
}

func TestParseModality(t *testing.T) {
	for _, tc := range []struct {
		in      string
		want    Modality
		wantErr bool
	}{
		{"text", Text, false},
		{"image", Image, false},
		{"tabular", Tabular, false},
		{" Image ", Image, false},
		{"TABULAR", Tabular, false},
		{"audio", 0, true},
		{"", 0, true},
	} {
		t.Run(tc.in, func(t *testing.T) {
			got, err := ParseModality(tc.in)
			if tc.wantErr {
				if err == nil || !strings.Contains(err.Error(), "unknown modality") {
					t.Fatalf("ParseModality(%q) error = %v, want unknown modality", tc.in, err)
				}
				return
			}
			if err != nil || got != tc.want {
				t.Fatalf("ParseModality(%q) = %v, %v, want %v", tc.in, got, err, tc.want)
			}
		})
	}
	for _, m := range Modalities {
		if got, err := ParseModality(m.String()); err != nil || got != m {
			t.Errorf("round trip of %v: got %v, %v", m, got, err)
		}
	}
}

func fullRecord() Record {
	return Record{
		ID:      "r1",
		Label:   1,
		Text:    "hello world",
		Image:   &ImageData{C: 1, H: 2, W: 2, Pix: []float32{0, 0.5, 1, 0.25}},
		Tabular: []float32{1, 2},
	}
}

func TestRecordHasWithout(t *testing.T) {
	r := fullRecord()
	for _, m := range Modalities {
		t.Run(m.String(), func(t *testing.T) {
			if !r.Has(m) {
				t.Fatalf("full record lacks %v", m)
			}
			w := r.Without(m)
			if w.Has(m) {
				t.Errorf("Without(%v) still has it", m)
			}
			for _, o := range Modalities {
				if o != m && !w.Has(o) {
					t.Errorf("Without(%v) lost %v", m, o)
				}
			}
			if !r.Has(m) {
				t.Errorf("Without(%v) changed the original", m)
			}
			if w.ID != r.ID || w.Label != r.Label {
				t.Errorf("Without(%v) changed id or label: %+v", m, w)
			}
		})
	}
	t.Run("out of range", func(t *testing.T) {
		if r.Has(Modality(7)) {
			t.Error("Has(7) = true")
		}
		w := r.Without(Modality(7))
		for _, m := range Modalities {
			if !w.Has(m) {
				t.Errorf("Without(7) removed %v", m)
			}
		}
	})
}

func TestRecordClone(t *testing.T) {
	r := fullRecord()
	c := r.Clone()
	c.Image.Pix[0] = 0.9
	c.Tabular[0] = 42
	if r.Image.Pix[0] != 0 || r.Tabular[0] != 1 {
		t.Fatalf("Clone shares memory with the original: %v %v", r.Image.Pix, r.Tabular)
	}
}

func validDataset() *Dataset {
	return &Dataset{
		Schema: Schema{Classes: []string{"a", "b"}, TabularFields: []string{"x", "y"}, ImageC: 1, ImageH: 2, ImageW: 2},
		Records: []Record{
			fullRecord(),
			{ID: "r2", Label: -1, Text: "only text"},
			{ID: "r3", Label: 0, Tabular: []float32{3, 4}},
		},
	}
}

func TestValidate(t *testing.T) {
	if err := validDataset().Validate(); err != nil {
		t.Fatalf("valid dataset: %v", err)
	}
	nan := float32(math.NaN())
	inf := float32(math.Inf(1))
	for _, tc := range []struct {
		name   string
		mutate func(d *Dataset)
		want   string
	}{
		{"label too big", func(d *Dataset) { d.Records[0].Label = 2 }, `"r1"): label 2 out of range`},
		{"label below -1", func(d *Dataset) { d.Records[1].Label = -2 }, `"r2"): label -2 out of range`},
		{"no modality", func(d *Dataset) { d.Records[1].Text = "" }, `"r2"): no modality`},
		{"empty id", func(d *Dataset) { d.Records[2].ID = "" }, "record 2: empty id"},
		{"duplicate id", func(d *Dataset) { d.Records[2].ID = "r1" }, `"r1"): id already used by record 0`},
		{"image dims", func(d *Dataset) { d.Records[0].Image = &ImageData{C: 1, H: 1, W: 4, Pix: make([]float32, 4)} }, "image is 1x1x4, schema says 1x2x2"},
		{"image pix len", func(d *Dataset) { d.Records[0].Image.Pix = d.Records[0].Image.Pix[:3] }, "3 pixel values, want 4"},
		{"pixel NaN", func(d *Dataset) { d.Records[0].Image.Pix[1] = nan }, "pixel value 1 is NaN"},
		{"pixel above 1", func(d *Dataset) { d.Records[0].Image.Pix[1] = 1.5 }, "outside [0, 1]"},
		{"image without schema dims", func(d *Dataset) { d.Schema.ImageC, d.Schema.ImageH, d.Schema.ImageW = 0, 0, 0 }, "schema has no image dimensions"},
		{"bad schema dims", func(d *Dataset) { d.Schema.ImageC = -1 }, "schema image dimensions"},
		{"tabular len", func(d *Dataset) { d.Records[2].Tabular = []float32{1} }, `"r3"): 1 tabular values, schema has 2 fields`},
		{"tabular NaN", func(d *Dataset) { d.Records[2].Tabular[1] = nan }, `tabular field "y" is NaN`},
		{"tabular Inf", func(d *Dataset) { d.Records[0].Tabular[0] = inf }, `tabular field "x" is +Inf`},
		{"duplicate class", func(d *Dataset) { d.Schema.Classes = []string{"a", "a"} }, `class "a" twice`},
		{"empty field name", func(d *Dataset) { d.Schema.TabularFields = []string{"x", ""} }, "empty tabular field name"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := validDataset()
			tc.mutate(d)
			err := d.Validate()
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("Validate() = %v, want error containing %q", err, tc.want)
			}
		})
	}
	t.Run("nil", func(t *testing.T) {
		var d *Dataset
		if err := d.Validate(); err == nil {
			t.Fatal("nil dataset validated")
		}
	})
}

func TestSubsetLabelsCounts(t *testing.T) {
	d := validDataset()
	s := d.Subset([]int{2, 0, 7, -1})
	if got := ids(s); !slices.Equal(got, []string{"r3", "r1"}) {
		t.Fatalf("Subset ids = %v, want [r3 r1] (out-of-range indices skipped)", got)
	}
	if err := s.Validate(); err != nil {
		t.Fatalf("subset: %v", err)
	}
	s.Records[0].Label = 1 // the record slice is the subset's own
	if d.Records[2].Label != 0 {
		t.Fatal("Subset shares the record slice")
	}
	if got := d.Labels(); !slices.Equal(got, []int{1, -1, 0}) {
		t.Fatalf("Labels() = %v", got)
	}
	if got := d.ModalityCounts(); got != [NumModalities]int{2, 1, 2} {
		t.Fatalf("ModalityCounts() = %v, want [2 1 2]", got)
	}
	var nilDS *Dataset
	if nilDS.Labels() != nil || nilDS.ModalityCounts() != [NumModalities]int{} || len(nilDS.Subset([]int{0}).Records) != 0 {
		t.Fatal("nil dataset methods misbehave")
	}
}

func ids(d *Dataset) []string {
	out := make([]string, len(d.Records))
	for i := range d.Records {
		out[i] = d.Records[i].ID
	}
	return out
}
