package dataset

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"fmt"
	"image"
	"image/draw"
	"image/png"
	"math"
	"slices"
	"strconv"
	"strings"
)

// pngDataPrefix may precede an inline image, as in a data URL.
const pngDataPrefix = "data:image/png;base64,"

// DecodeRecord decodes one record in the manifest's JSON form with its image inline, checked
// against a schema. It is the input of the inference service and of `fedweave predict`:
//
//	{"id":"r1","text":"free text","image":"iVBORw0KGgoAAAANSUhEUgAA...","tabular":{"age":41,"bmi":22.5}}
//
// The fields are those of a manifest line (see LoadManifest) with these differences:
//
//   - id is optional.
//   - image is a PNG file, base64-encoded (standard alphabet, with or without padding), with an
//     optional "data:image/png;base64," prefix. It must be exactly s.ImageW x s.ImageH pixels:
//     nothing is resized, so that what the model sees is what was sent. It is converted to gray
//     as LoadManifest does (8-bit gray values v become v/255, 16-bit ones v/65535, color by the
//     BT.601 luma, transparency composited onto black). EncodeRecord writes 16-bit gray.
//   - tabular must give exactly the schema's fields, each a finite float32.
//   - label, when given, must name one of s.Classes, as a string or as the decimal number a
//     numeric class is named by.
//
// Every problem is an error that says which field is wrong; unknown and repeated fields are
// errors. The record returned has at least one modality and passes the schema's checks of
// Dataset.Validate. Its Label is -1 when none was given.
func DecodeRecord(data []byte, s *Schema) (Record, error) {
	e, err := parseRecordObject(bytes.TrimSpace(data), true)
	if err != nil {
		return Record{}, err
	}
	r := Record{ID: e.id, Label: -1, Text: e.text}
	if e.label != "" {
		r.Label = slices.Index(s.Classes, e.label)
		if r.Label < 0 {
			return Record{}, fmt.Errorf("unknown class %q (the model's classes are %s)", e.label, listNames(s.Classes))
		}
	}
	if e.tabular != nil {
		if len(s.TabularFields) == 0 {
			return Record{}, fmt.Errorf(`field "tabular": the model reads no tabular fields`)
		}
		r.Tabular = make([]float32, len(s.TabularFields))
		for j, f := range s.TabularFields {
			v, ok := e.tabular[f]
			if !ok {
				return Record{}, fmt.Errorf("tabular field %q missing (a record with tabular fields needs all of %s)", f, listNames(s.TabularFields))
			}
			r.Tabular[j] = v
		}
		if len(e.tabular) != len(s.TabularFields) {
			for _, k := range sortedKeys(e.tabular) {
				if !slices.Contains(s.TabularFields, k) {
					return Record{}, fmt.Errorf("unknown tabular field %q (the model's fields are %s)", k, listNames(s.TabularFields))
				}
			}
		}
	}
	if e.image != "" {
		if r.Image, err = decodeInlineImage(e.image, s); err != nil {
			return Record{}, fmt.Errorf(`field "image": %w`, err)
		}
	}
	if !r.Has(Text) && !r.Has(Image) && !r.Has(Tabular) {
		return Record{}, fmt.Errorf("the record has no text, image or tabular fields")
	}
	if err := s.checkRecord(&r, s.ImageH > 0); err != nil {
		return Record{}, err
	}
	return r, nil
}

// listNames quotes up to eight names for an error message.
func listNames(names []string) string {
	if len(names) == 0 {
		return "none"
	}
	q := make([]string, 0, min(len(names), 9))
	for _, n := range names[:min(len(names), 8)] {
		q = append(q, strconv.Quote(n))
	}
	if len(names) > 8 {
		q = append(q, fmt.Sprintf("and %d more", len(names)-8))
	}
	return strings.Join(q, ", ")
}

