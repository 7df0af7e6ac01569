package models

import (
	"strings"

	"github.com/fedweave/fedweave/dataset"
)

// Parameter groups of modality-aware aggregation. Each segment of a layout belongs to one group,
// and a federated client weights its update of a group by the number of its training records
// that fed it: records with text for the text encoder, with images for the image encoder, with
// tabular fields for the tabular encoder, and all records for the fusion head. A client without
// images adds zero to the image encoder and zero to its weight, so it does not dilute it.
const (
	GroupText = iota
	GroupImage
	GroupTabular
	GroupFusion
	NumGroups
)

// GroupOf returns the group of a segment, by its name's prefix.
func GroupOf(segment string) int {
	switch {
	case strings.HasPrefix(segment, "enc.text."):
		return GroupText
	case strings.HasPrefix(segment, "enc.image."):
		return GroupImage
	case strings.HasPrefix(segment, "enc.tabular."):
		return GroupTabular
	}
	return GroupFusion
}

// GroupWeights returns the weight of each group for training data d: how many of its labelled
// records carry each modality, and how many there are in all (the fusion head's weight).
func GroupWeights(d *Encoded) []float64 {
	w := make([]float64, NumGroups)
	for i := range d.n {
		if d.labels[i] < 0 {
			continue
		}
		w[GroupFusion]++
		if d.present[i][dataset.Text] {
			w[GroupText]++
		}
		if d.present[i][dataset.Image] {
			w[GroupImage]++
		}
		if d.present[i][dataset.Tabular] {
			w[GroupTabular]++
		}
	}
	return w
}

// ParamGroups returns the group of every value of the layout's vector.
func ParamGroups(l *Layout) []uint8 {
	g := make([]uint8, l.Size())
	for _, s := range l.Segments {
		gi := uint8(GroupOf(s.Name))
		for i := s.Offset; i < s.Offset+s.Size(); i++ {
			g[i] = gi
		}
	}
	return g
}
