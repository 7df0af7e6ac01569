package models

import (
	"fmt"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/nn"
)

// Encoded is a data set turned into the arrays a model's graphs read: token ids, pixels, tabular
// values and a presence mask per record. Encode once, train and evaluate many times.
type Encoded struct {
	n                int
	labels           []int
	present          [][dataset.NumModalities]bool
	tokens           []int     // n * MaxLen
	tab              []float32 // n * Fields
	pix              []float32 // n * C*H*W
	tLen, pLen, fLen int
}

// Len is the number of records.
func (e *Encoded) Len() int { return e.n }

// Labels returns the records' labels (-1 where unknown). The caller must not change them.
func (e *Encoded) Labels() []int { return e.labels }

// Present reports whether record i carries modality m.
func (e *Encoded) Present(i int, m dataset.Modality) bool { return e.present[i][m] }

// Encode checks d against the model's spec and encodes it. Modalities the model has no encoder
// for are ignored; a record left with none of the model's modalities is an error, as is an image
// or tabular row of the wrong size.
func (m *Model) Encode(d *dataset.Dataset) (*Encoded, error) {
	s := &m.Spec
	e := &Encoded{n: len(d.Records), labels: make([]int, len(d.Records)), present: make([][dataset.NumModalities]bool, len(d.Records))}
	if s.Text != nil {
		e.tLen = s.Text.MaxLen
		e.tokens = make([]int, e.n*e.tLen)
	}
	if s.Image != nil {
		e.pLen = s.Image.C * s.Image.H * s.Image.W
		e.pix = make([]float32, e.n*e.pLen)
	}
	if s.Tabular != nil {
		e.fLen = s.Tabular.Fields
		e.tab = make([]float32, e.n*e.fLen)
	}
	for i := range d.Records {
		r := &d.Records[i]
		if r.Label >= s.Classes {
			return nil, fmt.Errorf("models: record %q: label %d out of range (model has %d classes)", r.ID, r.Label, s.Classes)
		}
		e.labels[i] = r.Label
		any := false
		if s.Text != nil && r.Has(dataset.Text) {
			m.tok.Encode(r.Text, e.tokens[i*e.tLen:(i+1)*e.tLen])
			e.present[i][dataset.Text], any = true, true
		}
		if s.Image != nil && r.Has(dataset.Image) {
			im := r.Image
			if im.C != s.Image.C || im.H != s.Image.H || im.W != s.Image.W || len(im.Pix) != e.pLen {
				return nil, fmt.Errorf("models: record %q: image is %dx%dx%d, model wants %dx%dx%d", r.ID, im.C, im.H, im.W, s.Image.C, s.Image.H, s.Image.W)
			}
			copy(e.pix[i*e.pLen:], im.Pix)
			e.present[i][dataset.Image], any = true, true
		}
		if s.Tabular != nil && r.Has(dataset.Tabular) {
			if len(r.Tabular) != e.fLen {
				return nil, fmt.Errorf("models: record %q: %d tabular fields, model wants %d", r.ID, len(r.Tabular), e.fLen)
			}
			copy(e.tab[i*e.fLen:], r.Tabular)
			e.present[i][dataset.Tabular], any = true, true
		}
		if !any {
			return nil, fmt.Errorf("models: record %q has none of the model's modalities", r.ID)
		}
	}
	return e, nil
}

// batchRow is one row of a batch: a record index, its weight in the loss (0 for padding) and the
// modalities the graph should see.
type batchRow struct {
	rec     int
	weight  float32
	present [dataset.NumModalities]bool
}

// scratch holds host-side buffers for filling a net's inputs.
type scratch struct {
	tokBias, pix, tab, cols, present, bias, inv, target []float32
}

// fill writes rows (len <= n.batch; the rest are padding) into n's input nodes.
func (n *net) fill(e *Encoded, rows []batchRow, classes int, sc *scratch) {
	B, M := n.batch, len(n.mods)
	grow := func(p *[]float32, size int) []float32 {
		if cap(*p) < size {
			*p = make([]float32, size)
		}
		*p = (*p)[:size]
		clear(*p)
		return *p
	}
	present := grow(&sc.present, B*M)
	bias := grow(&sc.bias, B*M)
	inv := grow(&sc.inv, B)
	target := grow(&sc.target, B*classes)
	var total float32
	for _, r := range rows {
		total += r.weight
	}
	for i := range B {
		cnt := 0
		for j, mod := range n.mods {
			if i < len(rows) && rows[i].present[mod] {
				present[i*M+j] = 1
				cnt++
			} else {
				bias[i*M+j] = nn.MaskBias
			}
		}
		inv[i] = 1 / float32(max(cnt, 1))
		if i < len(rows) && rows[i].weight > 0 && e.labels[rows[i].rec] >= 0 {
			target[i*classes+e.labels[rows[i].rec]] = rows[i].weight / total
		}
	}
	writeFrom(n.present, present)
	writeFrom(n.bias, bias)
	writeFrom(n.invCount, inv)
	writeFrom(n.target, target)
	col := grow(&sc.cols, B)
	for j := range n.mods {
		for i := range B {
			col[i] = present[i*M+j]
		}
		writeFrom(n.cols[j], col)
	}
	if len(n.tokens) > 0 {
		T := e.tLen
		half := len(n.tokens) / 2
		tb := grow(&sc.tokBias, B*T)
		for k, node := range n.tokens {
			ids := node.Value().Data().([]int)
			clear(ids)
			shift := k - half
			for i, r := range rows {
				if !r.present[dataset.Text] {
					continue
				}
				src := e.tokens[r.rec*T : (r.rec+1)*T]
				for t := range T {
					if j := t + shift; j >= 0 && j < T {
						ids[i*T+t] = src[j]
					}
				}
			}
			if shift == 0 {
				for i := range ids {
					if ids[i] == 0 {
						tb[i] = nn.MaskBias
					}
				}
			}
		}
		writeFrom(n.tokBias, tb)
	}
	if n.image != nil {
		P := e.pLen
		pix := grow(&sc.pix, B*P)
		for i, r := range rows {
			if r.present[dataset.Image] {
				copy(pix[i*P:(i+1)*P], e.pix[r.rec*P:(r.rec+1)*P])
			}
		}
		writeFrom(n.image, pix)
	}
	if n.tab != nil {
		F := e.fLen
		tab := grow(&sc.tab, B*F)
		mean, std := n.normalizer()
		for i, r := range rows {
			if !r.present[dataset.Tabular] {
				continue
			}
			for j, v := range e.tab[r.rec*F : (r.rec+1)*F] {
				tab[i*F+j] = float32((float64(v) - mean[j]) / std[j])
			}
		}
		writeFrom(n.tab, tab)
	}
}

// subset returns the records at idx as a new Encoded (copies).
func (e *Encoded) subset(idx []int) *Encoded {
	s := &Encoded{n: len(idx), tLen: e.tLen, pLen: e.pLen, fLen: e.fLen}
	for _, i := range idx {
		s.labels = append(s.labels, e.labels[i])
		s.present = append(s.present, e.present[i])
		s.tokens = append(s.tokens, e.tokens[i*e.tLen:(i+1)*e.tLen]...)
		s.pix = append(s.pix, e.pix[i*e.pLen:(i+1)*e.pLen]...)
		s.tab = append(s.tab, e.tab[i*e.fLen:(i+1)*e.fLen]...)
	}
	return s
}
