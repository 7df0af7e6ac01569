package dataset

import (
	"bufio"
	"bytes"
	"compress/gzip"
	"encoding/binary"
	"fmt"
	"io"
	"io/fs"
	"math/bits"
	"os"
	"path/filepath"
	"strconv"
	"strings"
)

// IDX magic numbers: unsigned bytes, three dimensions (images) or one
// (labels).
const (
	idxMagicImages = 0x00000803
	idxMagicLabels = 0x00000801
)

// maxIDXData bounds the data size an IDX header may declare (1 TiB), so that
// sizes always fit in an int; what is actually allocated is bounded by the
// bytes actually present.
const maxIDXData = 1 << 40

// FashionMNISTClasses names Fashion-MNIST's ten labels, in label order.
// Do not modify it; datasets get their own copy.
var FashionMNISTClasses = []string{
	"T-shirt/top", "Trouser", "Pullover", "Dress", "Coat",
	"Sandal", "Shirt", "Sneaker", "Bag", "Ankle boot",
}

// FashionMNISTSystemDir is where Debian's dataset-fashion-mnist package puts
// the IDX files.
const FashionMNISTSystemDir = "/usr/share/datasets/fashion-mnist"

// FashionMNISTEnv names the environment variable that, when set, overrides
// [FashionMNISTSystemDir].
const FashionMNISTEnv = "FEDWEAVE_FASHION_MNIST"

// LoadIDX loads an MNIST-style pair of IDX files: unsigned-byte images
// (magic 0x00000803, dimensions count x rows x cols) and unsigned-byte labels
// (magic 0x00000801, dimension count). Either file may be gzip-compressed;
// compression is detected from the content, not the name.
//
// Pixels become ImageData values 1 x rows x cols, scaled by 1/255. Both
// files must hold the same, non-zero number of items, and every label must
// index classes; when classes is empty the classes are "0" .. "<max label>".
// Record ids are "<prefix>-<i>", i being the 0-based position in the file
// (six digits or more) and prefix the images file name up to "-images"
// ("train" for train-images-idx3-ubyte.gz), else the name without its
// extension, or "idx" if that leaves nothing.
//
// The header's counts are checked against the file's length (for gzip,
// against the decompressed bytes as they arrive) before the data is
// allocated. Errors read "path: what is wrong".
func LoadIDX(imagesPath, labelsPath string, classes []string) (*Dataset, error) {
	imgDims, imgData, err := readIDXFile(imagesPath, idxMagicImages)
	if err != nil {
		return nil, err
	}
	lblDims, lblData, err := readIDXFile(labelsPath, idxMagicLabels)
	if err != nil {
		return nil, err
	}
	return buildIDX(labelsPath, idxPrefix(imagesPath), imgDims, imgData, lblDims, lblData, classes)
}

// idxPrefix derives the record id prefix from an images file name.
func idxPrefix(path string) string {
	base := strings.TrimSuffix(filepath.Base(path), ".gz")
	if i := strings.Index(base, "-images"); i > 0 {
		return base[:i]
	}
	base = strings.TrimSuffix(base, filepath.Ext(base))
	if base == "" {
		return "idx"
	}
	return base
}

func readIDXFile(path string, magic uint32) (dims []int, data []byte, err error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, nil, fmt.Errorf("%s: %w", path, errNotRegular)
	}
	return decodeIDX(path, f, fi.Size(), magic)
}

// decodeIDX reads an IDX stream of the given size, gzip-compressed or not
// (detected from its first two bytes).
func decodeIDX(name string, r io.Reader, size int64, magic uint32) (dims []int, data []byte, err error) {
	br := bufio.NewReader(r)
	if head, _ := br.Peek(2); len(head) == 2 && head[0] == 0x1f && head[1] == 0x8b {
		zr, err := gzip.NewReader(br)
		if err != nil {
			return nil, nil, fmt.Errorf("%s: gzip: %w", name, err)
		}
		defer zr.Close()
		return readIDX(name, zr, -1, magic)
	}
	return readIDX(name, br, size, magic)
}

