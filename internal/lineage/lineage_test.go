package lineage_test

import (
	"bytes"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"math"
	"testing"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/lineage"
)

func salt(b byte) []byte { return bytes.Repeat([]byte{b}, lineage.SaltSize) }

func mustCommit(t *testing.T, d *dataset.Dataset, s []byte) []byte {
	t.Helper()
	c, err := lineage.Commit(d, s)
	if err != nil {
		t.Fatal(err)
	}
	if len(c) != lineage.Size {
		t.Fatalf("commitment of %d bytes, want %d", len(c), lineage.Size)
	}
	return c
}

// records returns a deep copy of the records of a small synthetic dataset (text, image and
// tabular fields), so that a test may change them.
func records(t *testing.T) *dataset.Dataset {
	t.Helper()
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 12, Seed: 5})
	out := *d
	out.Records = make([]dataset.Record, len(d.Records))
	for i, r := range d.Records {
		if r.Image != nil {
			im := *r.Image
			im.Pix = append([]float32(nil), im.Pix...)
			r.Image = &im
		}
		if r.Tabular != nil {
			r.Tabular = append([]float32(nil), r.Tabular...)
		}
		out.Records[i] = r
	}
	return &out
}

// TestCommitOrder: the same records and the same salt give the same commitment whatever the
// records' order.
func TestCommitOrder(t *testing.T) {
	d := records(t)
	a := mustCommit(t, d, salt(1))
	if b := mustCommit(t, d, salt(1)); !bytes.Equal(a, b) {
		t.Fatal("two commitments to the same records under the same salt differ")
	}
	rev := records(t)
	for i, j := 0, len(rev.Records)-1; i < j; i, j = i+1, j-1 {
		rev.Records[i], rev.Records[j] = rev.Records[j], rev.Records[i]
	}
	if b := mustCommit(t, rev, salt(1)); !bytes.Equal(a, b) {
		t.Error("the commitment depends on the records' order")
	}
}

// TestCommitSalt: another salt gives another commitment to the same records; NewSalt draws
// SaltSize random bytes.
func TestCommitSalt(t *testing.T) {
	d := records(t)
	a := mustCommit(t, d, salt(1))
	if b := mustCommit(t, d, salt(2)); bytes.Equal(a, b) {
		t.Error("two salts give the same commitment")
	}
	s1, err := lineage.NewSalt()
	if err != nil {
		t.Fatal(err)
	}
	s2, err := lineage.NewSalt()
	if err != nil {
		t.Fatal(err)
	}
	if len(s1) != lineage.SaltSize || bytes.Equal(s1, s2) {
		t.Fatalf("NewSalt gave %x and %x", s1, s2)
	}
	if bytes.Equal(mustCommit(t, d, s1), mustCommit(t, d, s2)) {
		t.Error("two new salts give the same commitment")
	}
}

// TestCommitChanges: any change to the records (one record's id, label, text, image or
// tabular fields, one record more or one less) changes the commitment.
func TestCommitChanges(t *testing.T) {
	s := salt(7)
	base := mustCommit(t, records(t), s)
	changes := map[string]func(d *dataset.Dataset){
		"id":            func(d *dataset.Dataset) { d.Records[3].ID += "x" },
		"label":         func(d *dataset.Dataset) { d.Records[3].Label++ },
		"text":          func(d *dataset.Dataset) { d.Records[3].Text += " " },
		"image pixel":   func(d *dataset.Dataset) { d.Records[3].Image.Pix[0] += 1e-6 },
		"image removed": func(d *dataset.Dataset) { d.Records[3].Image = nil },
		"image shape": func(d *dataset.Dataset) {
			im := d.Records[3].Image
			im.H, im.W = im.W*im.H, 1
		},
		"tabular field":   func(d *dataset.Dataset) { d.Records[3].Tabular[0] = -d.Records[3].Tabular[0] - 1 },
		"tabular removed": func(d *dataset.Dataset) { d.Records[3].Tabular = nil },
		"tabular empty":   func(d *dataset.Dataset) { d.Records[3].Tabular = []float32{} },
		"record removed":  func(d *dataset.Dataset) { d.Records = d.Records[1:] },
		"record added": func(d *dataset.Dataset) {
			r := d.Records[0]
			r.ID += "-copy"
			d.Records = append(d.Records, r)
		},
		"record duplicated": func(d *dataset.Dataset) { d.Records = append(d.Records, d.Records[0]) },
	}
	for name, change := range changes {
		d := records(t)
		change(d)
		if bytes.Equal(mustCommit(t, d, s), base) {
			t.Errorf("%s: the commitment did not change", name)
		}
	}
}

