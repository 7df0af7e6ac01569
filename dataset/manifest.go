package dataset

import (
	"bufio"
	"bytes"
	"cmp"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
)

// MaxManifestLine is the longest manifest line LoadManifest accepts, in
// bytes (without the line ending).
const MaxManifestLine = 1 << 20

// manifestEntry is one parsed manifest line, before classes, fields and
// images are resolved.
type manifestEntry struct {
	line    int
	id      string
	label   string // "" when unknown
	text    string
	image   string             // "" when none
	tabular map[string]float32 // nil when the line has none
}

// LoadManifest reads a JSONL manifest: one JSON object a line, each a record.
//
//	{"id":"r1","label":"cat","text":"free text","image":"imgs/r1.png","tabular":{"age":41,"bmi":22.5}}
//
// Blank lines and lines starting with "#" are skipped. Fields:
//
//   - id (required): a non-empty string, unique in the file.
//   - label: a class name, or a non-negative integer that names the class
//     by its decimal form (7 and "7" are the same class); absent or null
//     means unknown (Record.Label -1).
//   - text: free text; absent, null or "" means no text.
//   - image: a PNG or JPEG file, as a slash-separated path relative to the
//     manifest's directory; absolute paths, paths that leave the directory
//     and symbolic links that point outside it are rejected. The image is
//     converted to grayscale (transparent pixels count as black) and
//     resized to opt.ImageSize squared with Catmull-Rom interpolation.
//   - tabular: an object of finite numbers (float32 range).
//
// Any other field, a field given twice, or a line longer than
// [MaxManifestLine] bytes is an error, so typos surface instead of being
// dropped. The classes are opt.Classes when set (a label not in it is an
// error), else the distinct labels sorted. The tabular fields are the union
// of the objects' keys and the columns of opt.TabularCSV, sorted; a record
// that has tabular values must have all of them. A CSV row is joined on the
// record with its id; a record may not have both a tabular object and a CSV
// row, and every CSV id must be in the manifest. Every record must end up
// with at least one modality.
//
// Errors read "path:line: what is wrong" (the CSV's path and line for a CSV
// problem). The returned dataset passes Validate.
func LoadManifest(path string, opt ManifestOptions) (*Dataset, error) {
	size, err := opt.imageSize()
	if err != nil {
		return nil, err
	}
	if err := checkClasses(opt.Classes); err != nil {
		return nil, err
	}
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	entries, err := parseManifest(path, f)
	if err != nil {
		return nil, err
	}
	var table *csvTable
	if opt.TabularCSV != "" {
		if table, err = loadCSV(opt.TabularCSV); err != nil {
			return nil, err
		}
	}
	d, err := buildManifest(path, opt.TabularCSV, entries, table, opt.Classes)
	if err != nil {
		return nil, err
	}
	if err := loadManifestImages(path, entries, d, size); err != nil {
		return nil, err
	}
	if err := d.Validate(); err != nil {
		return nil, fmt.Errorf("%s: %w", path, err)
	}
	return d, nil
}

// parseManifest reads the lines of a manifest into entries, checking
// everything that one line alone determines, and id uniqueness.
func parseManifest(name string, in io.Reader) ([]manifestEntry, error) {
	sc := bufio.NewScanner(in)
	sc.Buffer(make([]byte, 0, 64<<10), MaxManifestLine+2) // +2 for "\r\n"
	var entries []manifestEntry
	ids := make(map[string]int)
	n := 0
	for sc.Scan() {
		n++
		line := sc.Bytes()
		if n == 1 {
			line = bytes.TrimPrefix(line, []byte("\ufeff"))
		}
		if len(line) > MaxManifestLine {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes (1 MiB)", name, n, MaxManifestLine)
		}
		trimmed := bytes.TrimSpace(line)
		if len(trimmed) == 0 || trimmed[0] == '#' {
			continue
		}
		e, err := parseManifestLine(trimmed)
		if err != nil {
			return nil, fmt.Errorf("%s:%d: %w", name, n, err)
		}
		if prev, dup := ids[e.id]; dup {
			return nil, fmt.Errorf("%s:%d: duplicate id %q, first used on line %d", name, n, e.id, prev)
		}
		ids[e.id] = n
		e.line = n
		entries = append(entries, e)
	}
	if err := sc.Err(); err != nil {
		if errors.Is(err, bufio.ErrTooLong) {
			return nil, fmt.Errorf("%s:%d: line longer than %d bytes (1 MiB)", name, n+1, MaxManifestLine)
		}
		return nil, fmt.Errorf("%s:%d: %w", name, n+1, err)
	}
	if len(entries) == 0 {
		return nil, fmt.Errorf("%s: no records", name)
	}
	return entries, nil
}

