package dataset

import (
	"bytes"
	"encoding/binary"
	"fmt"
	"hash/crc32"
	"image"
	"image/color"
	"image/gif"
	"image/jpeg"
	"image/png"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
)

// solid returns a w x h image of one color.
func solid(w, h int, c color.Color) *image.NRGBA {
	img := image.NewNRGBA(image.Rect(0, 0, w, h))
	for y := range h {
		for x := range w {
			img.Set(x, y, c)
		}
	}
	return img
}

func writeFile(t testing.TB, path string, data []byte) {
	t.Helper()
	if err := os.MkdirAll(filepath.Dir(path), 0o755); err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(path, data, 0o644); err != nil {
		t.Fatal(err)
	}
}

func pngBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := png.Encode(&b, img); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

func jpegBytes(t testing.TB, img image.Image) []byte {
	t.Helper()
	var b bytes.Buffer
	if err := jpeg.Encode(&b, img, &jpeg.Options{Quality: 95}); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// pngHeader returns the start of a PNG (signature and IHDR, correctly
// checksummed) that claims w x h pixels and has no image data.
func pngHeader(w, h uint32) []byte {
	var b bytes.Buffer
	b.WriteString("\x89PNG\r\n\x1a\n")
	ihdr := make([]byte, 13)
	binary.BigEndian.PutUint32(ihdr[0:], w)
	binary.BigEndian.PutUint32(ihdr[4:], h)
	ihdr[8], ihdr[9] = 8, 0 // 8-bit grayscale
	binary.Write(&b, binary.BigEndian, uint32(len(ihdr)))
	chunk := append([]byte("IHDR"), ihdr...)
	b.Write(chunk)
	binary.Write(&b, binary.BigEndian, crc32.ChecksumIEEE(chunk))
	return b.Bytes()
}

func luma(r, g, b float64) float64 { return (0.299*r + 0.587*g + 0.114*b) / 255 }

func TestLoadManifest(t *testing.T) {
	dir := t.TempDir()
	writeFile(t, filepath.Join(dir, "imgs", "r1.png"), pngBytes(t, solid(8, 8, color.NRGBA{200, 100, 50, 255})))
	writeFile(t, filepath.Join(dir, "imgs", "r2.jpg"), jpegBytes(t, solid(16, 12, color.NRGBA{128, 128, 128, 255})))
	manifest := "\ufeff# partner A, export of 2025-11-02\r\n" +
		`{"id":"r1","label":"cat","text":"A cat sat","image":"imgs/r1.png","tabular":{"bmi":22.5,"age":41}}` + "\r\n" +
		"\n" +
		`   {"id":"r2","label":"dog","image":"imgs/r2.jpg"}` + "\n" +
		`{"id":"r3","label":7,"text":"seven"}` + "\n" +
		`{"id":"r4","text":"no label","label":null}` + "\n" +
		`{"id":"r5","label":"cat"}` // no final newline; tabular from the CSV
	path := filepath.Join(dir, "manifest.jsonl")
	writeFile(t, path, []byte(manifest))
	csvPath := filepath.Join(dir, "tab.csv")
	writeFile(t, csvPath, []byte("id, bmi ,age\nr5, 19.5, 30\n"))

	d, err := LoadManifest(path, ManifestOptions{ImageSize: 4, TabularCSV: csvPath})
	if err != nil {
		t.Fatal(err)
	}
	if err := d.Validate(); err != nil {
		t.Fatal(err)
	}
	wantSchema := Schema{Classes: []string{"7", "cat", "dog"}, TabularFields: []string{"age", "bmi"}, ImageC: 1, ImageH: 4, ImageW: 4}
	if !slices.Equal(d.Schema.Classes, wantSchema.Classes) || !slices.Equal(d.Schema.TabularFields, wantSchema.TabularFields) ||
		d.Schema.ImageC != 1 || d.Schema.ImageH != 4 || d.Schema.ImageW != 4 {
		t.Fatalf("schema = %+v, want %+v", d.Schema, wantSchema)
	}
	if got := ids(d); !slices.Equal(got, []string{"r1", "r2", "r3", "r4", "r5"}) {
		t.Fatalf("ids = %v", got)
	}
	if got := d.Labels(); !slices.Equal(got, []int{1, 2, 0, -1, 1}) {
		t.Fatalf("labels = %v", got)
	}
	if got := d.ModalityCounts(); got != [NumModalities]int{3, 2, 2} {
		t.Fatalf("modality counts = %v", got)
	}
	r1, r2, r5 := d.Records[0], d.Records[1], d.Records[4]
	if !slices.Equal(r1.Tabular, []float32{41, 22.5}) || !slices.Equal(r5.Tabular, []float32{30, 19.5}) {
		t.Fatalf("tabular r1 = %v, r5 = %v", r1.Tabular, r5.Tabular)
	}
	if r1.Text != "A cat sat" || d.Records[1].Text != "" {
		t.Fatalf("texts = %q, %q", r1.Text, d.Records[1].Text)
	}
	for _, tc := range []struct {
		name string
		img  *ImageData
		want float64
		tol  float64
	}{
		{"png", r1.Image, luma(200, 100, 50), 0.01},
		{"jpeg", r2.Image, 128.0 / 255, 0.03},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if tc.img == nil || tc.img.C != 1 || tc.img.H != 4 || tc.img.W != 4 || len(tc.img.Pix) != 16 {
				t.Fatalf("image = %+v", tc.img)
			}
			for i, v := range tc.img.Pix {
				if math.Abs(float64(v)-tc.want) > tc.tol {
					t.Fatalf("pixel %d = %v, want %v ± %v", i, v, tc.want, tc.tol)
				}
			}
		})
	}
}

