package dataset

import (
	"fmt"
	"math"
	"slices"
	"strings"
)

// Modality names one of the three kinds of input a record can carry.
type Modality int

// The modalities, in the order used by every per-modality array in fedweave
// (parameter segments, presence masks, [Availability]).
const (
	Text Modality = iota
	Image
	Tabular
)

// NumModalities is the number of modalities; [Modality] values are in [0, NumModalities).
const NumModalities = 3

// Modalities lists every modality in index order, for range loops.
var Modalities = [NumModalities]Modality{Text, Image, Tabular}

var modalityNames = [NumModalities]string{"text", "image", "tabular"}

// String returns "text", "image" or "tabular", and "Modality(N)" for a value
// out of range.
func (m Modality) String() string {
	if m.valid() {
		return modalityNames[m]
	}
	return fmt.Sprintf("Modality(%d)", int(m))
}

func (m Modality) valid() bool { return m >= 0 && m < NumModalities }

// ParseModality is the inverse of [Modality.String]. It ignores case and
// surrounding space.
func ParseModality(s string) (Modality, error) {
	name := strings.ToLower(strings.TrimSpace(s))
	for _, m := range Modalities {
		if modalityNames[m] == name {
			return m, nil
		}
	}
	return 0, fmt.Errorf("dataset: unknown modality %q (want text, image or tabular)", s)
}

// ImageData is a decoded image: C channels of H rows of W pixels, stored
// channel-major (CHW), with every value in [0, 1].
//
// It is not called Image because that name is the [Image] modality.
type ImageData struct {
	C, H, W int
	Pix     []float32 // len C*H*W; Pix[(c*H+y)*W+x]
}

// Record is one sample: an id, a label and up to three modalities. A modality
// is absent when its field holds the zero value ("" text, nil image, nil
// tabular).
//
// Records are small values that are copied freely; the pixel and tabular
// slices they point to are shared by those copies (see [Record.Clone]) and
// must be treated as read-only once a record is in a [Dataset].
type Record struct {
	ID      string
	Label   int        // index into Schema.Classes; -1 when unknown
	Text    string     // "" when the record has no text
	Image   *ImageData // nil when the record has no image
	Tabular []float32  // nil when the record has no tabular fields; else len == len(Schema.TabularFields)
}

// Has reports whether the record carries modality m. It is false for a
// modality out of range.
func (r *Record) Has(m Modality) bool {
	switch m {
	case Text:
		return r.Text != ""
	case Image:
		return r.Image != nil
	case Tabular:
		return r.Tabular != nil
	}
	return false
}

// Without returns a copy of the record with modality m removed. Removing the
// field from the copy leaves r untouched; the remaining modalities' pixel
// and tabular slices are shared with r, as everywhere in this package. A
// modality out of range removes nothing.
func (r *Record) Without(m Modality) Record {
	c := *r
	switch m {
	case Text:
		c.Text = ""
	case Image:
		c.Image = nil
	case Tabular:
		c.Tabular = nil
	}
	return c
}

// Clone returns a deep copy of the record that shares no memory with r.
func (r *Record) Clone() Record {
	c := *r
	if r.Image != nil {
		img := *r.Image
		img.Pix = slices.Clone(r.Image.Pix)
		c.Image = &img
	}
	if r.Tabular != nil {
		c.Tabular = slices.Clone(r.Tabular)
	}
	return c
}

// Schema describes what the records of a [Dataset] may hold.
//
// Its slices are shared by every dataset derived from the same source
// (Subset, Split, ApplyAvailability) and must not be modified.
type Schema struct {
	// Classes names the labels: Record.Label indexes it.
	Classes []string
	// TabularFields names the entries of Record.Tabular, in order.
	TabularFields []string
	// ImageC, ImageH and ImageW are the dimensions every image has; all
	// three are 0 when the data set has no images.
	ImageC, ImageH, ImageW int
}

// Dataset is a schema and the records that follow it.
type Dataset struct {
	Schema  Schema
	Records []Record
}