// parseManifestLine decodes one JSON object. It walks the tokens itself
// rather than unmarshalling into a struct so that field names match exactly
// (encoding/json would also accept "ID" and "Label") and repeated fields
// are caught.
func parseManifestLine(line []byte) (manifestEntry, error) {
	return parseRecordObject(line, false)
}

// parseRecordObject is parseManifestLine, and with inline set the form DecodeRecord reads: the
// id may be absent and the image is data, not a path.
func parseRecordObject(line []byte, inline bool) (manifestEntry, error) {
	var e manifestEntry
	dec := json.NewDecoder(bytes.NewReader(line))
	dec.UseNumber()
	tok, err := dec.Token()
	if err != nil {
		return e, jsonError(err)
	}
	if tok != json.Delim('{') {
		return e, fmt.Errorf("want a JSON object, got %s", tokenKind(tok))
	}
	seen := make(map[string]bool, 5)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return e, jsonError(err)
		}
		key, _ := tok.(string) // object keys are always strings
		if seen[key] {
			return e, fmt.Errorf("field %q given twice", key)
		}
		seen[key] = true
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return e, jsonError(err)
		}
		switch key {
		case "id":
			e.id, err = jsonString(key, raw)
		case "label":
			e.label, err = parseLabel(raw)
		case "text":
			e.text, err = jsonString(key, raw)
		case "image":
			e.image, err = jsonString(key, raw)
			if err == nil && !isNull(raw) && !inline {
				err = checkImagePath(e.image)
			}
		case "tabular":
			e.tabular, err = parseTabular(raw)
		default:
			err = fmt.Errorf("unknown field %q (want id, label, text, image or tabular)", key)
		}
		if err != nil {
			return e, err
		}
	}
	if _, err := dec.Token(); err != nil { // the closing brace
		return e, jsonError(err)
	}
	if _, err := dec.Token(); err != io.EOF {
		return e, fmt.Errorf("unexpected data after the JSON object")
	}
	if e.id == "" && !inline {
		return e, fmt.Errorf(`missing or empty "id"`)
	}
	return e, nil
}

// jsonError rewords encoding/json's errors without its "json: " prefix.
func jsonError(err error) error {
	if se, ok := errors.AsType[*json.SyntaxError](err); ok {
		return fmt.Errorf("invalid JSON at byte %d: %s", se.Offset, se.Error())
	}
	if err == io.EOF || err == io.ErrUnexpectedEOF {
		return fmt.Errorf("invalid JSON: unexpected end of line")
	}
	return fmt.Errorf("invalid JSON: %s", strings.TrimPrefix(err.Error(), "json: "))
}

func tokenKind(tok json.Token) string {
	switch tok := tok.(type) {
	case json.Delim:
		if tok == '[' {
			return "an array"
		}
		return "an object"
	case string:
		return "a string"
	case json.Number:
		return "a number"
	case bool:
		return "a boolean"
	case nil:
		return "null"
	}
	return "something else"
}

func rawKind(raw json.RawMessage) string {
	if len(raw) == 0 {
		return "nothing"
	}
	switch raw[0] {
	case '{':
		return "an object"
	case '[':
		return "an array"
	case '"':
		return "a string"
	case 't', 'f':
		return "a boolean"
	case 'n':
		return "null"
	}
	return "a number"
}

func isNull(raw json.RawMessage) bool { return string(raw) == "null" }

// jsonString decodes a string field; null counts as "".
func jsonString(key string, raw json.RawMessage) (string, error) {
	if isNull(raw) {
		return "", nil
	}
	if len(raw) == 0 || raw[0] != '"' {
		return "", fmt.Errorf("field %q: want a string, got %s", key, rawKind(raw))
	}
	var s string
	if err := json.Unmarshal(raw, &s); err != nil {
		return "", fmt.Errorf("field %q: %w", key, jsonError(err))
	}
	return s, nil
}