func TestLoadManifestClasses(t *testing.T) {
	dir := t.TempDir()
	path := filepath.Join(dir, "m.jsonl")
	writeFile(t, path, []byte(`{"id":"a","label":10,"text":"x"}
{"id":"b","label":"9","text":"x"}
{"id":"c","label":2e0,"text":"x"}
`))
	for _, tc := range []struct {
		name        string
		opt         ManifestOptions
		wantClasses []string
		wantLabels  []int
	}{
		{"numeric sort", ManifestOptions{}, []string{"2", "9", "10"}, []int{2, 1, 0}},
		{"fixed classes", ManifestOptions{Classes: []string{"10", "9", "2", "unused"}}, []string{"10", "9", "2", "unused"}, []int{0, 1, 2}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, err := LoadManifest(path, tc.opt)
			if err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(d.Schema.Classes, tc.wantClasses) || !slices.Equal(d.Labels(), tc.wantLabels) {
				t.Fatalf("classes %v labels %v, want %v %v", d.Schema.Classes, d.Labels(), tc.wantClasses, tc.wantLabels)
			}
			if d.Schema.ImageC != 0 || d.Schema.TabularFields != nil {
				t.Fatalf("schema has images or fields: %+v", d.Schema)
			}
		})
	}
}

func TestLoadManifestOptions(t *testing.T) {
	path := filepath.Join(t.TempDir(), "m.jsonl")
	writeFile(t, path, []byte(`{"id":"a","text":"x"}`))
	for _, tc := range []struct {
		name string
		opt  ManifestOptions
		want string
	}{
		{"negative size", ManifestOptions{ImageSize: -1}, "image size -1 out of range"},
		{"huge size", ManifestOptions{ImageSize: 1 << 20}, "out of range"},
		{"duplicate class", ManifestOptions{Classes: []string{"a", "a"}}, `class "a" listed twice`},
		{"empty class", ManifestOptions{Classes: []string{""}}, "empty class name"},
		{"missing csv", ManifestOptions{TabularCSV: filepath.Join(t.TempDir(), "nope.csv")}, "no such file"},
		{"missing manifest", ManifestOptions{}, ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			p := path
			if tc.want == "" {
				p, tc.want = path+".nope", "no such file"
			}
			_, err := LoadManifest(p, tc.opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
		})
	}
}