// readIDX reads an unsigned-byte IDX stream with the given magic. size is
// the stream's length when known, else -1; either way the data buffer grows
// only as bytes arrive. The stream must end right after the data (for gzip
// this also verifies the checksum).
func readIDX(name string, r io.Reader, size int64, magic uint32) (dims []int, data []byte, err error) {
	kind := "images"
	if magic == idxMagicLabels {
		kind = "labels"
	}
	var head [4]byte
	if n, err := io.ReadFull(r, head[:]); err != nil {
		return nil, nil, fmt.Errorf("%s: truncated: %d bytes, too short for an IDX header: %w", name, n, err)
	}
	got := binary.BigEndian.Uint32(head[:])
	if got != magic {
		hint := ""
		switch got {
		case idxMagicImages:
			hint = " (this is an IDX images file)"
		case idxMagicLabels:
			hint = " (this is an IDX labels file)"
		}
		return nil, nil, fmt.Errorf("%s: magic number 0x%08x, want 0x%08x for IDX %s%s", name, got, magic, kind, hint)
	}
	ndims := int(magic & 0xff)
	raw := make([]byte, 4*ndims)
	if n, err := io.ReadFull(r, raw); err != nil {
		return nil, nil, fmt.Errorf("%s: truncated header: %d of %d dimension bytes: %w", name, n, len(raw), err)
	}
	dims = make([]int, ndims)
	for i := range dims {
		dims[i] = int(binary.BigEndian.Uint32(raw[4*i:]))
	}
	total := uint64(1)
	for i, v := range dims {
		if v == 0 {
			return nil, nil, fmt.Errorf("%s: header %v: dimension %d is 0", name, dims, i)
		}
		hi, lo := bits.Mul64(total, uint64(v))
		if hi != 0 || lo > maxIDXData {
			return nil, nil, fmt.Errorf("%s: header %v describes more than %d bytes of data", name, dims, uint64(maxIDXData))
		}
		total = lo
	}
	want := int64(total)
	if size >= 0 {
		have := size - int64(4+len(raw))
		if have < want {
			return nil, nil, fmt.Errorf("%s: truncated: header %v promises %d data bytes, file has %d", name, dims, want, have)
		}
		if have > want {
			return nil, nil, fmt.Errorf("%s: %d bytes of trailing data after the %d the header %v promises", name, have-want, want, dims)
		}
		data = make([]byte, want)
		if n, err := io.ReadFull(r, data); err != nil {
			return nil, nil, fmt.Errorf("%s: reading data: %d of %d bytes: %w", name, n, want, err)
		}
	} else {
		var buf bytes.Buffer
		n, err := io.CopyN(&buf, r, want)
		if err == io.EOF {
			return nil, nil, fmt.Errorf("%s: truncated: header %v promises %d data bytes, decompressed file has %d", name, dims, want, n)
		}
		if err != nil {
			return nil, nil, fmt.Errorf("%s: reading data: %w", name, err)
		}
		data = buf.Bytes()
	}
	var extra [1]byte
	if n, err := io.ReadFull(r, extra[:]); n > 0 {
		return nil, nil, fmt.Errorf("%s: trailing data after the %d bytes the header %v promises", name, want, dims)
	} else if err != io.EOF {
		return nil, nil, fmt.Errorf("%s: reading data: %w", name, err)
	}
	return dims, data, nil
}