// Validate checks the invariants consumers of a dataset rely on:
//
//   - the schema's class and field names are non-empty and unique, and its
//     image dimensions are all zero or all positive;
//   - every record has a non-empty id, unique within the dataset;
//   - every label is -1 or indexes Schema.Classes;
//   - every record has at least one modality;
//   - every image has the schema's dimensions, len(Pix) == C*H*W and every
//     pixel in [0, 1];
//   - every tabular slice has one finite value per schema field.
//
// The error names the first offending record by index and id.
func (d *Dataset) Validate() error {
	if d == nil {
		return fmt.Errorf("dataset: nil dataset")
	}
	s := &d.Schema
	if err := checkNames("class", s.Classes); err != nil {
		return err
	}
	if err := checkNames("tabular field", s.TabularFields); err != nil {
		return err
	}
	hasImages := s.ImageC != 0 || s.ImageH != 0 || s.ImageW != 0
	if hasImages {
		if _, ok := imageLen(s.ImageC, s.ImageH, s.ImageW); !ok {
			return fmt.Errorf("dataset: schema image dimensions %dx%dx%d are invalid", s.ImageC, s.ImageH, s.ImageW)
		}
	}
	ids := make(map[string]int, len(d.Records))
	for i := range d.Records {
		r := &d.Records[i]
		if r.ID == "" {
			return fmt.Errorf("dataset: record %d: empty id", i)
		}
		if j, dup := ids[r.ID]; dup {
			return fmt.Errorf("dataset: record %d (id %q): id already used by record %d", i, r.ID, j)
		}
		ids[r.ID] = i
		if err := s.checkRecord(r, hasImages); err != nil {
			return fmt.Errorf("dataset: record %d (id %q): %w", i, r.ID, err)
		}
	}
	return nil
}

func (s *Schema) checkRecord(r *Record, hasImages bool) error {
	if r.Label < -1 || r.Label >= len(s.Classes) {
		return fmt.Errorf("label %d out of range [-1, %d)", r.Label, len(s.Classes))
	}
	if !r.Has(Text) && !r.Has(Image) && !r.Has(Tabular) {
		return fmt.Errorf("no modality")
	}
	if img := r.Image; img != nil {
		if !hasImages {
			return fmt.Errorf("has an image but the schema has no image dimensions")
		}
		if img.C != s.ImageC || img.H != s.ImageH || img.W != s.ImageW {
			return fmt.Errorf("image is %dx%dx%d, schema says %dx%dx%d", img.C, img.H, img.W, s.ImageC, s.ImageH, s.ImageW)
		}
		if n, _ := imageLen(img.C, img.H, img.W); len(img.Pix) != n {
			return fmt.Errorf("image has %d pixel values, want %d", len(img.Pix), n)
		}
		for j, v := range img.Pix {
			if !(v >= 0 && v <= 1) {
				return fmt.Errorf("pixel value %d is %v, outside [0, 1]", j, v)
			}
		}
	}
	if r.Tabular != nil {
		if len(r.Tabular) != len(s.TabularFields) {
			return fmt.Errorf("%d tabular values, schema has %d fields", len(r.Tabular), len(s.TabularFields))
		}
		for j, v := range r.Tabular {
			if !finite32(v) {
				return fmt.Errorf("tabular field %q is %v", s.TabularFields[j], v)
			}
		}
	}
	return nil
}

func checkNames(what string, names []string) error {
	seen := make(map[string]bool, len(names))
	for _, n := range names {
		if n == "" {
			return fmt.Errorf("dataset: schema has an empty %s name", what)
		}
		if seen[n] {
			return fmt.Errorf("dataset: schema has %s %q twice", what, n)
		}
		seen[n] = true
	}
	return nil
}

// imageLen returns c*h*w when all three are positive and the product fits
// comfortably in an int.
func imageLen(c, h, w int) (int, bool) {
	const max = 1 << 40
	if c <= 0 || h <= 0 || w <= 0 || c > max || h > max || w > max {
		return 0, false
	}
	n := int64(c) * int64(h)
	if n > max/int64(w) {
		return 0, false
	}
	return int(n * int64(w)), true
}

func finite32(v float32) bool {
	return !math.IsNaN(float64(v)) && !math.IsInf(float64(v), 0)
}

// Subset returns a dataset with the same schema and the records at the given
// indices, in that order. The record slice is new; the records' payloads
// are shared with d. Indices outside [0, len(d.Records)) are skipped. A
// repeated index repeats the record, and such a subset fails Validate
// because its ids are no longer unique.
func (d *Dataset) Subset(idx []int) *Dataset {
	if d == nil {
		return &Dataset{}
	}
	out := &Dataset{Schema: d.Schema, Records: make([]Record, 0, len(idx))}
	for _, i := range idx {
		if i >= 0 && i < len(d.Records) {
			out.Records = append(out.Records, d.Records[i])
		}
	}
	return out
}

// Labels returns a new slice with the label of every record, in order.
func (d *Dataset) Labels() []int {
	if d == nil {
		return nil
	}
	labels := make([]int, len(d.Records))
	for i := range d.Records {
		labels[i] = d.Records[i].Label
	}
	return labels
}

// ModalityCounts returns how many records carry each modality, indexed by
// [Modality].
func (d *Dataset) ModalityCounts() [NumModalities]int {
	var n [NumModalities]int
	if d == nil {
		return n
	}
	for i := range d.Records {
		for _, m := range Modalities {
			if d.Records[i].Has(m) {
				n[m]++
			}
		}
	}
	return n
}