// parseLabel returns the class name a label field gives, "" for null.
func parseLabel(raw json.RawMessage) (string, error) {
	switch rawKind(raw) {
	case "null":
		return "", nil
	case "a string":
		s, err := jsonString("label", raw)
		if err == nil && s == "" {
			err = fmt.Errorf(`field "label": empty string (omit the field or use null for an unknown label)`)
		}
		return s, err
	case "a number":
		num := string(raw)
		if i, err := strconv.ParseInt(num, 10, 64); err == nil && i >= 0 {
			return strconv.FormatInt(i, 10), nil
		}
		v, err := strconv.ParseFloat(num, 64)
		if err == nil && v >= 0 && v <= 1<<53 && v == math.Trunc(v) {
			return strconv.FormatInt(int64(v), 10), nil
		}
		return "", fmt.Errorf(`field "label": %s is not a non-negative integer (use a string for other class names, null for unknown)`, num)
	}
	return "", fmt.Errorf(`field "label": want a string or a number, got %s`, rawKind(raw))
}

// parseTabular decodes a tabular object; null gives nil.
func parseTabular(raw json.RawMessage) (map[string]float32, error) {
	if isNull(raw) {
		return nil, nil
	}
	if rawKind(raw) != "an object" {
		return nil, fmt.Errorf(`field "tabular": want an object of numbers, got %s`, rawKind(raw))
	}
	dec := json.NewDecoder(bytes.NewReader(raw))
	dec.UseNumber()
	if _, err := dec.Token(); err != nil {
		return nil, jsonError(err)
	}
	vals := make(map[string]float32)
	for dec.More() {
		tok, err := dec.Token()
		if err != nil {
			return nil, jsonError(err)
		}
		key, _ := tok.(string)
		if key == "" {
			return nil, fmt.Errorf(`field "tabular": empty field name`)
		}
		if _, dup := vals[key]; dup {
			return nil, fmt.Errorf("tabular field %q given twice", key)
		}
		tok, err = dec.Token()
		if err != nil {
			return nil, jsonError(err)
		}
		num, ok := tok.(json.Number)
		if !ok {
			return nil, fmt.Errorf("tabular field %q: want a number, got %s", key, tokenKind(tok))
		}
		v, err := parseFloat32(string(num))
		if err != nil {
			return nil, fmt.Errorf("tabular field %q: %w", key, err)
		}
		vals[key] = v
	}
	if len(vals) == 0 {
		return nil, fmt.Errorf(`field "tabular": empty object (omit the field or use null for no tabular values)`)
	}
	return vals, nil
}

