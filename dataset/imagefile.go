package dataset

import (
	"cmp"
	"errors"
	"fmt"
	"image"
	"image/jpeg"
	"image/png"
	"io"
	"io/fs"
	"os"
	"path"
	"path/filepath"
	"slices"
	"strings"

	"golang.org/x/image/draw"
)

// DefaultImageSize is the side length images are resized to when
// ManifestOptions.ImageSize is 0: Fashion-MNIST's 28.
const DefaultImageSize = 28

// MaxImageSize bounds ManifestOptions.ImageSize.
const MaxImageSize = 1024

// maxSourcePixels bounds the size of an image file's declared dimensions
// (32 Mpixel, e.g. 6000x5000), so that a header cannot make the decoder
// allocate gigabytes.
const maxSourcePixels = 1 << 25

// maxPixelsPerByte bounds how many pixels a file may declare per byte of its
// size (plus a 1 Mpixel allowance). Real PNG and JPEG files stay far below
// it; a few-byte file claiming 30 Mpixel is rejected before decoding.
const maxPixelsPerByte = 16384

// errNotRegular rejects directories, devices and pipes given as data files.
var errNotRegular = errors.New("not a regular file")

// ManifestOptions controls [LoadManifest] and [LoadImageFolder].
type ManifestOptions struct {
	// ImageSize is the side length every image is resized to, in
	// [1, MaxImageSize]; 0 means DefaultImageSize.
	ImageSize int

	// Classes, when non-nil, fixes the class list and its order; a record
	// whose label is not in it is an error. When nil the classes are the
	// distinct labels found, sorted (numerically if every label is a
	// non-negative decimal integer, else as strings).
	Classes []string

	// TabularCSV, when non-empty, names a CSV file (see LoadCSVTabular)
	// whose rows are joined onto the records by id. The path is used as
	// given, not relative to the manifest.
	TabularCSV string
}

func (o *ManifestOptions) imageSize() (int, error) {
	switch {
	case o.ImageSize == 0:
		return DefaultImageSize, nil
	case o.ImageSize < 0 || o.ImageSize > MaxImageSize:
		return 0, fmt.Errorf("dataset: image size %d out of range [1, %d]", o.ImageSize, MaxImageSize)
	}
	return o.ImageSize, nil
}

// checkClasses validates a caller-supplied class list.
func checkClasses(classes []string) error {
	seen := make(map[string]bool, len(classes))
	for _, c := range classes {
		if c == "" {
			return fmt.Errorf("dataset: options: empty class name")
		}
		if seen[c] {
			return fmt.Errorf("dataset: options: class %q listed twice", c)
		}
		seen[c] = true
	}
	return nil
}

// readImage opens name inside root, decodes it as PNG or JPEG and returns it
// as a 1 x size x size grayscale image. Transparent pixels count as black
// (the image is composited onto black, as premultiplied alpha implies).
func readImage(root *os.Root, name string, size int) (*ImageData, error) {
	fi, err := root.Stat(name)
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, errNotRegular
	}
	f, err := root.Open(name)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	cfg, format, err := image.DecodeConfig(f)
	if err != nil {
		return nil, fmt.Errorf("decode: %w", err)
	}
	if format != "png" && format != "jpeg" {
		return nil, fmt.Errorf("unsupported image format %q, want PNG or JPEG", format)
	}
	if cfg.Width <= 0 || cfg.Height <= 0 {
		return nil, fmt.Errorf("image is %dx%d pixels", cfg.Width, cfg.Height)
	}
	pixels := int64(cfg.Width) * int64(cfg.Height)
	if pixels > maxSourcePixels {
		return nil, fmt.Errorf("image is %dx%d pixels, more than the limit of %d", cfg.Width, cfg.Height, maxSourcePixels)
	}
	if pixels > 1<<20+maxPixelsPerByte*fi.Size() {
		return nil, fmt.Errorf("image claims %dx%d pixels but the file has only %d bytes", cfg.Width, cfg.Height, fi.Size())
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return nil, err
	}
	var src image.Image
	if format == "png" {
		src, err = png.Decode(f)
	} else {
		src, err = jpeg.Decode(f)
	}
	if err != nil {
		return nil, fmt.Errorf("decode %s: %w", format, err)
	}
	return grayResize(src, size), nil
}