// decodeInlineImage decodes a base64 PNG of exactly the schema's size.
func decodeInlineImage(b64 string, s *Schema) (*ImageData, error) {
	if s.ImageH == 0 {
		return nil, fmt.Errorf("the model reads no images")
	}
	if s.ImageC != 1 {
		return nil, fmt.Errorf("the model reads %d-channel images; inline images are gray", s.ImageC)
	}
	b64 = strings.TrimPrefix(b64, pngDataPrefix)
	raw, err := base64.StdEncoding.DecodeString(b64)
	if err != nil {
		var err2 error
		if raw, err2 = base64.RawStdEncoding.DecodeString(b64); err2 != nil {
			return nil, fmt.Errorf("want a base64-encoded PNG: %v", err)
		}
	}
	cfg, format, err := image.DecodeConfig(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("want a base64-encoded PNG: %v", err)
	}
	if format != "png" {
		return nil, fmt.Errorf("the image is %s, want PNG", format)
	}
	if cfg.Width != s.ImageW || cfg.Height != s.ImageH {
		return nil, fmt.Errorf("the image is %dx%d pixels, the model wants %dx%d", cfg.Width, cfg.Height, s.ImageW, s.ImageH)
	}
	src, err := png.Decode(bytes.NewReader(raw))
	if err != nil {
		return nil, fmt.Errorf("decode PNG: %v", err)
	}
	b := src.Bounds()
	pix := make([]float32, b.Dx()*b.Dy())
	switch im := src.(type) {
	case *image.Gray:
		for y := range b.Dy() {
			for x := range b.Dx() {
				pix[y*b.Dx()+x] = float32(im.GrayAt(b.Min.X+x, b.Min.Y+y).Y) / 255
			}
		}
	case *image.Gray16:
		for y := range b.Dy() {
			for x := range b.Dx() {
				pix[y*b.Dx()+x] = float32(im.Gray16At(b.Min.X+x, b.Min.Y+y).Y) / 65535
			}
		}
	default:
		rgba := image.NewRGBA(image.Rect(0, 0, b.Dx(), b.Dy()))
		draw.Draw(rgba, rgba.Bounds(), src, b.Min, draw.Src)
		for i := range pix {
			p := rgba.Pix[4*i : 4*i+3 : 4*i+3]
			y := (0.299*float32(p[0]) + 0.587*float32(p[1]) + 0.114*float32(p[2])) / 255
			pix[i] = min(max(y, 0), 1)
		}
	}
	return &ImageData{C: 1, H: b.Dy(), W: b.Dx(), Pix: pix}, nil
}

// EncodeImagePNG encodes a one-channel image as a 16-bit gray PNG, the inline form
// DecodeRecord reads back to within 1/131070 of every pixel.
func EncodeImagePNG(im *ImageData) ([]byte, error) {
	if im == nil || im.C != 1 || im.H < 1 || im.W < 1 || len(im.Pix) != im.H*im.W {
		return nil, fmt.Errorf("dataset: only whole one-channel images can be encoded as PNG")
	}
	g := image.NewGray16(image.Rect(0, 0, im.W, im.H))
	for i, v := range im.Pix {
		u := uint16(math.Round(float64(min(max(v, 0), 1)) * 65535))
		g.Pix[2*i], g.Pix[2*i+1] = byte(u>>8), byte(u)
	}
	var buf bytes.Buffer
	if err := png.Encode(&buf, g); err != nil {
		return nil, fmt.Errorf("dataset: encode PNG: %w", err)
	}
	return buf.Bytes(), nil
}

// EncodeRecord writes r in the form DecodeRecord reads, with the image inline and the tabular
// fields named by s. The label is written when it is known.
func EncodeRecord(r *Record, s *Schema) ([]byte, error) {
	type inline struct {
		ID      string             `json:"id,omitempty"`
		Label   string             `json:"label,omitempty"`
		Text    string             `json:"text,omitempty"`
		Image   string             `json:"image,omitempty"`
		Tabular map[string]float32 `json:"tabular,omitempty"`
	}
	out := inline{ID: r.ID, Text: r.Text}
	if r.Label >= 0 && r.Label < len(s.Classes) {
		out.Label = s.Classes[r.Label]
	}
	if r.Image != nil {
		b, err := EncodeImagePNG(r.Image)
		if err != nil {
			return nil, err
		}
		out.Image = base64.StdEncoding.EncodeToString(b)
	}
	if r.Tabular != nil {
		if len(r.Tabular) != len(s.TabularFields) {
			return nil, fmt.Errorf("dataset: record %q has %d tabular values, the schema %d fields", r.ID, len(r.Tabular), len(s.TabularFields))
		}
		out.Tabular = make(map[string]float32, len(r.Tabular))
		for j, f := range s.TabularFields {
			out.Tabular[f] = r.Tabular[j]
		}
	}
	return json.Marshal(out)
}
