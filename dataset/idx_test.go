package dataset

import (
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"errors"
	"io/fs"
	"path/filepath"
	"runtime"
	"slices"
	"strings"
	"testing"
)

// idxBytes encodes an unsigned-byte IDX file.
func idxBytes(magic uint32, dims []uint32, data []byte) []byte {
	var b bytes.Buffer
	binary.Write(&b, binary.BigEndian, magic)
	binary.Write(&b, binary.BigEndian, dims)
	b.Write(data)
	return b.Bytes()
}

func gz(t testing.TB, data []byte) []byte {
	t.Helper()
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	if _, err := w.Write(data); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return b.Bytes()
}

// smallIDX returns three 2x3 images and their labels 0, 2, 1.
func smallIDX() (images, labels []byte) {
	pix := make([]byte, 3*2*3)
	for i := range pix {
		pix[i] = byte(i * 15)
	}
	return idxBytes(idxMagicImages, []uint32{3, 2, 3}, pix), idxBytes(idxMagicLabels, []uint32{3}, []byte{0, 2, 1})
}

func TestLoadIDX(t *testing.T) {
	images, labels := smallIDX()
	for _, tc := range []struct {
		name               string
		gzImages, gzLabels bool
		classes            []string
		wantClasses        []string
	}{
		{"raw", false, false, []string{"a", "b", "c"}, []string{"a", "b", "c"}},
		{"gzip", true, true, []string{"a", "b", "c", "d"}, []string{"a", "b", "c", "d"}},
		{"mixed, derived classes", true, false, nil, []string{"0", "1", "2"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			img, lbl := images, labels
			imgPath := filepath.Join(dir, "train-images-idx3-ubyte")
			lblPath := filepath.Join(dir, "train-labels-idx1-ubyte")
			if tc.gzImages {
				img, imgPath = gz(t, img), imgPath+".gz"
			}
			if tc.gzLabels {
				lbl = gz(t, lbl)
			}
			writeFile(t, imgPath, img)
			writeFile(t, lblPath, lbl) // compression is sniffed, not named
			d, err := LoadIDX(imgPath, lblPath, tc.classes)
			if err != nil {
				t.Fatal(err)
			}
			if err := d.Validate(); err != nil {
				t.Fatal(err)
			}
			if !slices.Equal(d.Schema.Classes, tc.wantClasses) || d.Schema.ImageC != 1 || d.Schema.ImageH != 2 || d.Schema.ImageW != 3 {
				t.Fatalf("schema = %+v", d.Schema)
			}
			if got := ids(d); !slices.Equal(got, []string{"train-000000", "train-000001", "train-000002"}) {
				t.Fatalf("ids = %v", got)
			}
			if !slices.Equal(d.Labels(), []int{0, 2, 1}) {
				t.Fatalf("labels = %v", d.Labels())
			}
			for i := range d.Records {
				for j, v := range d.Records[i].Image.Pix {
					if want := float32((i*6+j)*15) / 255; v != want {
						t.Fatalf("record %d pixel %d = %v, want %v", i, j, v, want)
					}
				}
				if cap(d.Records[i].Image.Pix) != 6 {
					t.Fatalf("record %d's pixels can be appended into its neighbour's", i)
				}
			}
		})
	}
}

func TestLoadIDXErrors(t *testing.T) {
	images, labels := smallIDX()
	huge := idxBytes(idxMagicImages, []uint32{1 << 30, 28, 28}, make([]byte, 100))
	type files struct{ images, labels []byte }
	for _, tc := range []struct {
		name     string
		f        files
		inLabels bool // the error names the labels file
		want     string
	}{
		{"empty images", files{[]byte{}, labels}, false, "too short for an IDX header"},
		{"short header", files{images[:10], labels}, false, "truncated header"},
		{"truncated data", files{images[:len(images)-1], labels}, false, "truncated: header [3 2 3] promises 18 data bytes, file has 17"},
		{"truncated gzip data", files{gz(t, images[:len(images)-1]), labels}, false, "truncated: header [3 2 3] promises 18 data bytes, decompressed file has 17"},
		{"truncated gzip stream", files{gz(t, images)[:30], labels}, false, "unexpected EOF"},
		{"trailing data", files{append(slices.Clone(images), 0), labels}, false, "1 bytes of trailing data"},
		{"trailing gzip data", files{gz(t, append(slices.Clone(images), 0)), labels}, false, "trailing data"},
		{"gzip checksum", files{corruptCRC(gz(t, images)), labels}, false, "checksum"},
		{"labels as images", files{labels, labels}, false, "magic number 0x00000801, want 0x00000803 for IDX images (this is an IDX labels file)"},
		{"images as labels", files{images, images}, true, "want 0x00000801 for IDX labels (this is an IDX images file)"},
		{"float IDX", files{idxBytes(0x00000d03, []uint32{1, 1, 1}, make([]byte, 4)), labels}, false, "magic number 0x00000d03"},
		{"count mismatch", files{images, idxBytes(idxMagicLabels, []uint32{2}, []byte{0, 1})}, true, "2 labels for 3 images"},
		{"label out of range", files{images, idxBytes(idxMagicLabels, []uint32{3}, []byte{0, 3, 1})}, true, "label 3 of item 1 is out of range for 3 classes"},
		{"zero dimension", files{idxBytes(idxMagicImages, []uint32{3, 0, 3}, nil), labels}, false, "dimension 1 is 0"},
		{"zero count", files{idxBytes(idxMagicImages, []uint32{0, 2, 3}, nil), labels}, false, "dimension 0 is 0"},
		{"absurd count", files{huge, labels}, false, "promises 841813590016 data bytes, file has 100"},
		{"absurd count gzip", files{gz(t, huge), labels}, false, "promises 841813590016 data bytes, decompressed file has 100"},
		{"beyond limit", files{idxBytes(idxMagicImages, []uint32{1<<32 - 1, 1<<32 - 1, 1<<32 - 1}, nil), labels}, false, "describes more than 1099511627776 bytes"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			imgPath := filepath.Join(dir, "images.idx")
			lblPath := filepath.Join(dir, "labels.idx")
			writeFile(t, imgPath, tc.f.images)
			writeFile(t, lblPath, tc.f.labels)
			var before, after runtime.MemStats
			runtime.ReadMemStats(&before)
			_, err := LoadIDX(imgPath, lblPath, []string{"a", "b", "c"})
			runtime.ReadMemStats(&after)
			if err == nil {
				t.Fatal("no error")
			}
			where := imgPath
			if tc.inLabels {
				where = lblPath
			}
			if !strings.HasPrefix(err.Error(), where+": ") || !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error = %v\nwant prefix %q and %q", err, where+": ", tc.want)
			}
			if got := after.TotalAlloc - before.TotalAlloc; got > 4<<20 {
				t.Errorf("allocated %d bytes for a tiny bad file", got)
			}
		})
	}
	t.Run("missing file", func(t *testing.T) {
		_, err := LoadIDX(filepath.Join(t.TempDir(), "nope"), "nope", nil)
		if !errors.Is(err, fs.ErrNotExist) {
			t.Fatalf("error = %v, want fs.ErrNotExist", err)
		}
	})
	t.Run("duplicate classes", func(t *testing.T) {
		dir := t.TempDir()
		writeFile(t, filepath.Join(dir, "i"), images)
		writeFile(t, filepath.Join(dir, "l"), labels)
		_, err := LoadIDX(filepath.Join(dir, "i"), filepath.Join(dir, "l"), []string{"a", "a", "b"})
		if err == nil || !strings.Contains(err.Error(), "listed twice") {
			t.Fatalf("error = %v", err)
		}
	})
}

