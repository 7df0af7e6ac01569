package models

import (
	"context"
	"math"
	"math/rand/v2"
	"testing"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
)

func norm(g []float32) float64 {
	var s float64
	for _, x := range g {
		s += float64(x) * float64(x)
	}
	return math.Sqrt(s)
}

// TestDPSGDClipsEachExample checks per-example clipping without noise: one example's
// contribution to the batch gradient has norm exactly Clip when its gradient is larger, the
// batch gradient (a mean of clipped gradients) has norm at most Clip, and with a clip above
// every gradient's norm DP-SGD gives the mean of the unclipped per-example gradients.
func TestDPSGDClipsEachExample(t *testing.T) {
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 16, Seed: 3})
	m, err := New(DefaultSpec(d.Schema, fusion.Concat, true), 2)
	if err != nil {
		t.Fatal(err)
	}
	enc, _ := m.Encode(d)
	m.FitNormalizer(enc)
	n1, err := m.trainNet(1)
	if err != nil {
		t.Fatal(err)
	}
	var rows []batchRow
	for r := range 8 {
		rows = append(rows, batchRow{rec: r, weight: 1, present: enc.present[r]})
	}
	var sc scratch
	grads, one := make([]float32, len(m.params)), make([]float32, len(m.params))
	raw := make([]float32, len(m.params))
	var minNorm float64 = math.Inf(1)
	for _, r := range rows {
		n1.fill(enc, []batchRow{r}, m.Spec.Classes, &sc)
		if err := n1.run(); err != nil {
			t.Fatal(err)
		}
		if err := n1.gradients(one); err != nil {
			t.Fatal(err)
		}
		minNorm = min(minNorm, norm(one))
		for i := range raw {
			raw[i] += one[i] / float32(len(rows))
		}
	}
	t.Run("one_example_clipped", func(t *testing.T) {
		c := minNorm / 10
		if _, err := m.dpGradients(n1, enc, rows[:1], &sc, &DPSGD{Clip: c, Noise: rand.New(rand.NewPCG(1, 1))}, grads, one); err != nil {
			t.Fatal(err)
		}
		if got := norm(grads); math.Abs(got-c)/c > 1e-5 {
			t.Errorf("contribution of norm %v, want the clip %v", got, c)
		}
	})
	t.Run("batch_bounded", func(t *testing.T) {
		c := minNorm / 10
		if _, err := m.dpGradients(n1, enc, rows, &sc, &DPSGD{Clip: c, Noise: rand.New(rand.NewPCG(1, 1))}, grads, one); err != nil {
			t.Fatal(err)
		}
		if got := norm(grads); got > c*(1+1e-5) {
			t.Errorf("batch gradient of norm %v above the clip %v", got, c)
		}
	})
	t.Run("large_clip_is_plain_mean", func(t *testing.T) {
		if _, err := m.dpGradients(n1, enc, rows, &sc, &DPSGD{Clip: 1e9, Noise: rand.New(rand.NewPCG(1, 1))}, grads, one); err != nil {
			t.Fatal(err)
		}
		for i := range grads {
			if math.Abs(float64(grads[i]-raw[i])) > 1e-5*(1+math.Abs(float64(raw[i]))) {
				t.Fatalf("coordinate %d: %v, want %v", i, grads[i], raw[i])
			}
		}
	})
	t.Run("noise_sd", func(t *testing.T) {
		// Clip tiny so the signal vanishes: what remains is noise of sd sigma·C/B.
		c, sigma := 1e-6, 2.0
		if _, err := m.dpGradients(n1, enc, rows, &sc, &DPSGD{Clip: c, NoiseMultiplier: sigma, Noise: rand.New(rand.NewPCG(1, 1))}, grads, one); err != nil {
			t.Fatal(err)
		}
		var s float64
		var k int
		for _, seg := range m.layout.Segments {
			if seg.Trainable {
				for i := seg.Offset; i < seg.Offset+seg.Size(); i++ {
					s += float64(grads[i]) * float64(grads[i])
					k++
				}
			}
		}
		want := sigma * c / float64(len(rows))
		if got := math.Sqrt(s / float64(k)); math.Abs(got-want)/want > 0.1 {
			t.Errorf("noise sd %v, want %v (%d coordinates)", got, want, k)
		}
	})
	t.Run("train_runs", func(t *testing.T) {
		st, err := m.Train(context.Background(), enc, TrainConfig{BatchSize: 8, Seed: 1, DP: &DPSGD{Clip: 1, NoiseMultiplier: 1}})
		if err != nil || st.Steps != 2 {
			t.Fatalf("steps %d, err %v", st.Steps, err)
		}
	})
}