func TestLoadManifestErrors(t *testing.T) {
	const csvName = "tab.csv"
	ok := `{"id":"r1","label":"cat","text":"x"}`
	type tc struct {
		name     string
		manifest string
		csv      string // written to tab.csv and used when non-empty
		opt      ManifestOptions
		inCSV    bool // the error is about the CSV file
		line     int  // 0: "path: " without a line
		want     string
	}
	cases := []tc{
		{name: "bad JSON", manifest: ok + "\n" + `{"id":"r2",`, line: 2, want: "invalid JSON"},
		{name: "bad JSON token", manifest: `{"id" "r1"}`, line: 1, want: "invalid JSON at byte"},
		{name: "not an object", manifest: `["r1"]`, line: 1, want: "want a JSON object, got an array"},
		{name: "unknown field", manifest: `{"id":"r1","lable":"cat","text":"x"}`, line: 1, want: `unknown field "lable"`},
		{name: "field name case", manifest: `{"ID":"r1","text":"x"}`, line: 1, want: `unknown field "ID"`},
		{name: "field twice", manifest: `{"id":"r1","text":"a","text":"b"}`, line: 1, want: `field "text" given twice`},
		{name: "trailing data", manifest: ok + ` {}`, line: 1, want: "unexpected data after the JSON object"},
		{name: "missing id", manifest: `{"text":"x"}`, line: 1, want: `missing or empty "id"`},
		{name: "id not a string", manifest: `{"id":5,"text":"x"}`, line: 1, want: `field "id": want a string, got a number`},
		{name: "duplicate id", manifest: ok + "\n# c\n" + ok, line: 3, want: `duplicate id "r1", first used on line 1`},
		{name: "label bool", manifest: `{"id":"r1","label":true,"text":"x"}`, line: 1, want: "want a string or a number, got a boolean"},
		{name: "label fraction", manifest: `{"id":"r1","label":3.5,"text":"x"}`, line: 1, want: "3.5 is not a non-negative integer"},
		{name: "label negative", manifest: `{"id":"r1","label":-1,"text":"x"}`, line: 1, want: "-1 is not a non-negative integer"},
		{name: "label empty", manifest: `{"id":"r1","label":"","text":"x"}`, line: 1, want: `"label": empty string`},
		{name: "unknown class", manifest: ok + "\n" + `{"id":"r2","label":"cow","text":"x"}`, opt: ManifestOptions{Classes: []string{"cat", "dog"}}, line: 2, want: `unknown class "cow"`},
		{name: "no modality", manifest: `{"id":"r1","label":"cat","text":""}`, line: 1, want: "has no text, image or tabular fields"},
		{name: "missing image file", manifest: `{"id":"r1","image":"imgs/nope.png"}`, line: 1, want: "no such file"},
		{name: "absolute image path", manifest: `{"id":"r1","image":"/etc/passwd"}`, line: 1, want: "is absolute"},
		{name: "dot-dot escape", manifest: `{"id":"r1","image":"../x.png"}`, line: 1, want: "escapes the manifest's directory"},
		{name: "inner dot-dot escape", manifest: `{"id":"r1","image":"imgs/../../x.png"}`, line: 1, want: "escapes the manifest's directory"},
		{name: "symlink escape", manifest: `{"id":"r1","image":"imgs/link.png"}`, line: 1, want: "escapes"},
		{name: "empty image path", manifest: `{"id":"r1","image":""}`, line: 1, want: "empty path"},
		{name: "image is a directory", manifest: `{"id":"r1","image":"imgs"}`, line: 1, want: "not a regular file"},
		{name: "not an image", manifest: `{"id":"r1","image":"imgs/text.png"}`, line: 1, want: "decode: image: unknown format"},
		{name: "gif image", manifest: `{"id":"r1","image":"imgs/a.gif"}`, line: 1, want: `unsupported image format "gif"`},
		{name: "huge image header", manifest: `{"id":"r1","image":"imgs/huge.png"}`, line: 1, want: "more than the limit"},
		{name: "image larger than its file", manifest: `{"id":"r1","image":"imgs/claims.png"}`, line: 1, want: "but the file has only"},
		{name: "truncated png", manifest: `{"id":"r1","image":"imgs/cut.png"}`, line: 1, want: "decode png"},
		{name: "tabular not object", manifest: `{"id":"r1","tabular":[1,2]}`, line: 1, want: "want an object of numbers, got an array"},
		{name: "tabular string value", manifest: `{"id":"r1","tabular":{"age":"41"}}`, line: 1, want: `tabular field "age": want a number, got a string`},
		{name: "tabular empty", manifest: `{"id":"r1","text":"x","tabular":{}}`, line: 1, want: `"tabular": empty object`},
		{name: "tabular field twice", manifest: `{"id":"r1","tabular":{"age":1,"age":2}}`, line: 1, want: `tabular field "age" given twice`},
		{name: "missing tabular field", manifest: `{"id":"r1","tabular":{"age":1,"bmi":2}}` + "\n" + `{"id":"r2","tabular":{"age":3}}`, line: 2, want: `tabular field "bmi" missing`},
		{name: "non-finite float32", manifest: `{"id":"r1","tabular":{"age":1e39}}`, line: 1, want: `tabular field "age": 1e39 is out of float32 range`},
		{name: "non-finite float64", manifest: `{"id":"r1","tabular":{"age":-1e400}}`, line: 1, want: "out of float32 range"},
		{name: "NaN literal", manifest: `{"id":"r1","tabular":{"age":NaN}}`, line: 1, want: "invalid JSON"},
		{name: "line too long", manifest: ok + "\n" + `{"id":"r2","text":"` + strings.Repeat("a", MaxManifestLine) + `"}`, line: 2, want: "line longer than 1048576 bytes"},
		{name: "no records", manifest: "# nothing\n\n", line: 0, want: "no records"},
		{name: "csv bad number", manifest: ok, csv: "id,age\nr1,4o\n", inCSV: true, line: 2, want: `column "age": "4o" is not a number`},
		{name: "csv NaN", manifest: ok, csv: "id,age\nr1,NaN\n", inCSV: true, line: 2, want: `column "age": NaN is not a finite number`},
		{name: "csv empty cell", manifest: ok, csv: "id,age,bmi\nr1,,3\n", inCSV: true, line: 2, want: `column "age": empty value`},
		{name: "csv overflow", manifest: ok, csv: "id,age\nr1,1e39\n", inCSV: true, line: 2, want: "out of float32 range"},
		{name: "csv unknown id", manifest: ok, csv: "id,age\nr1,1\nzz,2\n", inCSV: true, line: 3, want: `id "zz" is not in the manifest`},
		{name: "csv duplicate id", manifest: ok, csv: "id,age\nr1,1\nr1,2\n", inCSV: true, line: 3, want: `id "r1" already used on line 2`},
		{name: "csv first column", manifest: ok, csv: "key,age\nr1,1\n", inCSV: true, line: 1, want: `first column is "key", want "id"`},
		{name: "csv only id", manifest: ok, csv: "id\nr1\n", inCSV: true, line: 1, want: "no value columns"},
		{name: "csv duplicate column", manifest: ok, csv: "id,age,age\nr1,1,2\n", inCSV: true, line: 1, want: `column "age" appears twice`},
		{name: "csv field count", manifest: ok, csv: "id,age\nr1,1,2\n", inCSV: true, line: 2, want: "wrong number of fields"},
		{name: "csv bad quote", manifest: ok, csv: "id,age\n\"r1,1\n", inCSV: true, line: 2, want: "extraneous or missing"},
		{name: "csv empty", manifest: ok, csv: "\n", inCSV: true, line: 1, want: "empty file"},
		{name: "csv lacks json field", manifest: `{"id":"r1","tabular":{"bmi":1}}` + "\n" + `{"id":"r2","text":"x"}`, csv: "id,age\nr2,1\n", inCSV: true, line: 1, want: `no column "bmi"`},
		{name: "json lacks csv field", manifest: `{"id":"r1","tabular":{"bmi":1}}` + "\n" + `{"id":"r2","text":"x"}`, csv: "id,age,bmi\nr2,1,2\n", line: 1, want: `tabular field "age" missing`},
		{name: "json and csv", manifest: `{"id":"r1","tabular":{"age":1}}`, csv: "id,age\nr1,2\n", line: 1, want: "has tabular fields here and a row at"},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			dir := t.TempDir()
			outside := filepath.Join(t.TempDir(), "outside.png")
			writeFile(t, outside, pngBytes(t, solid(2, 2, color.White)))
			writeFile(t, filepath.Join(dir, "imgs", "ok.png"), pngBytes(t, solid(2, 2, color.White)))
			if err := os.Symlink(outside, filepath.Join(dir, "imgs", "link.png")); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "imgs", "text.png"), []byte("not an image at all"))
			var g bytes.Buffer
			if err := gif.Encode(&g, solid(2, 2, color.White), nil); err != nil {
				t.Fatal(err)
			}
			writeFile(t, filepath.Join(dir, "imgs", "a.gif"), g.Bytes())
			writeFile(t, filepath.Join(dir, "imgs", "huge.png"), pngHeader(60000, 60000))
			writeFile(t, filepath.Join(dir, "imgs", "claims.png"), pngHeader(4000, 4000))
			full := pngBytes(t, solid(32, 32, color.NRGBA{1, 2, 3, 255}))
			writeFile(t, filepath.Join(dir, "imgs", "cut.png"), full[:len(full)-20])

			path := filepath.Join(dir, "manifest.jsonl")
			writeFile(t, path, []byte(c.manifest))
			opt := c.opt
			csvPath := filepath.Join(dir, csvName)
			if c.csv != "" {
				writeFile(t, csvPath, []byte(c.csv))
				opt.TabularCSV = csvPath
			}
			d, err := LoadManifest(path, opt)
			if err == nil {
				t.Fatalf("loaded %d records, want an error", len(d.Records))
			}
			where := path
			if c.inCSV {
				where = csvPath
			}
			prefix := where + ": "
			if c.line > 0 {
				prefix = fmt.Sprintf("%s:%d: ", where, c.line)
			}
			msg := err.Error()
			if len(msg) > 300 {
				msg = msg[:300] + "..."
			}
			if !strings.HasPrefix(err.Error(), prefix) || !strings.Contains(err.Error(), c.want) {
				t.Fatalf("error = %s\nwant prefix %q and %q", msg, prefix, c.want)
			}
		})
	}
}

