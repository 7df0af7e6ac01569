package client

import (
	"encoding/json"
	"errors"
	"math"
	"path/filepath"
	"strings"
	"testing"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/models"
)

func TestClipL2(t *testing.T) {
	v := []float32{3, 4, 0}
	ClipL2(v, 10) // within: untouched
	if v[0] != 3 || v[1] != 4 {
		t.Fatalf("clipped a vector within the bound: %v", v)
	}
	ClipL2(v, 1)
	if n := math.Sqrt(norm2(v)); n > 1 || n < 0.999 {
		t.Fatalf("norm %v after clipping to 1", n)
	}
	if math.Abs(float64(v[0]/v[1])-0.75) > 1e-6 {
		t.Errorf("direction changed: %v", v)
	}
	big := make([]float32, 100000)
	for i := range big {
		big[i] = float32(i%7) - 3.3
	}
	ClipL2(big, 0.1)
	if norm2(big) > 0.01 {
		t.Errorf("norm² %v over 0.01", norm2(big))
	}
}

func TestRoundDPAndBudget(t *testing.T) {
	d, err := roundDP("secagg", []byte(`{"quant":{},"noise":5,"dp_clip":2}`))
	if err != nil || d == nil || d.Clip != 2 {
		t.Fatalf("roundDP = %+v, %v", d, err)
	}
	if d, err := roundDP("secagg", []byte(`{"quant":{}}`)); d != nil || err != nil {
		t.Fatalf("no DP: %+v, %v", d, err)
	}
	if _, err := roundDP("secagg", []byte(`{"dp_clip":0}`)); err == nil {
		t.Error("clip 0 accepted")
	}
	if err := (&SharingPolicy{MaxEpsilon: -1}).Validate(); err == nil {
		t.Error("negative max_epsilon valid")
	}
	if err := (&SharingPolicy{Delta: 1}).Validate(); err == nil {
		t.Error("delta 1 valid")
	}
}

// TestRecordDPSettings: a round's DP-SGD settings become local training's, and malformed ones
// are refused with what is wrong.
func TestRecordDPSettings(t *testing.T) {
	if p, err := recordDP(nil); p != nil || err != nil {
		t.Fatalf("no DP-SGD: %+v, %v", p, err)
	}
	p, err := recordDP(&pb.DPSGD{Clip: 1, NoiseMultiplier: 1.1, SampleRate: 0.05, NormalizerNoise: 4})
	if err != nil || p.Clip != 1 || p.NoiseMultiplier != 1.1 || p.SampleRate != 0.05 || p.NormalizerNoise != 4 {
		t.Fatalf("recordDP = %+v, %v", p, err)
	}
	for _, bad := range []*pb.DPSGD{
		{Clip: 0, NoiseMultiplier: 1, SampleRate: 0.1, NormalizerNoise: 4},
		{Clip: 1, NoiseMultiplier: math.NaN(), SampleRate: 0.1, NormalizerNoise: 4},
		{Clip: 1, NoiseMultiplier: 1, SampleRate: 1.5, NormalizerNoise: 4},
		{Clip: 1, NoiseMultiplier: 1, SampleRate: 0.1, NormalizerNoise: 0},
	} {
		if _, err := recordDP(bad); err == nil || !strings.Contains(err.Error(), "malformed DP-SGD") {
			t.Errorf("%v: %v", bad, err)
		}
	}
}

// TestLedgerBudget: the ledger composes a unit's curves across tasks (less than the sum of
// the tasks' epsilons, more than either), keeps units apart, and the sharing policy refuses
// the round that would take a unit past max_epsilon, or a round without DP when it sets one.
func TestLedgerBudget(t *testing.T) {
	l := NewLedger()
	round, err := recordRDP(&models.DPSGD{Clip: 1, NoiseMultiplier: 1, SampleRate: 0.05}, 1, false, l.Orders())
	if err != nil {
		t.Fatal(err)
	}
	for range 3 {
		if err := l.Charge("triage", UnitRecord, round, 0, 1e-5); err != nil {
			t.Fatal(err)
		}
	}
	one := l.Epsilon(UnitRecord, 1e-5)
	if err := l.Charge("readmission", UnitRecord, round, 0, 1e-5); err != nil {
		t.Fatal(err)
	}
	all := l.Epsilon(UnitRecord, 1e-5)
	rep := l.Report(1e-5)
	if len(rep) != 3 || rep[0].Task != "" || rep[0].Epsilon != all || rep[0].Rounds != 4 || rep[1].Task != "readmission" || rep[2].Task != "triage" || rep[2].Epsilon != one {
		t.Fatalf("report %+v", rep)
	}
	if !(all > one && all < one+rep[1].Epsilon) {
		t.Errorf("composed %v, tasks %v and %v", all, one, rep[1].Epsilon)
	}
	if l.Epsilon(UnitPartner, 1e-5) != 0 {
		t.Error("the partner unit was charged")
	}
	var none *SharingPolicy
	if err := none.checkBudget(l, nil); err != nil {
		t.Error(err)
	}
	next := l.Would(UnitRecord, round, 1e-5)
	charges := map[string][]float64{UnitRecord: round}
	if err := (&SharingPolicy{MaxEpsilon: next * 1.01}).checkBudget(l, charges); err != nil {
		t.Errorf("under budget: %v", err)
	}
	err = (&SharingPolicy{MaxEpsilon: next * 0.99}).checkBudget(l, charges)
	if !errors.Is(err, ErrNotShared) || !strings.Contains(err.Error(), "per record") {
		t.Errorf("over budget: %v", err)
	}
	if err := (&SharingPolicy{MaxEpsilon: 100}).checkBudget(l, nil); !errors.Is(err, ErrNotShared) {
		t.Errorf("a round without DP: %v", err)
	}
	before := l.Epsilon(UnitRecord, 1e-5)
	if err := l.Charge("triage", UnitRecord, round, next*0.99, 1e-5); !errors.Is(err, ErrBudget) {
		t.Errorf("a charge over the cap: %v", err)
	}
	if l.Epsilon(UnitRecord, 1e-5) != before {
		t.Error("a refused charge was counted")
	}
	if err := l.Charge("triage", UnitRecord, round, next*1.01, 1e-5); err != nil {
		t.Errorf("a charge under the cap: %v", err)
	}
}

