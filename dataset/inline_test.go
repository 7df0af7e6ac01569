package dataset

import (
	"encoding/base64"
	"image/color"
	"math"
	"slices"
	"strings"
	"testing"
)

func syntheticSchema() *Schema {
	return &Synthetic(SyntheticConfig{N: 1, Seed: 1}).Schema
}

func TestDecodeRecordRoundTrip(t *testing.T) {
	d := Synthetic(SyntheticConfig{N: 20, Seed: 3})
	s := &d.Schema
	for i, r := range d.Records {
		switch i % 4 {
		case 1:
			r = r.Without(Image)
		case 2:
			r = r.Without(Text)
			r = r.Without(Tabular)
		case 3:
			r.Label = -1
		}
		b, err := EncodeRecord(&r, s)
		if err != nil {
			t.Fatal(err)
		}
		got, err := DecodeRecord(b, s)
		if err != nil {
			t.Fatalf("record %d: %v\n%s", i, err, b)
		}
		if got.ID != r.ID || got.Label != r.Label || got.Text != r.Text || !slices.Equal(got.Tabular, r.Tabular) || got.Has(Image) != r.Has(Image) {
			t.Fatalf("record %d: got %+v, want %+v", i, got, r)
		}
		if r.Image != nil {
			for p, v := range r.Image.Pix {
				if math.Abs(float64(got.Image.Pix[p]-v)) > 1.0/131070+1e-7 {
					t.Fatalf("record %d: pixel %d is %v, want %v", i, p, got.Image.Pix[p], v)
				}
			}
		}
	}
}

func TestDecodeRecordImageForms(t *testing.T) {
	s := &Schema{Classes: []string{"a", "b"}, ImageC: 1, ImageH: 3, ImageW: 5}
	for name, b := range map[string][]byte{
		"rgba":  pngBytes(t, solid(5, 3, color.NRGBA{10, 200, 30, 255})),
		"gray8": pngBytes(t, solid(5, 3, color.Gray{128})),
	} {
		for _, form := range []string{base64.StdEncoding.EncodeToString(b), base64.RawStdEncoding.EncodeToString(b), "data:image/png;base64," + base64.StdEncoding.EncodeToString(b)} {
			r, err := DecodeRecord([]byte(`{"image":"`+form+`"}`), s)
			if err != nil {
				t.Fatalf("%s: %v", name, err)
			}
			if r.Image.H != 3 || r.Image.W != 5 || r.ID != "" || r.Label != -1 {
				t.Fatalf("%s: %+v", name, r)
			}
		}
	}
	r, _ := DecodeRecord([]byte(`{"image":"`+base64.StdEncoding.EncodeToString(pngBytes(t, solid(5, 3, color.Gray{51})))+`"}`), s)
	if got := r.Image.Pix[7]; math.Abs(float64(got)-0.2) > 1e-6 {
		t.Errorf("gray 51 became %v, want 0.2", got)
	}
}

func TestDecodeRecordErrors(t *testing.T) {
	s := syntheticSchema()
	png16 := base64.StdEncoding.EncodeToString(pngBytes(t, solid(16, 16, color.Gray{1})))
	png8 := base64.StdEncoding.EncodeToString(pngBytes(t, solid(8, 8, color.Gray{1})))
	jpg := base64.StdEncoding.EncodeToString(jpegBytes(t, solid(16, 16, color.Gray{1})))
	tab := `"tabular":{"age":1,"income":2,"score_a":3,"score_b":4,"visits":5,"ratio":6}`
	for _, tc := range []struct{ name, in, want string }{
		{"empty", ``, "invalid JSON"},
		{"not an object", `[1]`, "want a JSON object, got an array"},
		{"unknown field", `{"text":"x","colour":"red"}`, `unknown field "colour"`},
		{"twice", `{"text":"x","text":"y"}`, `field "text" given twice`},
		{"trailing", `{"text":"x"} {}`, "unexpected data after the JSON object"},
		{"no modality", `{"id":"r"}`, "no text, image or tabular"},
		{"unknown class", `{"label":"oak","text":"x"}`, `unknown class "oak"`},
		{"numeric label", `{"label":2,"text":"x"}`, `unknown class "2"`},
		{"NaN", `{"tabular":{"age":NaN}}`, "invalid JSON"},
		{"NaN string", `{"tabular":{"age":"NaN"}}`, `tabular field "age": want a number, got a string`},
		{"out of range", `{"tabular":{"age":1e39}}`, "out of float32 range"},
		{"missing field", `{"tabular":{"age":1}}`, `tabular field "income" missing`},
		{"unknown tabular field", `{` + strings.TrimSuffix(tab, "}") + `,"bmi":1}}`, `unknown tabular field "bmi"`},
		{"wrong size", `{"image":"` + png8 + `"}`, "the image is 8x8 pixels, the model wants 16x16"},
		{"jpeg", `{"image":"` + jpg + `"}`, "the image is jpeg, want PNG"},
		{"not base64", `{"image":"%%%"}`, "want a base64-encoded PNG"},
		{"not an image", `{"image":"aGVsbG8="}`, "want a base64-encoded PNG"},
		{"image number", `{"image":5}`, `field "image": want a string, got a number`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := DecodeRecord([]byte(tc.in), s)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("got %v, want an error containing %q", err, tc.want)
			}
		})
	}
	if _, err := DecodeRecord([]byte(`{"label":"amber","image":"`+png16+`",`+tab+`}`), s); err != nil {
		t.Fatalf("a good record: %v", err)
	}
	noImages := &Schema{Classes: []string{"a"}}
	if _, err := DecodeRecord([]byte(`{"image":"`+png16+`"}`), noImages); err == nil || !strings.Contains(err.Error(), "reads no images") {
		t.Fatalf("image for a model without images: %v", err)
	}
}

// FuzzDecodeRecord: DecodeRecord never panics, and what it accepts is a valid record of the
// schema that survives EncodeRecord and DecodeRecord again.
func FuzzDecodeRecord(f *testing.F) {
	s := syntheticSchema()
	d := Synthetic(SyntheticConfig{N: 2, Seed: 1})
	for i := range d.Records {
		b, err := EncodeRecord(&d.Records[i], s)
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte(`{"text":"x","label":"cedar"}`))
	f.Add([]byte(`{"tabular":{"age":1e39}}`))
	f.Add([]byte(`{"image":"data:image/png;base64,iVBORw0KGgo="}`))
	f.Fuzz(func(t *testing.T, in []byte) {
		r, err := DecodeRecord(in, s)
		if err != nil {
			return
		}
		one := &Dataset{Schema: *s, Records: []Record{r}}
		if r.ID == "" {
			one.Records[0].ID = "x"
		}
		if err := one.Validate(); err != nil {
			t.Fatalf("accepted an invalid record: %v", err)
		}
		b, err := EncodeRecord(&r, s)
		if err != nil {
			t.Fatal(err)
		}
		again, err := DecodeRecord(b, s)
		if err != nil {
			t.Fatalf("re-encoded record refused: %v\n%s", err, b)
		}
		if again.Label != r.Label || again.Text != r.Text || !slices.Equal(again.Tabular, r.Tabular) || again.Has(Image) != r.Has(Image) {
			t.Fatalf("round trip changed the record")
		}
	})
}
