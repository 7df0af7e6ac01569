package dataset

import (
	"crypto/sha256"
	"encoding/binary"
	"encoding/hex"
	"math"
	"reflect"
	"strings"
	"testing"
)

func TestSyntheticDeterministic(t *testing.T) {
	cfg := SyntheticConfig{N: 200, Seed: 42}
	a, b := Synthetic(cfg), Synthetic(cfg)
	if !reflect.DeepEqual(a, b) {
		t.Fatal("same config, different data")
	}
	t.Run("prefix", func(t *testing.T) {
		small := Synthetic(SyntheticConfig{N: 50, Seed: 42})
		if !reflect.DeepEqual(small.Records, a.Records[:50]) {
			t.Fatal("record i depends on N")
		}
	})
	t.Run("seed matters", func(t *testing.T) {
		c := Synthetic(SyntheticConfig{N: 200, Seed: 43})
		same := 0
		for i := range c.Records {
			if c.Records[i].Text == a.Records[i].Text {
				same++
			}
		}
		if same > 5 {
			t.Fatalf("%d of 200 texts equal across seeds", same)
		}
	})
}

// TestSyntheticGolden pins the generator's output: other packages' tests
// and the demo's documented numbers depend on it. If a change to the
// generator is intended, update the digest.
func TestSyntheticGolden(t *testing.T) {
	const want = "5493f51381735d4724df35d7af3623ee04b5cd08b25b8002fdb6241bd078d79c"
	d := Synthetic(SyntheticConfig{N: 32, Seed: 7})
	if got := digest(d); got != want {
		t.Fatalf("Synthetic(N=32, Seed=7) digest = %s, want %s", got, want)
	}
}

// digest hashes a dataset's schema and records in a fixed encoding.
func digest(d *Dataset) string {
	h := sha256.New()
	str := func(s string) { binary.Write(h, binary.LittleEndian, uint64(len(s))); h.Write([]byte(s)) }
	num := func(v any) { binary.Write(h, binary.LittleEndian, v) }
	for _, c := range d.Schema.Classes {
		str(c)
	}
	for _, f := range d.Schema.TabularFields {
		str(f)
	}
	num([]int64{int64(d.Schema.ImageC), int64(d.Schema.ImageH), int64(d.Schema.ImageW)})
	for i := range d.Records {
		r := &d.Records[i]
		str(r.ID)
		num(int64(r.Label))
		str(r.Text)
		if r.Image != nil {
			num(r.Image.Pix)
		}
		num(r.Tabular)
	}
	return hex.EncodeToString(h.Sum(nil))
}

func TestSyntheticShape(t *testing.T) {
	for _, tc := range []struct {
		name     string
		cfg      SyntheticConfig
		wantSize int
	}{
		{"defaults", SyntheticConfig{N: 300, Seed: 1}, 16},
		{"small image clamped", SyntheticConfig{N: 300, Seed: 1, ImageSize: 3}, 10},
		{"large image", SyntheticConfig{N: 20, Seed: 1, ImageSize: 40}, 40},
		{"huge image clamped", SyntheticConfig{N: 2, Seed: 1, ImageSize: 1 << 20}, 256},
		{"negative N", SyntheticConfig{N: -5}, 16},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d := Synthetic(tc.cfg)
			if err := d.Validate(); err != nil {
				t.Fatal(err)
			}
			if len(d.Records) != max(tc.cfg.N, 0) {
				t.Fatalf("%d records", len(d.Records))
			}
			if s := d.Schema; s.ImageC != 1 || s.ImageH != tc.wantSize || s.ImageW != tc.wantSize || len(s.Classes) != 4 || len(s.TabularFields) != 6 {
				t.Fatalf("schema = %+v", s)
			}
			if d.ModalityCounts() != [NumModalities]int{len(d.Records), len(d.Records), len(d.Records)} {
				t.Fatalf("not every record has every modality: %v", d.ModalityCounts())
			}
			for i, r := range d.Records {
				n := len(strings.Fields(r.Text))
				if n < 6 || n > 14 {
					t.Fatalf("record %d has %d words: %q", i, n, r.Text)
				}
				if i == 0 && r.ID != "syn-000001" {
					t.Fatalf("first id %q", r.ID)
				}
				if r.Tabular[4] < 0 || r.Tabular[4] != float32(math.Round(float64(r.Tabular[4]))) {
					t.Fatalf("visits = %v", r.Tabular[4])
				}
			}
		})
	}
}

