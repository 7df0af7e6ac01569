package dataset

import (
	"math"
	"reflect"
	"slices"
	"strconv"
	"strings"
	"testing"
)

func TestSplit(t *testing.T) {
	d := Synthetic(SyntheticConfig{N: 1000, Seed: 9})
	d.Records[0].Label, d.Records[1].Label = -1, -1 // unknown labels are a stratum too
	for _, tc := range []struct {
		name     string
		frac     float64
		wantTest int
	}{
		{"fifth", 0.2, 200},
		{"none", 0, 0},
		{"all", 1, 1000},
		{"negative clamps", -0.5, 0},
		{"above one clamps", 7, 1000},
		{"NaN", math.NaN(), 0},
	} {
		t.Run(tc.name, func(t *testing.T) {
			train, test := Split(d, tc.frac, 1)
			if len(test.Records) != tc.wantTest || len(train.Records)+len(test.Records) != 1000 {
				t.Fatalf("train %d, test %d, want test %d", len(train.Records), len(test.Records), tc.wantTest)
			}
			seen := map[string]bool{}
			for _, part := range []*Dataset{train, test} {
				if err := part.Validate(); err != nil {
					t.Fatal(err)
				}
				if !reflect.DeepEqual(part.Schema, d.Schema) {
					t.Fatal("schema changed")
				}
				for _, r := range part.Records {
					if seen[r.ID] {
						t.Fatalf("%s in both sets", r.ID)
					}
					seen[r.ID] = true
				}
				if !slices.IsSortedFunc(part.Records, func(a, b Record) int { return strings.Compare(a.ID, b.ID) }) {
					t.Fatal("original order not kept")
				}
			}
			// Stratified: each label's share of test is frac * count,
			// rounded down or up.
			frac := min(max(tc.frac, 0), 1)
			if math.IsNaN(frac) {
				frac = 0
			}
			all, inTest := labelCounts(d), labelCounts(test)
			for l, n := range all {
				exact := frac * float64(n)
				if got := float64(inTest[l]); got != math.Floor(exact) && got != math.Ceil(exact) {
					t.Errorf("label %d: %d of %d in test, want %.1f rounded", l, inTest[l], n, exact)
				}
			}
		})
	}
	t.Run("deterministic", func(t *testing.T) {
		a, _ := Split(d, 0.3, 5)
		b, _ := Split(d, 0.3, 5)
		c, _ := Split(d, 0.3, 6)
		if !slices.Equal(ids(a), ids(b)) {
			t.Fatal("same seed, different split")
		}
		if slices.Equal(ids(a), ids(c)) {
			t.Fatal("different seeds, same split")
		}
	})
	t.Run("nil", func(t *testing.T) {
		train, test := Split(nil, 0.5, 1)
		if train == nil || test == nil || len(train.Records)+len(test.Records) != 0 {
			t.Fatal("nil dataset")
		}
	})
}

func labelCounts(d *Dataset) map[int]int {
	m := map[int]int{}
	for _, l := range d.Labels() {
		m[l]++
	}
	return m
}

// checkPartition fails unless parts assigns every index of n exactly once,
// in ascending lists.
func checkPartition(t *testing.T, parts [][]int, n int) {
	t.Helper()
	seen := make([]int, n)
	for k, p := range parts {
		if !slices.IsSorted(p) {
			t.Fatalf("client %d's indices are not sorted", k)
		}
		for _, i := range p {
			if i < 0 || i >= n {
				t.Fatalf("client %d has index %d out of range", k, i)
			}
			seen[i]++
		}
	}
	for i, c := range seen {
		if c != 1 {
			t.Fatalf("index %d assigned %d times", i, c)
		}
	}
}

// skew is the mean total-variation distance between each client's label
// distribution and the global one: 0 for IID, near 1 when clients each
// hold one class of many.
func skew(labels []int, numClasses int, parts [][]int) float64 {
	global := make([]float64, numClasses)
	for _, l := range labels {
		global[l] += 1 / float64(len(labels))
	}
	total := 0.0
	for _, p := range parts {
		local := make([]float64, numClasses)
		for _, i := range p {
			local[labels[i]] += 1 / float64(len(p))
		}
		tv := 0.0
		for c := range local {
			tv += math.Abs(local[c]-global[c]) / 2
		}
		total += tv
	}
	return total / float64(len(parts))
}