func TestLoadImageFolder(t *testing.T) {
	dir := t.TempDir()
	white, black := solid(6, 6, color.White), solid(5, 7, color.Black)
	writeFile(t, filepath.Join(dir, "dog", "c.PNG"), pngBytes(t, white))
	writeFile(t, filepath.Join(dir, "cat", "b.jpg"), jpegBytes(t, black))
	writeFile(t, filepath.Join(dir, "cat", "a.png"), pngBytes(t, black))
	writeFile(t, filepath.Join(dir, "cat", "notes.txt"), []byte("skipped"))
	writeFile(t, filepath.Join(dir, "cat", ".thumb.png"), []byte("skipped"))
	writeFile(t, filepath.Join(dir, ".cache", "x.png"), []byte("skipped"))
	writeFile(t, filepath.Join(dir, "README.md"), []byte("skipped"))
	if err := os.Mkdir(filepath.Join(dir, "empty"), 0o755); err != nil {
		t.Fatal(err)
	}

	t.Run("good", func(t *testing.T) {
		d, err := LoadImageFolder(dir, ManifestOptions{ImageSize: 3})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(d.Schema.Classes, []string{"cat", "dog", "empty"}) {
			t.Fatalf("classes = %v", d.Schema.Classes)
		}
		if got := ids(d); !slices.Equal(got, []string{"cat/a.png", "cat/b.jpg", "dog/c.PNG"}) {
			t.Fatalf("ids = %v", got)
		}
		if !slices.Equal(d.Labels(), []int{0, 0, 1}) {
			t.Fatalf("labels = %v", d.Labels())
		}
		if d.Schema.ImageH != 3 || d.Records[2].Image.Pix[4] < 0.99 || d.Records[0].Image.Pix[4] > 0.01 {
			t.Fatalf("images wrong: %+v %v", d.Schema, d.Records[2].Image.Pix)
		}
	})
	t.Run("csv join", func(t *testing.T) {
		csvPath := filepath.Join(t.TempDir(), "t.csv")
		writeFile(t, csvPath, []byte("id,z,a\ndog/c.PNG,1,2\n"))
		d, err := LoadImageFolder(dir, ManifestOptions{ImageSize: 3, TabularCSV: csvPath})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(d.Schema.TabularFields, []string{"a", "z"}) || !slices.Equal(d.Records[2].Tabular, []float32{2, 1}) || d.Records[0].Tabular != nil {
			t.Fatalf("fields %v, tabular %v", d.Schema.TabularFields, d.Records[2].Tabular)
		}
	})
	t.Run("fixed classes", func(t *testing.T) {
		d, err := LoadImageFolder(dir, ManifestOptions{Classes: []string{"dog", "cat", "empty", "bird"}})
		if err != nil {
			t.Fatal(err)
		}
		if !slices.Equal(d.Labels(), []int{1, 1, 0}) || len(d.Schema.Classes) != 4 {
			t.Fatalf("labels = %v classes = %v", d.Labels(), d.Schema.Classes)
		}
	})

	for _, tc := range []struct {
		name  string
		setup func(t *testing.T) (string, ManifestOptions)
		want  string
	}{
		{"folder not in classes", func(t *testing.T) (string, ManifestOptions) {
			return dir, ManifestOptions{Classes: []string{"cat", "empty"}}
		}, filepath.Join(dir, "dog") + `: folder "dog" is not one of the classes`},
		{"bad image", func(t *testing.T) (string, ManifestOptions) {
			d := t.TempDir()
			writeFile(t, filepath.Join(d, "cat", "x.png"), []byte("garbage"))
			return d, ManifestOptions{}
		}, "x.png: decode"},
		{"no images", func(t *testing.T) (string, ManifestOptions) {
			d := t.TempDir()
			writeFile(t, filepath.Join(d, "cat", "x.txt"), []byte("garbage"))
			return d, ManifestOptions{}
		}, "no PNG or JPEG files"},
		{"csv unknown id", func(t *testing.T) (string, ManifestOptions) {
			p := filepath.Join(t.TempDir(), "t.csv")
			writeFile(t, p, []byte("id,a\ndog/c.PNG,1\ncat/zz.png,2\n"))
			return dir, ManifestOptions{TabularCSV: p}
		}, `t.csv:3: id "cat/zz.png" is not an image in the folder`},
		{"missing dir", func(t *testing.T) (string, ManifestOptions) {
			return filepath.Join(dir, "nope"), ManifestOptions{}
		}, "no such file"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, opt := tc.setup(t)
			_, err := LoadImageFolder(d, opt)
			if err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v, want %q", err, tc.want)
			}
		})
	}
}