func TestSyntheticWords(t *testing.T) {
	seen := map[string]string{}
	for _, w := range syntheticFiller {
		if seen[w] != "" {
			t.Errorf("filler %q listed twice", w)
		}
		seen[w] = "filler"
	}
	for g, words := range syntheticSignal {
		if len(words) != 8 {
			t.Errorf("group %d has %d words", g, len(words))
		}
		for _, w := range words {
			if seen[w] != "" {
				t.Errorf("signal word %q is also %s", w, seen[w])
			}
			seen[w] = "signal"
		}
	}
	if n := len(syntheticFiller); n < 100 {
		t.Errorf("only %d filler words", n)
	}
}

func TestSyntheticBalance(t *testing.T) {
	const n = 8000
	d := Synthetic(SyntheticConfig{N: n, Seed: 3})
	var count [4]int
	for _, l := range d.Labels() {
		count[l]++
	}
	sigma := math.Sqrt(n * 0.25 * 0.75)
	for c, k := range count {
		if math.Abs(float64(k)-n/4) > 4*sigma {
			t.Errorf("class %d has %d of %d records", c, k, n)
		}
	}
}

func TestSyntheticBits(t *testing.T) {
	for y := range 4 {
		tx, im, tb := SyntheticBits(y)
		if 2*tx+im != y || tb != tx^im {
			t.Errorf("SyntheticBits(%d) = %d %d %d", y, tx, im, tb)
		}
	}
}

// TestSyntheticOracle checks the construction: one modality's shown bit
// leaves the label at chance between two classes, the three together
// recover it, and each modality's data really carries its bit.
func TestSyntheticOracle(t *testing.T) {
	const n = 20000
	d, shown := synthetic(SyntheticConfig{N: n, Seed: 11}, true)
	labels := d.Labels()

	t.Run("flip rate", func(t *testing.T) {
		for _, m := range Modalities {
			flips := 0
			for i, y := range labels {
				var truth [NumModalities]int
				truth[Text], truth[Image], truth[Tabular] = SyntheticBits(y)
				if shown[i][m] != truth[m] {
					flips++
				}
			}
			if rate := float64(flips) / n; math.Abs(rate-DefaultSyntheticFlip) > 0.005 {
				t.Errorf("%v: flip rate %.4f, want %.2f", m, rate, DefaultSyntheticFlip)
			}
		}
	})

	for _, m := range Modalities {
		t.Run("one modality: "+m.String(), func(t *testing.T) {
			// The Bayes-optimal guess from this bit alone.
			var table [2][4]int
			for i, y := range labels {
				table[shown[i][m]][y]++
			}
			correct := 0
			for _, row := range table {
				correct += max(row[0], row[1], row[2], row[3])
			}
			acc := float64(correct) / n
			t.Logf("oracle on %v alone: accuracy %.4f", m, acc)
			if acc > 0.52 {
				t.Errorf("oracle on %v alone: accuracy %.3f, want <= 0.5", m, acc)
			}
		})
	}

	t.Run("all modalities with parity", func(t *testing.T) {
		correct := 0
		for i, y := range labels {
			s := shown[i]
			b1, b2 := s[Text], s[Image]
			if b1^b2 != s[Tabular] {
				// The parity check failed: one modality is wrong, and
				// which one cannot be told. Distrust one in turn and
				// rebuild its bit from the other two.
				switch i % 3 {
				case 0:
					b1 = s[Tabular] ^ b2
				case 1:
					b2 = s[Tabular] ^ b1
				}
			}
			if 2*b1+b2 == y {
				correct++
			}
		}
		acc := float64(correct) / n
		t.Logf("three-modality oracle: accuracy %.4f", acc)
		if acc < 0.95 {
			t.Errorf("three-modality oracle: accuracy %.3f, want >= 0.95", acc)
		}
	})

	t.Run("text carries its bit", func(t *testing.T) {
		group := map[string]int{}
		for g, words := range syntheticSignal {
			for _, w := range words {
				group[w] = g + 1
			}
		}
		for i, r := range d.Records {
			var votes [2]int
			for _, w := range strings.Fields(r.Text) {
				if g := group[w]; g > 0 {
					votes[g-1]++
				}
			}
			bit := 0
			if votes[1] > votes[0] {
				bit = 1
			}
			if bit != shown[i][Text] || votes[0] == votes[1] {
				t.Fatalf("record %d: votes %v, shown bit %d: %q", i, votes, shown[i][Text], r.Text)
			}
		}
	})

	t.Run("image carries its bit", func(t *testing.T) {
		correct := 0
		for i, r := range d.Records {
			if barOrientation(r.Image) == shown[i][Image] {
				correct++
			}
		}
		acc := float64(correct) / n
		t.Logf("bar detector: accuracy %.4f", acc)
		if acc < 0.9 {
			t.Errorf("bar detector: accuracy %.3f, want >= 0.9", acc)
		}
	})

	t.Run("tabular carries its bit", func(t *testing.T) {
		// A linear rule on standardised income and score_a.
		mean, std := columnStats(d)
		correct := 0
		for i, r := range d.Records {
			z1 := (r.Tabular[1] - mean[1]) / std[1]
			z2 := (r.Tabular[2] - mean[2]) / std[2]
			bit := 0
			if z1-z2 > 0 {
				bit = 1
			}
			if bit == shown[i][Tabular] {
				correct++
			}
		}
		acc := float64(correct) / n
		t.Logf("linear rule: accuracy %.4f", acc)
		if acc < 0.965 || acc > 0.995 {
			t.Errorf("linear rule: accuracy %.4f, want about 0.98", acc)
		}
	})
}

