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
		if _, err := m.dpGradients(n1, enc, rows[:1], &sc, &DPSGD{Clip: c, Noise: rand.New(rand.NewPCG(1, 1))}, 1, grads, one); err != nil {
			t.Fatal(err)
		}
		if got := norm(grads); math.Abs(got-c)/c > 1e-5 {
			t.Errorf("contribution of norm %v, want the clip %v", got, c)
		}
	})
	t.Run("batch_bounded", func(t *testing.T) {
		c := minNorm / 10
		if _, err := m.dpGradients(n1, enc, rows, &sc, &DPSGD{Clip: c, Noise: rand.New(rand.NewPCG(1, 1))}, float64(len(rows)), grads, one); err != nil {
			t.Fatal(err)
		}
		if got := norm(grads); got > c*(1+1e-5) {
			t.Errorf("batch gradient of norm %v above the clip %v", got, c)
		}
	})
	t.Run("large_clip_is_plain_mean", func(t *testing.T) {
		if _, err := m.dpGradients(n1, enc, rows, &sc, &DPSGD{Clip: 1e9, Noise: rand.New(rand.NewPCG(1, 1))}, float64(len(rows)), grads, one); err != nil {
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
		if _, err := m.dpGradients(n1, enc, rows, &sc, &DPSGD{Clip: c, NoiseMultiplier: sigma, Noise: rand.New(rand.NewPCG(1, 1))}, float64(len(rows)), grads, one); err != nil {
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

// dpTestModel returns a model without a text encoder (cheaper graphs) and n synthetic records
// encoded for it, its normaliser still unset.
func dpTestModel(t *testing.T, n int) (*Model, *Encoded) {
	t.Helper()
	d := dataset.Synthetic(dataset.SyntheticConfig{N: n, Seed: 3})
	m, err := New(DefaultSpec(d.Schema, fusion.Concat, false), 2)
	if err != nil {
		t.Fatal(err)
	}
	enc, err := m.Encode(d)
	if err != nil {
		t.Fatal(err)
	}
	return m, enc
}

// recordingOpt is an Optimizer that keeps a copy of every gradient and leaves the parameters
// alone, so that every step of a training run sees the same model.
type recordingOpt struct{ grads [][]float32 }

func (o *recordingOpt) Step(_, g []float32) { o.grads = append(o.grads, append([]float32(nil), g...)) }

// TestDPSGDSteps checks the step count of Poisson sampling: DPSGD.Steps is
// epochs·ceil(1/SampleRate), TrainStats.Steps and the OnStep total agree with it, and steps
// whose sample came out empty still count (with 4 records at rate 0.05 most do).
func TestDPSGDSteps(t *testing.T) {
	for _, c := range []struct {
		q      float64
		epochs int
		want   int
	}{{0.5, 1, 2}, {0.3, 2, 8}, {1, 3, 3}, {0.25, 0, 4}, {0.01, 1, 100}, {0, 5, 0}} {
		if got := (&DPSGD{SampleRate: c.q}).Steps(c.epochs); got != c.want {
			t.Errorf("Steps(%d) at rate %v = %d, want %d", c.epochs, c.q, got, c.want)
		}
	}
	m, enc := dpTestModel(t, 4)
	p := &DPSGD{Clip: 1, NoiseMultiplier: 1, SampleRate: 0.05, Noise: rand.New(rand.NewPCG(4, 4))}
	calls, lastDone, lastTotal := 0, 0, 0
	st, err := m.Train(context.Background(), enc, TrainConfig{Epochs: 2, Seed: 1, DP: p, OnStep: func(done, total int) {
		calls++
		lastDone, lastTotal = done, total
	}})
	if err != nil {
		t.Fatal(err)
	}
	want := p.Steps(2)
	if want != 40 || st.Steps != want || calls != want || lastDone != want || lastTotal != want {
		t.Errorf("Steps(2) %d, TrainStats.Steps %d, OnStep called %d times, last (%d, %d); want 40 everywhere", want, st.Steps, calls, lastDone, lastTotal)
	}
	if st.Samples >= st.Steps {
		t.Errorf("%d samples in %d steps: expected mostly empty samples at rate 0.05 of 4 records", st.Samples, st.Steps)
	}
	if math.IsNaN(st.Loss) || math.IsInf(st.Loss, 0) {
		t.Errorf("loss %v", st.Loss)
	}
}

// TestDPSGDValidate checks that a sample rate outside [0, 1] and a negative or non-finite
// normaliser noise are refused before training.
func TestDPSGDValidate(t *testing.T) {
	m, enc := dpTestModel(t, 4)
	for _, p := range []DPSGD{
		{Clip: 1, SampleRate: -0.1},
		{Clip: 1, SampleRate: 1.5},
		{Clip: 1, SampleRate: math.NaN()},
		{Clip: 1, SampleRate: 1e-12},
		{Clip: 1, NormalizerNoise: -1},
		{Clip: 1, NormalizerNoise: math.Inf(1)},
	} {
		if _, err := m.Train(context.Background(), enc, TrainConfig{DP: &p}); err == nil {
			t.Errorf("%+v accepted", p)
		}
	}
	if !m.normalizerUnset() {
		t.Error("a refused configuration fitted the normaliser")
	}
}

// TestDPSGDPoissonDividesByExpectedBatch checks the gradient of a Poisson-sampled step: with no
// noise and a clip above every gradient it is the sum of the sampled records' gradients over
// the expected batch size SampleRate·n, not over the actual sample size (the seed is chosen so
// that they differ); and an empty sample gives pure noise of standard deviation
// NoiseMultiplier·Clip/(SampleRate·n).
func TestDPSGDPoissonDividesByExpectedBatch(t *testing.T) {
	m, enc := dpTestModel(t, 16)
	m.FitNormalizer(enc) // set, so that training draws nothing from Noise before sampling
	const q, seed = 0.5, 5
	opt := &recordingOpt{}
	st, err := m.TrainWith(context.Background(), enc, TrainConfig{Seed: 1, DP: &DPSGD{Clip: 1e9, SampleRate: q, Noise: rand.New(rand.NewPCG(seed, seed))}}, opt)
	if err != nil {
		t.Fatal(err)
	}
	if st.Steps != 2 || len(opt.grads) != 2 || st.NormalizerReleased {
		t.Fatalf("%d steps, %d gradients, normaliser released %v; want 2, 2, false", st.Steps, len(opt.grads), st.NormalizerReleased)
	}
	idx := make([]int, enc.Len())
	for i := range idx {
		idx[i] = i
	}
	replay := rand.New(rand.NewPCG(seed, seed))
	n1, err := m.trainNet(1)
	if err != nil {
		t.Fatal(err)
	}
	var sc scratch
	one := make([]float32, len(m.params))
	expected := q * float64(len(idx))
	differs := false
	for step, got := range opt.grads {
		sampled := poissonSample(nil, idx, q, replay)
		differs = differs || float64(len(sampled)) != expected
		want := make([]float64, len(m.params))
		for _, r := range sampled {
			n1.fill(enc, []batchRow{{rec: r, weight: 1, present: enc.present[r]}}, m.Spec.Classes, &sc)
			if err := n1.run(); err != nil {
				t.Fatal(err)
			}
			if err := n1.gradients(one); err != nil {
				t.Fatal(err)
			}
			for i, g := range one {
				want[i] += float64(g) / expected
			}
		}
		for i := range want {
			if math.Abs(float64(got[i])-want[i]) > 1e-5*(1+math.Abs(want[i])) {
				t.Fatalf("step %d (%d sampled), coordinate %d: %v, want %v", step, len(sampled), i, got[i], want[i])
			}
		}
	}
	if !differs {
		t.Fatal("every sample had the expected size: pick a seed that tells the divisors apart")
	}

	t.Run("empty_sample_is_noise", func(t *testing.T) {
		c, sigma := 1.0, 2.0
		grads := make([]float32, len(m.params))
		loss, err := m.dpGradients(n1, enc, nil, &sc, &DPSGD{Clip: c, NoiseMultiplier: sigma, Noise: rand.New(rand.NewPCG(1, 1))}, expected, grads, one)
		if err != nil || loss != 0 {
			t.Fatalf("loss %v, err %v", loss, err)
		}
		var s float64
		var k int
		for _, seg := range m.layout.Segments {
			for i := seg.Offset; i < seg.Offset+seg.Size(); i++ {
				if !seg.Trainable {
					if grads[i] != 0 {
						t.Fatalf("buffer %s got gradient %v", seg.Name, grads[i])
					}
					continue
				}
				s += float64(grads[i]) * float64(grads[i])
				k++
			}
		}
		want := sigma * c / expected
		if got := math.Sqrt(s / float64(k)); math.Abs(got-want)/want > 0.1 {
			t.Errorf("noise sd %v, want %v (%d coordinates)", got, want, k)
		}
	})
}

// TestPoissonSampleRate checks that Poisson sampling takes q·n records a step on average: over
// 2000 steps the mean sample size is within 5 standard errors of q·n; rate 1 takes every record.
func TestPoissonSampleRate(t *testing.T) {
	const n, q, steps = 1000, 0.03, 2000
	idx := make([]int, n)
	for i := range idx {
		idx[i] = i
	}
	rng := rand.New(rand.NewPCG(9, 9))
	var buf []int
	total := 0
	for range steps {
		buf = poissonSample(buf[:0], idx, q, rng)
		total += len(buf)
	}
	mean := float64(total) / steps
	se := math.Sqrt(n * q * (1 - q) / steps)
	if math.Abs(mean-q*n) > 5*se {
		t.Errorf("mean sample size %v, want %v ± %v", mean, q*n, 5*se)
	}
	if got := poissonSample(nil, idx, 1, rng); len(got) != n {
		t.Errorf("rate 1 took %d of %d records", len(got), n)
	}
}

// normTestModel returns a tabular-only model of two fields and an Encoded of n hand-made
// records: field 0 ~ N(42000, 8000) (an income), field 1 ~ N(0, 1).
func normTestModel(t *testing.T, n int) (*Model, *Encoded) {
	t.Helper()
	m, err := New(Spec{Classes: 2, Dim: 4, Hidden: 4, Fusion: fusion.Concat, Tabular: &TabularSpec{Fields: 2, Hidden: 4}}, 1)
	if err != nil {
		t.Fatal(err)
	}
	e := &Encoded{n: n, labels: make([]int, n), present: make([][dataset.NumModalities]bool, n), tab: make([]float32, 2*n), fLen: 2}
	r := rand.New(rand.NewPCG(7, uint64(n)))
	for i := range n {
		e.present[i][dataset.Tabular] = true
		e.tab[2*i] = float32(42000 + 8000*r.NormFloat64())
		e.tab[2*i+1] = float32(r.NormFloat64())
	}
	return m, e
}

// TestFitNormalizerDP checks the DP normaliser's release: on 20000 records the income mean is
// within 10% and the N(0,1) field's mean within 0.1 of the truth; its standard deviations, whose
// noise is set by the clipping range (about 4.5 times the field's magnitude), are within a
// factor 1.3 of the truth on a million records; on 50 records the result is still finite with positive standard
// deviations; records without tabular fields are not read; data with none is released all the
// same (pure noise, finite, positive standard deviations); NaN and ±Inf raw values give finite
// statistics; and a noise multiplier that is not positive and finite is refused.
func TestFitNormalizerDP(t *testing.T) {
	check := func(t *testing.T, n int, stds bool) {
		m, e := normTestModel(t, n)
		if err := m.FitNormalizerDP(e, DefaultNormalizerNoise, rand.New(rand.NewPCG(1, 2))); err != nil {
			t.Fatal(err)
		}
		mean, std, _ := m.TabularNormalizer()
		if math.Abs(mean[0]-42000)/42000 > 0.1 || math.Abs(mean[1]) > 0.1 {
			t.Errorf("means %v, want about [42000 0]", mean)
		}
		for j, want := range []float64{8000, 1} {
			if math.IsNaN(std[j]) || math.IsInf(std[j], 0) || !(std[j] > 0) {
				t.Errorf("std %v", std)
			}
			if stds && (std[j] > 1.3*want || std[j] < want/1.3) {
				t.Errorf("field %d: std %v, want %v within a factor 1.3", j, std[j], want)
			}
		}
	}
	t.Run("20000_records", func(t *testing.T) { check(t, 20000, false) })
	t.Run("million_records", func(t *testing.T) { check(t, 1_000_000, true) })
	t.Run("50_records", func(t *testing.T) {
		m, e := normTestModel(t, 50)
		if err := m.FitNormalizerDP(e, DefaultNormalizerNoise, rand.New(rand.NewPCG(1, 2))); err != nil {
			t.Fatal(err)
		}
		mean, std, _ := m.TabularNormalizer()
		for j := range mean {
			if math.IsNaN(mean[j]) || math.IsInf(mean[j], 0) || math.IsInf(std[j], 0) || !(std[j] > 0) {
				t.Errorf("field %d: mean %v, std %v", j, mean[j], std[j])
			}
		}
	})
	t.Run("ignores_records_without_tabular", func(t *testing.T) {
		m, e := normTestModel(t, 100)
		if err := m.FitNormalizerDP(e, 1, rand.New(rand.NewPCG(3, 3))); err != nil {
			t.Fatal(err)
		}
		wantMean, wantStd, _ := m.TabularNormalizer()
		// The same records plus 100 whose tabular slots hold wild values but are marked absent.
		m2, e2 := normTestModel(t, 100)
		e2.n = 200
		e2.labels = append(e2.labels, make([]int, 100)...)
		e2.present = append(e2.present, make([][dataset.NumModalities]bool, 100)...)
		for i := 100; i < 200; i++ {
			e2.present[i][dataset.Image] = true
			e2.tab = append(e2.tab, 1e30, float32(math.NaN()))
		}
		if err := m2.FitNormalizerDP(e2, 1, rand.New(rand.NewPCG(3, 3))); err != nil {
			t.Fatal(err)
		}
		mean, std, _ := m2.TabularNormalizer()
		for j := range mean {
			if mean[j] != wantMean[j] || std[j] != wantStd[j] {
				t.Errorf("field %d: (%v, %v) with absent records, (%v, %v) without", j, mean[j], std[j], wantMean[j], wantStd[j])
			}
		}
	})
	t.Run("no_tabular_records", func(t *testing.T) {
		m, e := normTestModel(t, 10)
		for i := range e.present {
			e.present[i] = [dataset.NumModalities]bool{}
			e.present[i][dataset.Image] = true
		}
		if err := m.FitNormalizerDP(e, 4, nil); err != nil || m.normalizerUnset() {
			t.Fatalf("err %v, normaliser unset %v; want nil, false (released)", err, m.normalizerUnset())
		}
		checkFiniteNormalizer(t, m)
	})
	t.Run("non_finite_values", func(t *testing.T) {
		m, e := normTestModel(t, 50)
		e.tab[0], e.tab[1] = float32(math.Inf(1)), float32(math.NaN())
		e.tab[2], e.tab[5] = float32(math.Inf(-1)), float32(math.Inf(1))
		if err := m.FitNormalizerDP(e, DefaultNormalizerNoise, rand.New(rand.NewPCG(1, 2))); err != nil {
			t.Fatal(err)
		}
		checkFiniteNormalizer(t, m)
	})
	t.Run("bad_noise", func(t *testing.T) {
		m, e := normTestModel(t, 10)
		for _, s := range []float64{0, -1, math.NaN(), math.Inf(1)} {
			if err := m.FitNormalizerDP(e, s, nil); err == nil {
				t.Errorf("noise multiplier %v accepted", s)
			}
		}
		if !m.normalizerUnset() {
			t.Error("a refused call changed the normaliser")
		}
	})
}

// TestTrainDPNormalizer checks how training sets an unset normaliser: DP training fits it with
// FitNormalizerDP (default noise, drawn from DPSGD.Noise), reports NormalizerReleased, and
// ends with statistics that differ from FitNormalizer's exact ones; a second call, the
// normaliser now set, releases nothing; DP training on data without tabular records releases
// all the same (the decision depends on the model only), with FitNormalizerDP's finite, noisy
// statistics; and training without DP still fits the exact statistics.
func TestTrainDPNormalizer(t *testing.T) {
	ctx := context.Background()
	_, enc := dpTestModel(t, 16)
	exact, _ := dpTestModel(t, 16)
	exact.FitNormalizer(enc)
	exactMean, exactStd, _ := exact.TabularNormalizer()

	t.Run("dp", func(t *testing.T) {
		m, _ := dpTestModel(t, 16)
		cfg := TrainConfig{Seed: 1, DP: &DPSGD{Clip: 1, NoiseMultiplier: 1, SampleRate: 0.5, Noise: rand.New(rand.NewPCG(8, 8))}}
		st, err := m.Train(ctx, enc, cfg)
		if err != nil || !st.NormalizerReleased {
			t.Fatalf("released %v, err %v", st.NormalizerReleased, err)
		}
		mean, std, _ := m.TabularNormalizer()
		replay, _ := dpTestModel(t, 16)
		if err := replay.FitNormalizerDP(enc, DefaultNormalizerNoise, rand.New(rand.NewPCG(8, 8))); err != nil {
			t.Fatal(err)
		}
		wantMean, wantStd, _ := replay.TabularNormalizer()
		same := true
		for j := range mean {
			if mean[j] != wantMean[j] || std[j] != wantStd[j] {
				t.Errorf("field %d: (%v, %v), want FitNormalizerDP's (%v, %v)", j, mean[j], std[j], wantMean[j], wantStd[j])
			}
			same = same && mean[j] == exactMean[j] && std[j] == exactStd[j]
		}
		if same {
			t.Error("DP training fitted the exact statistics")
		}
		if st, err := m.Train(ctx, enc, cfg); err != nil || st.NormalizerReleased {
			t.Errorf("second call: released %v, err %v", st.NormalizerReleased, err)
		}
	})
	t.Run("dp_without_tabular_records", func(t *testing.T) {
		d := dataset.Synthetic(dataset.SyntheticConfig{N: 4, Seed: 3})
		for i := range d.Records {
			d.Records[i] = d.Records[i].Without(dataset.Tabular)
		}
		m, _ := dpTestModel(t, 1)
		e, err := m.Encode(d)
		if err != nil {
			t.Fatal(err)
		}
		st, err := m.Train(ctx, e, TrainConfig{DP: &DPSGD{Clip: 1, SampleRate: 1, Noise: rand.New(rand.NewPCG(6, 6))}})
		if err != nil || !st.NormalizerReleased || m.normalizerUnset() {
			t.Fatalf("released %v, unset %v, err %v; want true, false, nil", st.NormalizerReleased, m.normalizerUnset(), err)
		}
		checkFiniteNormalizer(t, m)
		mean, std, _ := m.TabularNormalizer()
		replay, _ := dpTestModel(t, 1)
		if err := replay.FitNormalizerDP(e, DefaultNormalizerNoise, rand.New(rand.NewPCG(6, 6))); err != nil {
			t.Fatal(err)
		}
		wantMean, wantStd, _ := replay.TabularNormalizer()
		for j := range mean {
			if mean[j] != wantMean[j] || std[j] != wantStd[j] {
				t.Errorf("field %d: (%v, %v), want FitNormalizerDP's (%v, %v)", j, mean[j], std[j], wantMean[j], wantStd[j])
			}
		}
	})
	t.Run("no_dp", func(t *testing.T) {
		m, _ := dpTestModel(t, 16)
		st, err := m.Train(ctx, enc, TrainConfig{BatchSize: 8, Seed: 1})
		if err != nil || st.NormalizerReleased {
			t.Fatalf("released %v, err %v", st.NormalizerReleased, err)
		}
		mean, std, _ := m.TabularNormalizer()
		for j := range mean {
			if mean[j] != exactMean[j] || std[j] != exactStd[j] {
				t.Errorf("field %d: (%v, %v), want the exact (%v, %v)", j, mean[j], std[j], exactMean[j], exactStd[j])
			}
		}
	})
}

// checkFiniteNormalizer fails t unless m's tabular normaliser has finite means and finite,
// positive standard deviations.
func checkFiniteNormalizer(t *testing.T, m *Model) {
	t.Helper()
	mean, std, ok := m.TabularNormalizer()
	if !ok {
		t.Fatal("no tabular normaliser")
	}
	for j := range mean {
		if math.IsNaN(mean[j]) || math.IsInf(mean[j], 0) || math.IsInf(std[j], 0) || !(std[j] > 0) {
			t.Errorf("field %d: mean %v, std %v; want finite, std > 0", j, mean[j], std[j])
		}
	}
}

// checkFinite fails t unless every value of p is finite.
func checkFinite(t *testing.T, what string, p []float32) {
	t.Helper()
	for i, v := range p {
		if math.IsNaN(float64(v)) || math.IsInf(float64(v), 0) {
			t.Fatalf("%s: value %d is %v", what, i, v)
		}
	}
}

// exampleIsNonFinite reports whether record r of enc, run alone through m's batch-1 training
// graph, gives a non-finite loss or gradient: the case dpGradients must leave out.
func exampleIsNonFinite(t *testing.T, m *Model, enc *Encoded, r int) bool {
	t.Helper()
	n1, err := m.trainNet(1)
	if err != nil {
		t.Fatal(err)
	}
	var sc scratch
	one := make([]float32, len(m.params))
	n1.fill(enc, []batchRow{{rec: r, weight: 1, present: enc.present[r]}}, m.Spec.Classes, &sc)
	if err := n1.run(); err != nil {
		t.Fatal(err)
	}
	l := scalar(n1.loss)
	if err := n1.gradients(one); err != nil {
		t.Fatal(err)
	}
	n := norm(one)
	return math.IsNaN(l) || math.IsInf(l, 0) || math.IsNaN(n) || math.IsInf(n, 0)
}

// TestDPSGDNonFiniteTabularValue checks that one record with a NaN or infinite tabular value
// neither fails DP-SGD training nor poisons the model: training (normaliser released from the
// same data, then Poisson-sampled DP-SGD at rate 1, so the record is in every step) completes
// without error, with a finite loss, and every parameter (the normaliser's buffers included)
// is finite. The record is checked to give a non-finite example, so that the test exercises
// the skip in dpGradients.
func TestDPSGDNonFiniteTabularValue(t *testing.T) {
	for _, c := range []struct {
		name string
		v    float64
	}{{"nan", math.NaN()}, {"inf", math.Inf(1)}, {"-inf", math.Inf(-1)}} {
		t.Run(c.name, func(t *testing.T) {
			m, enc := dpTestModel(t, 8)
			F := enc.fLen
			enc.present[0][dataset.Tabular] = true
			enc.tab[0*F+1] = float32(c.v)
			st, err := m.Train(context.Background(), enc, TrainConfig{Epochs: 2, Seed: 1, DP: &DPSGD{Clip: 1, NoiseMultiplier: 0.5, SampleRate: 1, Noise: rand.New(rand.NewPCG(2, 2))}})
			if err != nil {
				t.Fatalf("DP training failed: %v", err)
			}
			if !st.NormalizerReleased || st.Steps != 2 || st.Samples != 16 {
				t.Errorf("released %v, %d steps, %d samples; want true, 2, 16", st.NormalizerReleased, st.Steps, st.Samples)
			}
			if math.IsNaN(st.Loss) || math.IsInf(st.Loss, 0) {
				t.Errorf("loss %v", st.Loss)
			}
			checkFinite(t, "parameters after DP training", m.params)
			checkFiniteNormalizer(t, m)
			if !exampleIsNonFinite(t, m, enc, 0) {
				t.Fatal("the corrupted record gives a finite example: the test does not exercise the skip")
			}
		})
	}
}

// TestDPGradientsSkipsNonFinite checks dpGradients on a batch holding one example whose gradient
// is not finite (a NaN or infinite tabular value): without noise, the result equals the one of
// the batch without that example, with the same divisor (the example still counts as sampled),
// and the returned loss is the mean over the finite examples only. A batch of only that example
// gives a zero gradient and loss 0.
func TestDPGradientsSkipsNonFinite(t *testing.T) {
	for _, c := range []struct {
		name string
		v    float64
	}{{"nan", math.NaN()}, {"inf", math.Inf(1)}} {
		t.Run(c.name, func(t *testing.T) {
			m, enc := dpTestModel(t, 8)
			m.FitNormalizer(enc) // exact statistics from the clean data
			F := enc.fLen
			enc.present[0][dataset.Tabular] = true
			enc.tab[0*F] = float32(c.v)
			if !exampleIsNonFinite(t, m, enc, 0) {
				t.Fatal("the corrupted record gives a finite example")
			}
			n1, err := m.trainNet(1)
			if err != nil {
				t.Fatal(err)
			}
			var good []batchRow
			for r := 1; r < 5; r++ {
				good = append(good, batchRow{rec: r, weight: 1, present: enc.present[r]})
			}
			// The bad example first, so that any state it left in the graph would reach the rest.
			all := append([]batchRow{{rec: 0, weight: 1, present: enc.present[0]}}, good...)
			var sc scratch
			one := make([]float32, len(m.params))
			for _, clip := range []float64{1e9, 0.05} {
				p := &DPSGD{Clip: clip, Noise: rand.New(rand.NewPCG(1, 1))}
				want := make([]float32, len(m.params))
				wantLoss, err := m.dpGradients(n1, enc, good, &sc, p, 5, want, one)
				if err != nil {
					t.Fatal(err)
				}
				got := make([]float32, len(m.params))
				gotLoss, err := m.dpGradients(n1, enc, all, &sc, p, 5, got, one)
				if err != nil {
					t.Fatal(err)
				}
				checkFinite(t, "gradient", got)
				if gotLoss != wantLoss || math.IsNaN(gotLoss) {
					t.Errorf("clip %v: loss %v, want the mean over the finite examples %v", clip, gotLoss, wantLoss)
				}
				for i := range want {
					if math.Abs(float64(got[i]-want[i])) > 1e-6*(1+math.Abs(float64(want[i]))) {
						t.Fatalf("clip %v, coordinate %d: %v, want %v", clip, i, got[i], want[i])
					}
				}
			}
			only := make([]float32, len(m.params))
			loss, err := m.dpGradients(n1, enc, all[:1], &sc, &DPSGD{Clip: 1, Noise: rand.New(rand.NewPCG(1, 1))}, 1, only, one)
			if err != nil || loss != 0 {
				t.Errorf("only the bad example: loss %v, err %v; want 0, nil", loss, err)
			}
			if n := norm(only); n != 0 {
				t.Errorf("only the bad example: gradient of norm %v, want 0", n)
			}
		})
	}
}

// TestDPSGDDropoutDrawsFromNoise checks that modality dropout in DP mode draws from the secret
// DPSGD.Noise and not from the generator seeded with TrainConfig.Seed: with no Gaussian noise,
// sample rate 1 (every record every step, whatever Noise draws) and an optimizer that records
// the gradients without moving the model, the gradients depend only on the dropout masks. Two
// runs with the same Seed and different Noise sources must give different gradients (with the
// old seeded dropout they were identical), and two runs with the same Noise source the same
// ones.
func TestDPSGDDropoutDrawsFromNoise(t *testing.T) {
	m, enc := dpTestModel(t, 12)
	m.FitNormalizer(enc) // set, so that training draws nothing from Noise for the normaliser
	multi := 0
	for i := range enc.Len() {
		k := 0
		for _, p := range enc.present[i] {
			if p {
				k++
			}
		}
		if k >= 2 {
			multi++
		}
	}
	if multi < 3 {
		t.Fatalf("%d records with two modalities or more: dropout has nothing to hide", multi)
	}
	run := func(noiseSeed uint64) [][]float32 {
		t.Helper()
		opt := &recordingOpt{}
		cfg := TrainConfig{Epochs: 2, Seed: 1, ModalityDropout: 0.5, DP: &DPSGD{Clip: 1e9, SampleRate: 1, Noise: rand.New(rand.NewPCG(noiseSeed, noiseSeed))}}
		if _, err := m.TrainWith(context.Background(), enc, cfg, opt); err != nil {
			t.Fatal(err)
		}
		return opt.grads
	}
	equal := func(a, b [][]float32) bool {
		if len(a) != len(b) {
			return false
		}
		for s := range a {
			for i := range a[s] {
				if a[s][i] != b[s][i] {
					return false
				}
			}
		}
		return true
	}
	a, b, a2 := run(1), run(2), run(1)
	if !equal(a, a2) {
		t.Error("two runs with the same Seed and Noise differ: something else is random")
	}
	if equal(a, b) {
		t.Error("two runs with the same Seed and different Noise sources made the same dropout decisions: dropout does not draw from DPSGD.Noise")
	}
}
