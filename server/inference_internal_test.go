package server

import (
	"bytes"
	"encoding/json"
	"testing"
	"time"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/models"
)

func TestRateLimiter(t *testing.T) {
	now := time.Unix(1000, 0)
	l := newRateLimiter(2, 3)
	l.now = func() time.Time { return now }
	for i := range 3 {
		if ok, _ := l.allow("a"); !ok {
			t.Fatalf("call %d of the burst refused", i)
		}
	}
	ok, wait := l.allow("a")
	if ok || wait != 500*time.Millisecond {
		t.Fatalf("fourth call: %v, wait %v; want refused, 500ms", ok, wait)
	}
	if ok, _ := l.allow("b"); !ok {
		t.Fatal("another key shares a's bucket")
	}
	now = now.Add(500 * time.Millisecond)
	if ok, _ := l.allow("a"); !ok {
		t.Fatal("refilled token refused")
	}
	if ok, _ := l.allow("a"); ok {
		t.Fatal("one token refilled, two taken")
	}
	now = now.Add(time.Hour)
	for range 3 {
		if ok, _ := l.allow("a"); !ok {
			t.Fatal("the bucket did not refill to its burst")
		}
	}
	if ok, _ := l.allow("a"); ok {
		t.Fatal("the bucket refilled past its burst")
	}
	// Past maxBuckets, full buckets are dropped.
	for i := range maxBuckets + 10 {
		l.allow(string(rune(0x4e00 + i)))
	}
	now = now.Add(time.Hour)
	l.allow("new")
	if n := len(l.buckets); n > 2 {
		t.Errorf("%d buckets kept after all were full again", n)
	}
}

// FuzzInferenceRequest: the HTTP body decoder and the record decoder behind it never panic,
// and a record they accept is one the model can encode.
func FuzzInferenceRequest(f *testing.F) {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 2, Seed: 1})
	spec := models.DefaultSpec(d.Schema, "gated", true)
	m, err := models.New(spec, 1)
	if err != nil {
		f.Fatal(err)
	}
	schema := taskNames{Classes: d.Schema.Classes, TabularFields: d.Schema.TabularFields}.schema(&spec)
	for i := range d.Records {
		rec, err := dataset.EncodeRecord(&d.Records[i], &d.Schema)
		if err != nil {
			f.Fatal(err)
		}
		f.Add([]byte(`{"round":1,"record":`+string(rec)+`}`), i == 0)
	}
	f.Add([]byte(`{"record":{"text":"x"},"class":"dune","samples":8}`), true)
	f.Add([]byte(`{"record":{"tabular":{"age":1e39}}}`), false)
	f.Add([]byte(`{"record":[1]} x`), false)
	f.Fuzz(func(t *testing.T, body []byte, explain bool) {
		q, err := decodeHTTPRequest(body, explain)
		if err != nil {
			return
		}
		if !bytes.HasPrefix(bytes.TrimSpace(q.Record), []byte("{")) || !json.Valid(q.Record) {
			t.Fatalf("accepted record %q", q.Record)
		}
		r, err := dataset.DecodeRecord(q.Record, &schema)
		if err != nil {
			return
		}
		if r.ID == "" {
			r.ID = "x"
		}
		if _, err := m.Encode(&dataset.Dataset{Records: []dataset.Record{r}}); err != nil {
			t.Fatalf("accepted a record the model cannot encode: %v", err)
		}
	})
}