// barOrientation returns 0 when the strongest 2x6 box response is
// horizontal and 1 when it is vertical.
func barOrientation(img *ImageData) int {
	s := img.W
	box := func(x0, y0, w, h int) float32 {
		var sum float32
		for y := y0; y < y0+h; y++ {
			for x := x0; x < x0+w; x++ {
				sum += img.Pix[y*s+x]
			}
		}
		return sum
	}
	var bestH, bestV float32
	for y := 0; y+2 <= s; y++ {
		for x := 0; x+6 <= s; x++ {
			bestH = max(bestH, box(x, y, 6, 2))
			bestV = max(bestV, box(y, x, 2, 6))
		}
	}
	if bestV > bestH {
		return 1
	}
	return 0
}

func columnStats(d *Dataset) (mean, std []float32) {
	k := len(d.Schema.TabularFields)
	sum, sq := make([]float64, k), make([]float64, k)
	for _, r := range d.Records {
		for j, v := range r.Tabular {
			sum[j] += float64(v)
			sq[j] += float64(v) * float64(v)
		}
	}
	n := float64(len(d.Records))
	mean, std = make([]float32, k), make([]float32, k)
	for j := range k {
		m := sum[j] / n
		mean[j] = float32(m)
		std[j] = float32(math.Sqrt(sq[j]/n - m*m))
	}
	return mean, std
}

func TestSyntheticFlipConfig(t *testing.T) {
	for _, tc := range []struct {
		name     string
		flip     float64
		min, max float64
	}{
		{"negative means none", -1, 0, 0},
		{"explicit", 0.1, 0.08, 0.12},
		{"clamped to one half", 3, 0.47, 0.53},
		{"NaN means default", math.NaN(), 0.01, 0.03},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, shown := synthetic(SyntheticConfig{N: 4000, Seed: 5, Flip: tc.flip}, true)
			flips := 0
			for i, y := range d.Labels() {
				if tx, _, _ := SyntheticBits(y); shown[i][Text] != tx {
					flips++
				}
			}
			if rate := float64(flips) / 4000; rate < tc.min || rate > tc.max {
				t.Errorf("text flip rate %.4f, want in [%v, %v]", rate, tc.min, tc.max)
			}
		})
	}
}

func BenchmarkSynthetic(b *testing.B) {
	for b.Loop() {
		Synthetic(SyntheticConfig{N: 1000, Seed: 1})
	}
}