// TestCommitEncoding pins the construction: HMAC-SHA-256 under the salt of the v2 domain, the
// record count and, for each record, its id and the SHA-256 of its content.
func TestCommitEncoding(t *testing.T) {
	r := dataset.Record{ID: "r1", Label: 2, Text: "hello", Tabular: []float32{1.5}}
	u64 := func(b []byte, v uint64) []byte { return binary.BigEndian.AppendUint64(b, v) }
	rec := []byte("fedweave/dataset-record/v1\x00")
	rec = u64(rec, 2)
	rec = append(u64(rec, 5), "hello"...)
	rec = append(rec, 0) // no image
	rec = append(rec, 1) // tabular
	rec = binary.BigEndian.AppendUint32(u64(rec, 1), math.Float32bits(1.5))
	rh := sha256.Sum256(rec)
	msg := []byte("fedweave/dataset-commitment/v2\x00")
	msg = u64(msg, 1)
	msg = append(u64(msg, 2), "r1"...)
	msg = append(msg, rh[:]...)
	m := hmac.New(sha256.New, salt(9))
	m.Write(msg)
	want := m.Sum(nil)
	if got := mustCommit(t, &dataset.Dataset{Records: []dataset.Record{r}}, salt(9)); !bytes.Equal(got, want) {
		t.Errorf("commitment %x, want %x", got, want)
	}
	// No records: nil and empty datasets commit alike.
	if !bytes.Equal(mustCommit(t, nil, salt(9)), mustCommit(t, &dataset.Dataset{}, salt(9))) {
		t.Error("nil and empty datasets commit differently")
	}
}

// TestOpen: a commitment opens with its salt and records only.
func TestOpen(t *testing.T) {
	d := records(t)
	s := salt(3)
	c := mustCommit(t, d, s)
	if !lineage.Open(d, s, c) {
		t.Fatal("the commitment does not open with its salt and records")
	}
	other := records(t)
	other.Records[0].Label++
	fewer := records(t)
	fewer.Records = fewer.Records[1:]
	cases := []struct {
		name       string
		d          *dataset.Dataset
		salt, comm []byte
	}{
		{"another salt", d, salt(4), c},
		{"a changed record", other, s, c},
		{"one record less", fewer, s, c},
		{"no records", nil, s, c},
		{"a short salt", d, s[:31], c},
		{"no salt", d, nil, c},
		{"a truncated commitment", d, s, c[:lineage.Size-1]},
		{"a longer commitment", d, s, append(append([]byte(nil), c...), 0)},
		{"no commitment", d, s, nil},
		{"a flipped bit", d, s, func() []byte { b := bytes.Clone(c); b[5] ^= 1; return b }()},
	}
	for _, tc := range cases {
		if lineage.Open(tc.d, tc.salt, tc.comm) {
			t.Errorf("%s: the commitment opens", tc.name)
		}
	}
}

// TestCommitSaltLength: a salt of any length but SaltSize is an error (ErrSalt), not a panic.
func TestCommitSaltLength(t *testing.T) {
	d := records(t)
	for _, n := range []int{0, 1, 16, lineage.SaltSize - 1, lineage.SaltSize + 1, 64} {
		c, err := lineage.Commit(d, make([]byte, n))
		if !errors.Is(err, lineage.ErrSalt) || c != nil {
			t.Errorf("salt of %d bytes: %x, %v; want ErrSalt", n, c, err)
		}
	}
	if _, err := lineage.Commit(d, nil); !errors.Is(err, lineage.ErrSalt) {
		t.Errorf("nil salt: %v, want ErrSalt", err)
	}
}
