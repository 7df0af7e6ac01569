package dataset

import (
	"bytes"
	"image/color"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// FuzzManifest checks that LoadManifest never panics, that every error
// names the manifest or the CSV, and that what it accepts is valid.
func FuzzManifest(f *testing.F) {
	dir := f.TempDir()
	writeFile(f, filepath.Join(dir, "a.png"), pngBytes(f, solid(5, 3, color.NRGBA{10, 200, 30, 255})))
	writeFile(f, filepath.Join(dir, "imgs", "b.jpg"), jpegBytes(f, solid(4, 4, color.Gray{90})))
	path := filepath.Join(dir, "manifest.jsonl")
	csvPath := filepath.Join(dir, "tab.csv")

	f.Add([]byte(`{"id":"r1","label":"cat","text":"free text","image":"a.png","tabular":{"age":41,"bmi":22.5}}`), []byte(nil))
	f.Add([]byte("# c\n\n{\"id\":\"r1\",\"label\":3,\"image\":\"imgs/b.jpg\"}\n{\"id\":\"r2\",\"text\":\"x\"}\r\n"), []byte("id,age\nr2,4\n"))
	f.Add([]byte(`{"id":"r1","tabular":{"a":1,"b":2}}`+"\n"+`{"id":"r2","tabular":{"a":1}}`), []byte(nil))
	f.Add([]byte(`{"id":"r1","image":"../a.png"}`), []byte(nil))
	f.Add([]byte(`{"id":"r1","image":"/a.png"}`), []byte(nil))
	f.Add([]byte(`{"id":"r1","label":1e3,"text":"t","lable":2}`), []byte(nil))
	f.Add([]byte(`{"id":"r1","text":"t"}`), []byte("id,x\nr1,1e39\nr2,NaN\n"))
	f.Add([]byte(`{"id":"r1","text":"t"}`), []byte("id,x,x\n\"r1,1\n"))
	f.Add([]byte(`{"id":"r1","tabular":{"x":1}}`), []byte("id,x\nr1,2\n"))
	f.Add([]byte(`{"id":"r1","text":"\u00e9\ud800"}{}`), []byte("id\n"))

	f.Fuzz(func(t *testing.T, manifest, csv []byte) {
		if err := os.WriteFile(path, manifest, 0o644); err != nil {
			t.Fatal(err)
		}
		opt := ManifestOptions{ImageSize: 4}
		if len(csv) > 0 {
			if err := os.WriteFile(csvPath, csv, 0o644); err != nil {
				t.Fatal(err)
			}
			opt.TabularCSV = csvPath
		}
		d, err := LoadManifest(path, opt)
		if err != nil {
			if msg := err.Error(); !strings.HasPrefix(msg, path+":") && !strings.HasPrefix(msg, csvPath+":") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if err := d.Validate(); err != nil {
			t.Fatalf("accepted an invalid dataset: %v", err)
		}
		if len(d.Records) == 0 {
			t.Fatal("accepted a manifest without records")
		}
	})
}

// FuzzCSV checks the tabular CSV parser.
func FuzzCSV(f *testing.F) {
	f.Add([]byte("id,age,bmi\nr1,41,22.5\nr2, -3 ,1e-3\n"))
	f.Add([]byte("\ufeffid,x\r\n\"r,1\",2\r\n"))
	f.Add([]byte("id,x\nr1,abc\n"))
	f.Add([]byte("id,x\nr1,1\nr1,2\n"))
	f.Add([]byte("id,x\nr1,Inf\n"))
	f.Add([]byte("id,x\nr1,1,2\n"))
	f.Add([]byte("key,x\n"))
	f.Add([]byte(""))
	f.Fuzz(func(t *testing.T, data []byte) {
		tab, err := parseCSV("f.csv", bytes.NewReader(data))
		if err != nil {
			if !strings.HasPrefix(err.Error(), "f.csv:") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(tab.fields) == 0 || len(tab.rows) != len(tab.order) || len(tab.rows) != len(tab.lines) {
			t.Fatalf("inconsistent table: %d fields, %d rows, %d ids", len(tab.fields), len(tab.rows), len(tab.order))
		}
		if err := checkNames("tabular field", tab.fields); err != nil {
			t.Fatal(err)
		}
		for id, row := range tab.rows {
			if id == "" || len(row) != len(tab.fields) {
				t.Fatalf("row %q has %d values for %d fields", id, len(row), len(tab.fields))
			}
			for _, v := range row {
				if !finite32(v) {
					t.Fatalf("row %q has %v", id, v)
				}
			}
		}
	})
}

// FuzzIDX checks the IDX decoder on an images and a labels stream, raw or
// gzip: no panic, errors that name the stream, and valid datasets.
func FuzzIDX(f *testing.F) {
	images, labels := smallIDX()
	f.Add(images, labels)
	f.Add(gz(f, images), gz(f, labels))
	f.Add(images[:len(images)-1], labels)
	f.Add(labels, images)
	f.Add(idxBytes(idxMagicImages, []uint32{1 << 30, 28, 28}, make([]byte, 16)), labels)
	f.Add(gz(f, idxBytes(idxMagicImages, []uint32{1 << 30, 28, 28}, make([]byte, 16))), labels)
	f.Add(idxBytes(idxMagicImages, []uint32{1, 1, 1}, []byte{255}), idxBytes(idxMagicLabels, []uint32{1}, []byte{200}))
	f.Add([]byte{0x1f, 0x8b}, []byte{})
	f.Fuzz(func(t *testing.T, img, lbl []byte) {
		imgDims, imgData, err := decodeIDX("img", bytes.NewReader(img), int64(len(img)), idxMagicImages)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "img: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		if len(imgDims) != 3 || len(imgData) != imgDims[0]*imgDims[1]*imgDims[2] {
			t.Fatalf("dims %v for %d bytes", imgDims, len(imgData))
		}
		lblDims, lblData, err := decodeIDX("lbl", bytes.NewReader(lbl), int64(len(lbl)), idxMagicLabels)
		if err != nil {
			if !strings.HasPrefix(err.Error(), "lbl: ") {
				t.Fatalf("error does not name the file: %v", err)
			}
			return
		}
		for _, classes := range [][]string{nil, {"a", "b", "c"}} {
			d, err := buildIDX("lbl", "x", imgDims, imgData, lblDims, lblData, classes)
			if err != nil {
				if !strings.HasPrefix(err.Error(), "lbl: ") {
					t.Fatalf("error does not name the file: %v", err)
				}
				continue
			}
			if err := d.Validate(); err != nil {
				t.Fatalf("accepted an invalid dataset: %v", err)
			}
		}
	})
}
