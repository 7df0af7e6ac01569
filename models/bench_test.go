package models

import (
	"math/rand/v2"
	"testing"

	"github.com/fedweave/fedweave/fusion"
)

// The BenchmarkTrainStep* benchmarks time one optimizer step (forward, backward, Adam) at batch
// 64 for each encoder followed by a linear classifier (the late head over one modality). The
// same models in PyTorch are in testdata/torch_bench.py, for a comparison on one machine in one
// sitting: see the samples/s metric.

func benchStep(b *testing.B, spec Spec) {
	m, err := New(spec, 1)
	if err != nil {
		b.Fatal(err)
	}
	const batch = 64
	d := randomEncoded(&spec, batch, rand.New(rand.NewPCG(1, 1)))
	n, err := m.trainNet(batch)
	if err != nil {
		b.Fatal(err)
	}
	rows := make([]batchRow, batch)
	for i := range rows {
		rows[i] = batchRow{rec: i, weight: 1, present: d.present[i]}
	}
	var sc scratch
	grads := make([]float32, m.NumParams())
	opt := NewAdam(0.003)
	b.ResetTimer()
	for range b.N {
		n.fill(d, rows, spec.Classes, &sc)
		if err := n.run(); err != nil {
			b.Fatal(err)
		}
		if err := n.gradients(grads); err != nil {
			b.Fatal(err)
		}
		opt.Step(m.params, grads)
	}
	b.ReportMetric(float64(batch*b.N)/b.Elapsed().Seconds(), "samples/s")
}

func BenchmarkTrainStepText(b *testing.B) {
	benchStep(b, Spec{Classes: 4, Dim: 32, Hidden: 64, Fusion: fusion.Late,
		Text: &TextSpec{Buckets: 2048, MaxLen: 24, EmbedDim: 32, Filters: 48, Kernel: 3, Attention: 32}})
}

func BenchmarkTrainStepImage(b *testing.B) {
	benchStep(b, Spec{Classes: 10, Dim: 32, Hidden: 64, Fusion: fusion.Late,
		Image: &ImageSpec{C: 1, H: 28, W: 28, Conv1: 8, Conv2: 16}})
}

func BenchmarkTrainStepTabular(b *testing.B) {
	benchStep(b, Spec{Classes: 4, Dim: 32, Hidden: 64, Fusion: fusion.Late,
		Tabular: &TabularSpec{Fields: 6, Hidden: 64}})
}

// BenchmarkTrainStepFused is the demo's model: all three encoders (16x16 images) and the gated
// head.
func BenchmarkTrainStepFused(b *testing.B) {
	spec := syntheticSpec(fusion.Gated)
	benchStep(b, spec)
}