// corruptCRC flips a bit of a gzip member's CRC-32 trailer.
func corruptCRC(b []byte) []byte {
	b = slices.Clone(b)
	b[len(b)-8] ^= 1
	return b
}

func TestIDXPrefix(t *testing.T) {
	for _, tc := range []struct{ path, want string }{
		{"/d/train-images-idx3-ubyte.gz", "train"},
		{"t10k-images-idx3-ubyte", "t10k"},
		{"/d/digits.idx3", "digits"},
		{"plain", "plain"},
		{".gz", "idx"},
		{"-images-idx3-ubyte", "-images-idx3-ubyte"},
	} {
		t.Run(tc.path, func(t *testing.T) {
			if got := idxPrefix(tc.path); got != tc.want {
				t.Errorf("idxPrefix(%q) = %q, want %q", tc.path, got, tc.want)
			}
		})
	}
}

func TestFashionMNISTDir(t *testing.T) {
	t.Run("env override", func(t *testing.T) {
		dir := t.TempDir()
		t.Setenv(FashionMNISTEnv, dir)
		if _, err := FashionMNISTDir(); err == nil || !strings.Contains(err.Error(), FashionMNISTEnv) {
			t.Fatalf("empty override dir: error = %v", err)
		}
		images, labels := smallIDX()
		writeFile(t, filepath.Join(dir, "train-images-idx3-ubyte"), images)
		writeFile(t, filepath.Join(dir, "train-labels-idx1-ubyte.gz"), gz(t, labels))
		writeFile(t, filepath.Join(dir, "t10k-images-idx3-ubyte.gz"), gz(t, images))
		writeFile(t, filepath.Join(dir, "t10k-labels-idx1-ubyte"), labels)
		got, err := FashionMNISTDir()
		if err != nil || got != dir {
			t.Fatalf("FashionMNISTDir() = %q, %v", got, err)
		}
		train, test, err := LoadFashionMNIST(got)
		if err != nil {
			t.Fatal(err)
		}
		if len(train.Records) != 3 || test.Records[0].ID != "t10k-000000" || train.Schema.Classes[9] != "Ankle boot" {
			t.Fatalf("train %d records, test id %q", len(train.Records), test.Records[0].ID)
		}
	})
	t.Run("missing files", func(t *testing.T) {
		_, _, err := LoadFashionMNIST(t.TempDir())
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "train-images-idx3-ubyte") {
			t.Fatalf("error = %v", err)
		}
	})
}

// TestFashionMNIST loads the real data set when Debian's package is
// installed.
func TestFashionMNIST(t *testing.T) {
	dir, err := FashionMNISTDir()
	if err != nil {
		if !errors.Is(err, fs.ErrNotExist) || !strings.Contains(err.Error(), "install it with: apt-get install dataset-fashion-mnist") {
			t.Fatalf("FashionMNISTDir error lacks the hint: %v", err)
		}
		t.Skip(err)
	}
	if testing.Short() {
		t.Skip("loading 70000 images; skipped in -short mode")
	}
	train, test, err := LoadFashionMNIST(dir)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		name string
		d    *Dataset
		n    int
	}{{"train", train, 60000}, {"test", test, 10000}} {
		t.Run(tc.name, func(t *testing.T) {
			if len(tc.d.Records) != tc.n {
				t.Fatalf("%d records, want %d", len(tc.d.Records), tc.n)
			}
			if s := tc.d.Schema; s.ImageC != 1 || s.ImageH != 28 || s.ImageW != 28 || len(s.Classes) != 10 {
				t.Fatalf("schema = %+v", s)
			}
			var perClass [10]int
			for _, l := range tc.d.Labels() {
				perClass[l]++
			}
			for c, n := range perClass {
				if n != tc.n/10 {
					t.Errorf("class %d has %d records, want %d", c, n, tc.n/10)
				}
			}
			if err := tc.d.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
}