// grayResize scales src to size x size with Catmull-Rom interpolation and
// converts it to luma (ITU-R BT.601 weights, as image/color.GrayModel).
func grayResize(src image.Image, size int) *ImageData {
	dst := image.NewRGBA(image.Rect(0, 0, size, size))
	draw.CatmullRom.Scale(dst, dst.Bounds(), src, src.Bounds(), draw.Src, nil)
	pix := make([]float32, size*size)
	for i := range pix {
		p := dst.Pix[4*i : 4*i+3 : 4*i+3]
		y := (0.299*float32(p[0]) + 0.587*float32(p[1]) + 0.114*float32(p[2])) / 255
		pix[i] = min(max(y, 0), 1)
	}
	return &ImageData{C: 1, H: size, W: size, Pix: pix}
}

// isImageName reports whether name has a PNG or JPEG extension.
func isImageName(name string) bool {
	switch strings.ToLower(path.Ext(name)) {
	case ".png", ".jpg", ".jpeg":
		return true
	}
	return false
}

// LoadImageFolder loads a data set laid out as dir/<class>/<file>, where
// each file is a PNG or JPEG (by extension: .png, .jpg, .jpeg, any case).
//
// The classes are the names of dir's subfolders, sorted, or opt.Classes when
// given (a subfolder not in it is an error; a class without a folder has no
// records). Record ids are "<class>/<file>" and records are ordered by id.
// Images are converted and resized as in [LoadManifest]; opt.TabularCSV, when
// set, is joined by those ids. Entries whose names start with "." and
// files without an image extension are skipped; plain files directly in
// dir are skipped too. Symbolic links may not point outside dir.
//
// Errors name the offending file as "dir/class/file: what is wrong".
func LoadImageFolder(dir string, opt ManifestOptions) (*Dataset, error) {
	size, err := opt.imageSize()
	if err != nil {
		return nil, err
	}
	if err := checkClasses(opt.Classes); err != nil {
		return nil, err
	}
	root, err := os.OpenRoot(dir)
	if err != nil {
		return nil, err
	}
	defer root.Close()
	top, err := fs.ReadDir(root.FS(), ".")
	if err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	var folders []string
	for _, e := range top {
		if strings.HasPrefix(e.Name(), ".") {
			continue
		}
		fi, err := root.Stat(e.Name()) // follows links, so a linked folder counts
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, e.Name()), err)
		}
		if fi.IsDir() {
			folders = append(folders, e.Name())
		}
	}
	classes := opt.Classes
	if classes == nil {
		classes = folders // ReadDir sorts by name
	}
	classIndex := make(map[string]int, len(classes))
	for i, c := range classes {
		classIndex[c] = i
	}

	d := &Dataset{Schema: Schema{Classes: slices.Clone(classes)}}
	for _, folder := range folders {
		label, ok := classIndex[folder]
		if !ok {
			return nil, fmt.Errorf("%s: folder %q is not one of the classes in the options", filepath.Join(dir, folder), folder)
		}
		entries, err := fs.ReadDir(root.FS(), folder)
		if err != nil {
			return nil, fmt.Errorf("%s: %w", filepath.Join(dir, folder), err)
		}
		for _, e := range entries {
			if strings.HasPrefix(e.Name(), ".") || e.IsDir() || !isImageName(e.Name()) {
				continue
			}
			id := folder + "/" + e.Name()
			img, err := readImage(root, filepath.Join(folder, e.Name()), size)
			if err != nil {
				return nil, fmt.Errorf("%s: %w", filepath.Join(dir, folder, e.Name()), err)
			}
			d.Records = append(d.Records, Record{ID: id, Label: label, Image: img})
		}
	}
	if len(d.Records) == 0 {
		return nil, fmt.Errorf("%s: no PNG or JPEG files in class folders", dir)
	}
	slices.SortFunc(d.Records, func(a, b Record) int { return cmp.Compare(a.ID, b.ID) })
	d.Schema.ImageC, d.Schema.ImageH, d.Schema.ImageW = 1, size, size

	if opt.TabularCSV != "" {
		if err := joinFolderCSV(d, opt.TabularCSV); err != nil {
			return nil, err
		}
	}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", dir, err)
	}
	return d, nil
}

// joinFolderCSV attaches the CSV rows to the records of an image folder.
func joinFolderCSV(d *Dataset, csvPath string) error {
	t, err := loadCSV(csvPath)
	if err != nil {
		return err
	}
	byID := make(map[string]int, len(d.Records))
	for i := range d.Records {
		byID[d.Records[i].ID] = i
	}
	for _, row := range t.order {
		if _, ok := byID[row]; !ok {
			return fmt.Errorf("%s:%d: id %q is not an image in the folder", csvPath, t.lines[row], row)
		}
	}
	fields, perm := sortedFields(t.fields)
	d.Schema.TabularFields = fields
	for i := range d.Records {
		if v, ok := t.rows[d.Records[i].ID]; ok {
			d.Records[i].Tabular = permute(v, perm)
		}
	}
	return nil
}
