package dataset

import (
	"bufio"
	"cmp"
	"encoding/csv"
	"errors"
	"fmt"
	"io"
	"math"
	"os"
	"slices"
	"strconv"
	"strings"
)

// csvTable is a parsed tabular CSV, with the line of every row for errors.
type csvTable struct {
	fields []string             // value columns, in file order
	rows   map[string][]float32 // id -> values, in fields order
	lines  map[string]int       // id -> line of its row
	order  []string             // ids in file order
}

// LoadCSVTabular reads a CSV file of numeric tabular fields keyed by id.
//
// The first line is a header whose first column is "id"; the other columns
// name the fields (non-empty, unique; at least one). Every following row
// holds an id (non-empty, unique) and one finite number per field that
// fits in a float32; cells and header names may be surrounded by spaces.
// Empty lines are skipped; quoting follows RFC 4180 (encoding/csv).
//
// fields is in column order; rows maps each id to its values in that order,
// and the caller owns both. Errors read "path:line: what is wrong", and name
// the column for a bad number.
func LoadCSVTabular(path string) (fields []string, rows map[string][]float32, err error) {
	t, err := loadCSV(path)
	if err != nil {
		return nil, nil, err
	}
	return t.fields, t.rows, nil
}

func loadCSV(path string) (*csvTable, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	return parseCSV(path, bufio.NewReader(f))
}

func parseCSV(name string, in io.Reader) (*csvTable, error) {
	r := csv.NewReader(in)
	r.ReuseRecord = true
	header, err := r.Read()
	if err == io.EOF {
		return nil, fmt.Errorf(`%s:1: empty file, want a header line "id,<field>,..."`, name)
	}
	if err != nil {
		return nil, csvError(name, err)
	}
	line, _ := r.FieldPos(0)
	header = slices.Clone(header)
	for i := range header {
		header[i] = strings.TrimSpace(header[i])
	}
	header[0] = strings.TrimPrefix(header[0], "\ufeff")
	if header[0] != "id" {
		return nil, fmt.Errorf(`%s:%d: first column is %q, want "id"`, name, line, header[0])
	}
	t := &csvTable{
		fields: header[1:],
		rows:   make(map[string][]float32),
		lines:  make(map[string]int),
	}
	if len(t.fields) == 0 {
		return nil, fmt.Errorf("%s:%d: no value columns after id", name, line)
	}
	seen := make(map[string]bool, len(header))
	for _, h := range header {
		if h == "" {
			return nil, fmt.Errorf("%s:%d: empty column name", name, line)
		}
		if seen[h] {
			return nil, fmt.Errorf("%s:%d: column %q appears twice", name, line, h)
		}
		seen[h] = true
	}

	for {
		rec, err := r.Read()
		if err == io.EOF {
			break
		}
		if err != nil {
			return nil, csvError(name, err)
		}
		line, _ := r.FieldPos(0)
		id := strings.TrimSpace(rec[0])
		if id == "" {
			return nil, fmt.Errorf("%s:%d: empty id", name, line)
		}
		if prev, dup := t.lines[id]; dup {
			return nil, fmt.Errorf("%s:%d: id %q already used on line %d", name, line, id, prev)
		}
		vals := make([]float32, len(t.fields))
		for j, cell := range rec[1:] {
			v, err := parseFloat32(strings.TrimSpace(cell))
			if err != nil {
				cellLine, _ := r.FieldPos(j + 1)
				return nil, fmt.Errorf("%s:%d: column %q: %w", name, cellLine, t.fields[j], err)
			}
			vals[j] = v
		}
		t.rows[id] = vals
		t.lines[id] = line
		t.order = append(t.order, id)
	}
	return t, nil
}

// csvError turns an encoding/csv error into "name:line: what".
func csvError(name string, err error) error {
	if pe, ok := errors.AsType[*csv.ParseError](err); ok {
		return fmt.Errorf("%s:%d: %w", name, pe.Line, pe.Err)
	}
	return fmt.Errorf("%s: %w", name, err)
}

// parseFloat32 parses a decimal number that must be finite as a float32.
func parseFloat32(s string) (float32, error) {
	if s == "" {
		return 0, fmt.Errorf("empty value, want a number")
	}
	v, err := strconv.ParseFloat(s, 32)
	if err != nil {
		if errors.Is(err, strconv.ErrRange) {
			return 0, fmt.Errorf("%s is out of float32 range", s)
		}
		return 0, fmt.Errorf("%q is not a number", s)
	}
	if math.IsNaN(v) || math.IsInf(v, 0) {
		return 0, fmt.Errorf("%s is not a finite number", s)
	}
	return float32(v), nil
}

// sortedFields returns fields sorted and perm with sorted[k] == fields[perm[k]].
func sortedFields(fields []string) (sorted []string, perm []int) {
	perm = make([]int, len(fields))
	for i := range perm {
		perm[i] = i
	}
	slices.SortFunc(perm, func(a, b int) int { return cmp.Compare(fields[a], fields[b]) })
	sorted = make([]string, len(fields))
	for k, i := range perm {
		sorted[k] = fields[i]
	}
	return sorted, perm
}

// permute returns a new slice with out[k] == v[perm[k]].
func permute(v []float32, perm []int) []float32 {
	out := make([]float32, len(perm))
	for k, i := range perm {
		out[k] = v[i]
	}
	return out
}