// TestLedgerSharedByStore: clients on one open Store share one Ledger, so that charges of two
// tasks both land in the store and one budget covers them; a reopened Store reads both back.
func TestLedgerSharedByStore(t *testing.T) {
	dir := t.TempDir()
	opt := StoreOptions{Dir: filepath.Join(dir, "store"), KeyDir: filepath.Join(dir, "keys"), NoSync: true}
	st, err := OpenStore(opt)
	if err != nil {
		t.Fatal(err)
	}
	a, _ := OpenLedger(st)
	b, _ := OpenLedger(st)
	if a != b {
		t.Fatal("two ledgers for one store")
	}
	curve := make([]float64, len(a.Orders()))
	for i, o := range a.Orders() {
		curve[i] = o / 8
	}
	if err := a.Charge("triage", UnitRecord, curve, 0, 1e-5); err != nil {
		t.Fatal(err)
	}
	if err := b.Charge("readmit", UnitRecord, curve, 0, 1e-5); err != nil {
		t.Fatal(err)
	}
	st.Close()
	st, err = OpenStore(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	c, err := OpenLedger(st)
	if err != nil {
		t.Fatal(err)
	}
	if rep := c.Report(1e-5); len(rep) != 3 || rep[0].Rounds != 2 {
		t.Errorf("reopened: %+v", rep)
	}
}

// TestLedgerPersists: with a store the ledger is written through on every charge and read
// back by the next client on that store, sealed (the store's files do not hold it in clear).
func TestLedgerPersists(t *testing.T) {
	dir := t.TempDir()
	opt := StoreOptions{Dir: filepath.Join(dir, "store"), KeyDir: filepath.Join(dir, "keys"), NoSync: true}
	st, err := OpenStore(opt)
	if err != nil {
		t.Fatal(err)
	}
	l, err := OpenLedger(st)
	if err != nil {
		t.Fatal(err)
	}
	curve := make([]float64, len(l.Orders()))
	for i, a := range l.Orders() {
		curve[i] = a / 2 // a Gaussian mechanism of noise multiplier 1
	}
	if err := l.Charge("triage", UnitPartner, curve, 0, 1e-5); err != nil {
		t.Fatal(err)
	}
	want := l.Epsilon(UnitPartner, 1e-5)
	st.Close()
	st, err = OpenStore(opt)
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	again, err := OpenLedger(st)
	if err != nil {
		t.Fatal(err)
	}
	if got := again.Epsilon(UnitPartner, 1e-5); got != want || want == 0 {
		t.Errorf("reopened: epsilon %v, want %v", got, want)
	}
	if err := again.Charge("triage", UnitPartner, curve[:3], 0, 1e-5); err == nil {
		t.Error("a curve at other orders charged")
	}
}

// TestLedgerRefusesCorruption: a ledger in the store that does not decode, was kept at other
// orders, names an unknown unit or holds a negative or infinite value is refused with what is
// wrong, and the store's other contents are left alone (nothing is overwritten).
func TestLedgerRefusesCorruption(t *testing.T) {
	dir := t.TempDir()
	st, err := OpenStore(StoreOptions{Dir: filepath.Join(dir, "store"), KeyDir: filepath.Join(dir, "keys"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	orders, _ := json.Marshal(NewLedger().Orders())
	zeros := strings.TrimSuffix(strings.Repeat("0,", len(NewLedger().Orders())), ",")
	for _, tc := range []struct{ name, body, want string }{
		{"not_json", `{"orders":`, "privacy ledger"},
		{"other_orders", `{"orders":[2,3],"entries":[]}`, "other Rényi orders"},
		{"unknown_unit", `{"orders":` + string(orders) + `,"entries":[{"task":"t","unit":"cohort","rounds":1,"rdp":[` + zeros + `]}]}`, "malformed entry"},
		{"short_curve", `{"orders":` + string(orders) + `,"entries":[{"task":"t","unit":"record","rounds":1,"rdp":[0]}]}`, "malformed entry"},
		{"negative", `{"orders":` + string(orders) + `,"entries":[{"task":"t","unit":"record","rounds":1,"rdp":[-1` + strings.Repeat(",0", len(NewLedger().Orders())-1) + `]}]}`, "malformed entry"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if err := st.PutSecret(ledgerSecret, []byte(tc.body)); err != nil {
				t.Fatal(err)
			}
			if _, err := OpenLedger(st); err == nil || !strings.Contains(err.Error(), tc.want) {
				t.Errorf("OpenLedger: %v, want an error naming %q", err, tc.want)
			}
			if b, _ := st.Secret(ledgerSecret); string(b) != tc.body {
				t.Error("the stored ledger changed")
			}
		})
	}
}