// checkImagePath rejects image paths that are absolute or leave the
// manifest's directory. Symbolic links are checked when the file is opened
// (os.Root).
func checkImagePath(p string) error {
	switch {
	case p == "":
		return fmt.Errorf(`field "image": empty path`)
	case strings.HasPrefix(p, "/") || strings.HasPrefix(p, `\`) || filepath.IsAbs(p) || filepath.VolumeName(p) != "":
		return fmt.Errorf("image path %q is absolute; it must be relative to the manifest's directory", p)
	case strings.ContainsRune(p, 0):
		return fmt.Errorf("image path %q contains a NUL byte", p)
	case !filepath.IsLocal(filepath.FromSlash(p)):
		return fmt.Errorf("image path %q escapes the manifest's directory (\"..\")", p)
	}
	return nil
}

// buildManifest resolves classes and tabular fields and joins the CSV; the
// records it returns have no images yet.
func buildManifest(path, csvPath string, entries []manifestEntry, table *csvTable, fixed []string) (*Dataset, error) {
	classes := manifestClasses(entries, fixed)
	classIndex := make(map[string]int, len(classes))
	for i, c := range classes {
		classIndex[c] = i
	}
	fields, csvCol, err := manifestFields(path, csvPath, entries, table)
	if err != nil {
		return nil, err
	}

	d := &Dataset{Schema: Schema{Classes: classes, TabularFields: fields}}
	d.Records = make([]Record, len(entries))
	for i := range entries {
		e := &entries[i]
		r := &d.Records[i]
		r.ID, r.Text, r.Label = e.id, e.text, -1
		if e.label != "" {
			idx, ok := classIndex[e.label]
			if !ok {
				return nil, fmt.Errorf("%s:%d: unknown class %q (not among the %d classes in the options)", path, e.line, e.label, len(classes))
			}
			r.Label = idx
		}
		var row []float32
		if table != nil {
			row = table.rows[e.id]
		}
		switch {
		case e.tabular != nil && row != nil:
			return nil, fmt.Errorf("%s:%d: record %q has tabular fields here and a row at %s:%d; give them in one place", path, e.line, e.id, csvPath, table.lines[e.id])
		case e.tabular != nil:
			r.Tabular = make([]float32, len(fields))
			for k, f := range fields {
				v, ok := e.tabular[f]
				if !ok {
					return nil, fmt.Errorf("%s:%d: tabular field %q missing (a record with tabular fields needs all %d)", path, e.line, f, len(fields))
				}
				r.Tabular[k] = v
			}
		case row != nil:
			r.Tabular = permute(row, csvCol)
		}
		if !r.Has(Text) && e.image == "" && !r.Has(Tabular) {
			return nil, fmt.Errorf("%s:%d: record %q has no text, image or tabular fields", path, e.line, e.id)
		}
	}
	return d, nil
}

// manifestFields returns the sorted union of the tabular objects' keys and
// the CSV's columns, and for each field its CSV column (used only when the
// CSV has rows, and then every field is a column). It also checks that every
// CSV id is in the manifest.
func manifestFields(path, csvPath string, entries []manifestEntry, table *csvTable) (fields []string, csvCol []int, err error) {
	firstUse := make(map[string]int) // key -> first manifest line using it
	for _, e := range entries {
		for k := range e.tabular {
			if _, ok := firstUse[k]; !ok {
				firstUse[k] = e.line
			}
		}
	}
	if table == nil {
		return sortedKeys(firstUse), nil, nil
	}
	col := make(map[string]int, len(table.fields))
	for j, f := range table.fields {
		col[f] = j
	}
	if len(table.rows) > 0 {
		for _, k := range sortedKeys(firstUse) {
			if _, ok := col[k]; !ok {
				return nil, nil, fmt.Errorf("%s:1: no column %q, a tabular field that %s:%d uses", csvPath, k, path, firstUse[k])
			}
		}
	}
	inManifest := make(map[string]bool, len(entries))
	for _, e := range entries {
		inManifest[e.id] = true
	}
	for _, id := range table.order {
		if !inManifest[id] {
			return nil, nil, fmt.Errorf("%s:%d: id %q is not in the manifest %s", csvPath, table.lines[id], id, path)
		}
	}
	fields = slices.Clone(table.fields)
	for k := range firstUse {
		if _, ok := col[k]; !ok {
			fields = append(fields, k)
		}
	}
	slices.Sort(fields)
	csvCol = make([]int, len(fields))
	for k, f := range fields {
		csvCol[k] = col[f]
	}
	return fields, csvCol, nil
}

// manifestClasses returns the class list: fixed when given, else the
// distinct labels sorted (numerically when all are canonical non-negative
// integers, so "10" sorts after "9").
func manifestClasses(entries []manifestEntry, fixed []string) []string {
	if fixed != nil {
		return slices.Clone(fixed)
	}
	seen := make(map[string]bool)
	numeric := true
	for _, e := range entries {
		if e.label != "" && !seen[e.label] {
			seen[e.label] = true
			numeric = numeric && isCanonicalUint(e.label)
		}
	}
	classes := sortedKeys(seen)
	if numeric {
		slices.SortFunc(classes, func(a, b string) int {
			return cmp.Or(cmp.Compare(len(a), len(b)), cmp.Compare(a, b))
		})
	}
	return classes
}

func isCanonicalUint(s string) bool {
	if s == "" || (len(s) > 1 && s[0] == '0') {
		return false
	}
	for _, c := range []byte(s) {
		if c < '0' || c > '9' {
			return false
		}
	}
	return true
}

// sortedKeys returns m's keys sorted, nil when there are none.
func sortedKeys[V any](m map[string]V) []string {
	if len(m) == 0 {
		return nil
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	return keys
}

// loadManifestImages decodes the images the entries name, relative to the
// manifest's directory, into d's records (which parallel entries).
func loadManifestImages(path string, entries []manifestEntry, d *Dataset, size int) error {
	var root *os.Root
	for i := range entries {
		e := &entries[i]
		if e.image == "" {
			continue
		}
		if root == nil {
			var err error
			if root, err = os.OpenRoot(filepath.Dir(path)); err != nil {
				return fmt.Errorf("%s: %w", path, err)
			}
			defer root.Close()
		}
		img, err := readImage(root, filepath.FromSlash(e.image), size)
		if err != nil {
			return fmt.Errorf("%s:%d: image %q: %w", path, e.line, e.image, err)
		}
		d.Records[i].Image = img
	}
	if root != nil {
		d.Schema.ImageC, d.Schema.ImageH, d.Schema.ImageW = 1, size, size
	}
	return nil
}