func TestDirichletPartition(t *testing.T) {
	const numClasses, n = 10, 5000
	labels := make([]int, n)
	for i := range labels {
		labels[i] = i % numClasses
	}
	for _, tc := range []struct {
		name             string
		alpha            float64
		clients          int
		minSkew, maxSkew float64
	}{
		{"alpha 0.05 is skewed", 0.05, 10, 0.6, 1},
		{"alpha 0.5 is skewed", 0.5, 10, 0.3, 0.8},
		{"alpha 1000 is near IID", 1000, 10, 0, 0.05},
		{"alpha +Inf is IID", math.Inf(1), 10, 0, 0.01},
		{"alpha 0 means IID", 0, 10, 0, 0.01},
		{"alpha tiny", 1e-300, 7, 0.7, 1},
		{"one client", 0.1, 1, 0, 0},
		{"many clients", 0.1, 300, 0, 1},
	} {
		t.Run(tc.name, func(t *testing.T) {
			parts := DirichletPartition(labels, numClasses, tc.clients, tc.alpha, 3)
			if len(parts) != tc.clients {
				t.Fatalf("%d parts, want %d", len(parts), tc.clients)
			}
			checkPartition(t, parts, n)
			for k, p := range parts {
				if len(p) == 0 {
					t.Fatalf("client %d is empty", k)
				}
			}
			s := skew(labels, numClasses, parts)
			t.Logf("skew %.3f", s)
			if s < tc.minSkew || s > tc.maxSkew {
				t.Errorf("skew %.3f, want in [%v, %v]", s, tc.minSkew, tc.maxSkew)
			}
			if !reflect.DeepEqual(parts, DirichletPartition(labels, numClasses, tc.clients, tc.alpha, 3)) {
				t.Error("same seed, different partition")
			}
		})
	}
	t.Run("IID sizes are balanced", func(t *testing.T) {
		parts := DirichletPartition(labels[:4999], numClasses, 4, math.Inf(1), 1)
		for k, p := range parts {
			if len(p) < 1249 || len(p) > 1251 {
				t.Errorf("client %d has %d of 4999", k, len(p))
			}
		}
	})
	t.Run("edge cases", func(t *testing.T) {
		if DirichletPartition(labels, numClasses, 0, 1, 1) != nil || DirichletPartition(labels, numClasses, MaxClients+1, 1, 1) != nil {
			t.Error("0 or too many clients: want nil")
		}
		checkPartition(t, DirichletPartition(labels, 1<<62, 3, 0.5, 1), n)
		odd := []int{-1, 3, 99, 0, -7}
		parts := DirichletPartition(odd, 2, 2, 0.3, 1)
		checkPartition(t, parts, len(odd))
		few := DirichletPartition([]int{0, 1}, 2, 5, 0.3, 1)
		checkPartition(t, few, 2)
		if len(few) != 5 {
			t.Errorf("%d parts for 5 clients", len(few))
		}
		empty := DirichletPartition(nil, 3, 2, 1, 1)
		if len(empty) != 2 || len(empty[0])+len(empty[1]) != 0 {
			t.Errorf("no labels: %v", empty)
		}
		checkPartition(t, DirichletPartition(labels, -3, 4, math.NaN(), 1), n)
	})
}

func TestStandardAvailabilities(t *testing.T) {
	all, tt, it, ti := AllModalities, Availability{Text: true, Tabular: true}, Availability{Image: true, Tabular: true}, Availability{Text: true, Image: true}
	for _, tc := range []struct {
		clients int
		want    []Availability
	}{
		{0, nil},
		{-2, nil},
		{MaxClients + 1, nil},
		{1, []Availability{all}},
		{2, []Availability{all, tt}},
		{4, []Availability{all, tt, it, ti}},
		{6, []Availability{all, tt, it, ti, all, tt}},
	} {
		t.Run("clients="+strconv.Itoa(tc.clients), func(t *testing.T) {
			if got := StandardAvailabilities(tc.clients); !slices.Equal(got, tc.want) {
				t.Fatalf("got %v, want %v", got, tc.want)
			}
		})
	}
	t.Run("string", func(t *testing.T) {
		for a, want := range map[Availability]string{all: "text+image+tabular", tt: "text+tabular", {}: "none"} {
			if got := a.String(); got != want {
				t.Errorf("String() = %q, want %q", got, want)
			}
		}
	})
}

func TestApplyAvailability(t *testing.T) {
	d := validDataset() // r1 all, r2 text, r3 tabular
	for _, tc := range []struct {
		name    string
		a       Availability
		wantIDs []string
		counts  [NumModalities]int
	}{
		{"all", AllModalities, []string{"r1", "r2", "r3"}, [NumModalities]int{2, 1, 2}},
		{"text+tabular", Availability{Text: true, Tabular: true}, []string{"r1", "r2", "r3"}, [NumModalities]int{2, 0, 2}},
		{"image only", Availability{Image: true}, []string{"r1"}, [NumModalities]int{0, 1, 0}},
		{"tabular only", Availability{Tabular: true}, []string{"r1", "r3"}, [NumModalities]int{0, 0, 2}},
		{"none", Availability{}, []string{}, [NumModalities]int{}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			out := ApplyAvailability(d, tc.a)
			if got := ids(out); !slices.Equal(got, tc.wantIDs) {
				t.Fatalf("ids = %v, want %v", got, tc.wantIDs)
			}
			if got := out.ModalityCounts(); got != tc.counts {
				t.Fatalf("counts = %v, want %v", got, tc.counts)
			}
			if !reflect.DeepEqual(out.Schema, d.Schema) {
				t.Fatal("schema changed")
			}
			if err := out.Validate(); err != nil {
				t.Fatal(err)
			}
		})
	}
	if d.ModalityCounts() != [NumModalities]int{2, 1, 2} {
		t.Fatal("ApplyAvailability modified its input")
	}
	if got := ApplyAvailability(nil, AllModalities); got == nil || len(got.Records) != 0 {
		t.Fatal("nil input")
	}
}