// buildIDX assembles a dataset from decoded IDX images and labels.
func buildIDX(labelsName, prefix string, imgDims []int, imgData []byte, lblDims []int, lblData []byte, classes []string) (*Dataset, error) {
	n, h, w := imgDims[0], imgDims[1], imgDims[2]
	if lblDims[0] != n {
		return nil, fmt.Errorf("%s: %d labels for %d images", labelsName, lblDims[0], n)
	}
	if len(classes) == 0 {
		top := 0
		for _, l := range lblData {
			top = max(top, int(l))
		}
		classes = make([]string, top+1)
		for i := range classes {
			classes[i] = strconv.Itoa(i)
		}
	} else {
		if err := checkClasses(classes); err != nil {
			return nil, err
		}
		classes = append([]string(nil), classes...)
	}
	for i, l := range lblData {
		if int(l) >= len(classes) {
			return nil, fmt.Errorf("%s: label %d of item %d is out of range for %d classes", labelsName, l, i, len(classes))
		}
	}
	hw := h * w
	pix := make([]float32, len(imgData))
	for i, b := range imgData {
		pix[i] = float32(b) / 255
	}
	imgs := make([]ImageData, n)
	d := &Dataset{
		Schema:  Schema{Classes: classes, ImageC: 1, ImageH: h, ImageW: w},
		Records: make([]Record, n),
	}
	for i := range d.Records {
		o := i * hw
		imgs[i] = ImageData{C: 1, H: h, W: w, Pix: pix[o : o+hw : o+hw]}
		d.Records[i] = Record{
			ID:    fmt.Sprintf("%s-%06d", prefix, i),
			Label: int(lblData[i]),
			Image: &imgs[i],
		}
	}
	return d, nil
}

// FashionMNISTDir returns the directory holding Fashion-MNIST's IDX files:
// $FEDWEAVE_FASHION_MNIST when set (an error if the files are not there),
// else [FashionMNISTSystemDir] when the Debian package is installed. When
// neither has the files the error wraps [fs.ErrNotExist] and says how to
// install the package.
func FashionMNISTDir() (string, error) {
	if dir := os.Getenv(FashionMNISTEnv); dir != "" {
		if _, err := findIDX(dir, "train-images-idx3-ubyte"); err != nil {
			return "", fmt.Errorf("dataset: %s=%s: %w", FashionMNISTEnv, dir, err)
		}
		return dir, nil
	}
	if _, err := findIDX(FashionMNISTSystemDir, "train-images-idx3-ubyte"); err != nil {
		return "", fmt.Errorf("dataset: Fashion-MNIST is not in %s: %w; install it with: apt-get install dataset-fashion-mnist (or set %s to a directory with its IDX files)",
			FashionMNISTSystemDir, fs.ErrNotExist, FashionMNISTEnv)
	}
	return FashionMNISTSystemDir, nil
}

// findIDX returns dir/stem.gz or dir/stem, whichever exists (gzip first).
func findIDX(dir, stem string) (string, error) {
	for _, name := range []string{stem + ".gz", stem} {
		p := filepath.Join(dir, name)
		if fi, err := os.Stat(p); err == nil && fi.Mode().IsRegular() {
			return p, nil
		}
	}
	return "", fmt.Errorf("no %s[.gz] in %s: %w", stem, dir, fs.ErrNotExist)
}

// LoadFashionMNIST loads the training and test sets from dir, which holds
// train-images-idx3-ubyte, train-labels-idx1-ubyte, t10k-images-idx3-ubyte
// and t10k-labels-idx1-ubyte, each optionally with a .gz suffix (see
// [FashionMNISTDir]). The classes are [FashionMNISTClasses]; record ids are
// "train-000000" ... and "t10k-000000" .... The two sets are decoded
// concurrently.
func LoadFashionMNIST(dir string) (train, test *Dataset, err error) {
	var paths [4]string
	for i, stem := range []string{
		"train-images-idx3-ubyte", "train-labels-idx1-ubyte",
		"t10k-images-idx3-ubyte", "t10k-labels-idx1-ubyte",
	} {
		if paths[i], err = findIDX(dir, stem); err != nil {
			return nil, nil, fmt.Errorf("dataset: Fashion-MNIST: %w", err)
		}
	}
	type result struct {
		d   *Dataset
		err error
	}
	done := make(chan result, 1)
	go func() {
		d, err := LoadIDX(paths[2], paths[3], FashionMNISTClasses)
		done <- result{d, err}
	}()
	train, err = LoadIDX(paths[0], paths[1], FashionMNISTClasses)
	res := <-done
	if err != nil {
		return nil, nil, err
	}
	if res.err != nil {
		return nil, nil, res.err
	}
	return train, res.d, nil
}
