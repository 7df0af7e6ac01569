package client

import (
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/models"
)

func TestLoadSharingPolicy(t *testing.T) {
	dir := t.TempDir()
	for _, tc := range []struct {
		name, text string
		want       SharingPolicy
		err        string
	}{
		{name: "yaml", text: "federations: [acme]\ntasks: [triage]\nmodalities: [text, tabular]\npurposes: [research]\n",
			want: SharingPolicy{Federations: []string{"acme"}, Tasks: []string{"triage"}, Modalities: []string{"text", "tabular"}, Purposes: []string{"research"}}},
		{name: "json", text: `{"modalities": []}`, want: SharingPolicy{Modalities: []string{}}},
		{name: "empty", text: "", want: SharingPolicy{}},
		{name: "unknown field", text: "modality: [text]\n", err: `unknown field "modality"`},
		{name: "unknown modality", text: "modalities: [text, audio]\n", err: `unknown modality "audio"`},
		{name: "modality in capitals", text: "modalities: [Text]\n", err: `unknown modality "Text"`},
	} {
		t.Run(tc.name, func(t *testing.T) {
			path := filepath.Join(dir, strings.ReplaceAll(tc.name, " ", "-")+".yaml")
			if err := os.WriteFile(path, []byte(tc.text), 0o600); err != nil {
				t.Fatal(err)
			}
			p, err := LoadSharingPolicy(path)
			if tc.err != "" {
				if err == nil || !strings.Contains(err.Error(), tc.err) {
					t.Fatalf("err = %v, want %q", err, tc.err)
				}
				return
			}
			if err != nil {
				t.Fatal(err)
			}
			if strings.Join(p.Modalities, ",") != strings.Join(tc.want.Modalities, ",") || (p.Modalities == nil) != (tc.want.Modalities == nil) ||
				strings.Join(p.Purposes, ",") != strings.Join(tc.want.Purposes, ",") || strings.Join(p.Federations, ",") != strings.Join(tc.want.Federations, ",") {
				t.Errorf("got %+v, want %+v", p, tc.want)
			}
		})
	}
}

func TestSharingPolicyAllows(t *testing.T) {
	var none *SharingPolicy
	if !none.AllowsFederation("x") || !none.AllowsPurpose("x") || !none.AllowsModality(dataset.Image) || none.Strip(nil) != nil {
		t.Error("a nil policy restricts")
	}
	p := &SharingPolicy{Federations: []string{"acme"}, Purposes: []string{}, Modalities: []string{"text"}}
	if !p.AllowsFederation("acme") || p.AllowsFederation("other") || !p.AllowsTask("any") || p.AllowsPurpose("research") ||
		!p.AllowsModality(dataset.Text) || p.AllowsModality(dataset.Image) {
		t.Errorf("%+v allows the wrong things", p)
	}
	if err := p.checkTerms("acme", "triage", "research"); !errors.Is(err, ErrNotShared) || !strings.Contains(err.Error(), `"research"`) {
		t.Errorf("checkTerms: %v", err)
	}
	if err := p.checkTask("other", "triage"); !errors.Is(err, ErrNotShared) {
		t.Errorf("checkTask: %v", err)
	}
}

// Strip removes the modalities a policy withholds, drops the records left with none, and
// leaves its input alone.
func TestSharingPolicyStrip(t *testing.T) {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 40, Seed: 1})
	r := d.Records[0].Without(dataset.Text)
	d.Records[0] = r.Without(dataset.Tabular) // an image alone
	before := d.ModalityCounts()
	p := &SharingPolicy{Modalities: []string{"text", "tabular"}}
	s := p.Strip(d)
	if got := s.ModalityCounts(); got[dataset.Image] != 0 || got[dataset.Text] != before[dataset.Text] || len(s.Records) != len(d.Records)-1 {
		t.Errorf("stripped: %v over %d records, from %v over %d", got, len(s.Records), before, len(d.Records))
	}
	if d.ModalityCounts() != before {
		t.Error("Strip changed its input")
	}
	if err := s.Validate(); err != nil {
		t.Error(err)
	}
}

// The protocol wrapper sends zero change and zero weight for a withheld modality's encoder,
// whatever the input says.
func TestSharingProtocol(t *testing.T) {
	groups := []uint8{models.GroupText, models.GroupImage, models.GroupImage, models.GroupTabular, models.GroupFusion}
	p := agg.Params{Round: 1, NumValues: len(groups), NumGroups: models.NumGroups, Groups: groups}
	in := agg.Input{Values: []float32{1, 2, 3, 4, 5}, Weights: []float64{10, 20, 30, 40}}
	proto := (&SharingPolicy{Modalities: []string{"text", "tabular"}}).protect(agg.Plain{})
	c, err := proto.NewClient(p, 1, in)
	if err != nil {
		t.Fatal(err)
	}
	msg, err := c.Phase(0, nil)
	if err != nil {
		t.Fatal(err)
	}
	got, err := agg.DecodePlain(p, msg)
	if err != nil {
		t.Fatal(err)
	}
	want := agg.Input{Values: []float32{1, 0, 0, 4, 5}, Weights: []float64{10, 0, 30, 40}}
	for i := range want.Values {
		if got.Values[i] != want.Values[i] {
			t.Errorf("values %v, want %v", got.Values, want.Values)
			break
		}
	}
	for g := range want.Weights {
		if got.Weights[g] != want.Weights[g] {
			t.Errorf("weights %v, want %v", got.Weights, want.Weights)
			break
		}
	}
	if in.Values[1] != 2 || in.Weights[1] != 20 {
		t.Error("the wrapper changed the caller's input")
	}
	if (&SharingPolicy{}).protect(agg.Plain{}) != (agg.Plain{}) {
		t.Error("a policy that withholds nothing wraps the protocol")
	}
}
