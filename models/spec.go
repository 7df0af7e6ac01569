package models

import (
	"errors"
	"fmt"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/fusion"
)

// Spec says which encoders a model has, their sizes, and its fusion head. It is plain data: it
// travels in round configurations and checkpoints as JSON, and two parties that build a model
// from equal specs get equal layouts.
type Spec struct {
	Classes int          `json:"classes"`
	Dim     int          `json:"dim"`    // width of every modality embedding
	Hidden  int          `json:"hidden"` // width of the fusion head's hidden layer
	Fusion  fusion.Kind  `json:"fusion"`
	Text    *TextSpec    `json:"text,omitempty"`
	Image   *ImageSpec   `json:"image,omitempty"`
	Tabular *TabularSpec `json:"tabular,omitempty"`
}

// TextSpec sizes the text encoder: hashed token ids -> embeddings -> 1-D convolution (ReLU) ->
// attention pooling over the tokens -> dense (ReLU).
type TextSpec struct {
	Buckets   int `json:"buckets"`   // hashing tokenizer buckets; id 0 is padding
	MaxLen    int `json:"max_len"`   // tokens per record; longer texts are truncated
	EmbedDim  int `json:"embed_dim"` // token embedding width
	Filters   int `json:"filters"`   // convolution channels
	Kernel    int `json:"kernel"`    // convolution width in tokens (odd)
	Attention int `json:"attention"` // attention pooling's hidden width
}

// ImageSpec sizes the image encoder: conv 3x3 (ReLU) -> max-pool 2 -> conv 3x3 (ReLU) ->
// max-pool 2 -> dense (ReLU). Height and width must be multiples of 4.
type ImageSpec struct {
	C     int `json:"c"`
	H     int `json:"h"`
	W     int `json:"w"`
	Conv1 int `json:"conv1"`
	Conv2 int `json:"conv2"`
}

// TabularSpec sizes the tabular encoder: standardisation (statistics are buffers in the
// parameter vector) -> dense (ReLU) -> dense (ReLU).
type TabularSpec struct {
	Fields int `json:"fields"`
	Hidden int `json:"hidden"`
}

// DefaultSpec returns the spec fedweave uses for a data set of the given schema: an encoder for
// each modality the schema has (a schema without images has no image encoder; every schema is
// assumed to possibly carry text), and the given head.
func DefaultSpec(s dataset.Schema, head fusion.Kind, text bool) Spec {
	spec := Spec{Classes: len(s.Classes), Dim: 32, Hidden: 64, Fusion: head}
	if text {
		spec.Text = &TextSpec{Buckets: 2048, MaxLen: 24, EmbedDim: 32, Filters: 48, Kernel: 3, Attention: 32}
	}
	if s.ImageH > 0 {
		spec.Image = &ImageSpec{C: s.ImageC, H: s.ImageH, W: s.ImageW, Conv1: 8, Conv2: 16}
	}
	if len(s.TabularFields) > 0 {
		spec.Tabular = &TabularSpec{Fields: len(s.TabularFields), Hidden: 64}
	}
	return spec
}

// Modalities lists the modalities the model has encoders for, in canonical order.
func (s *Spec) Modalities() []dataset.Modality {
	var out []dataset.Modality
	if s.Text != nil {
		out = append(out, dataset.Text)
	}
	if s.Image != nil {
		out = append(out, dataset.Image)
	}
	if s.Tabular != nil {
		out = append(out, dataset.Tabular)
	}
	return out
}

// Validate reports a spec that cannot be built.
func (s *Spec) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if s.Classes < 2 {
		bad("classes must be at least 2, got %d", s.Classes)
	}
	if s.Dim < 1 || s.Hidden < 1 {
		bad("dim and hidden must be positive, got %d and %d", s.Dim, s.Hidden)
	}
	if _, err := fusion.ParseKind(string(s.Fusion)); err != nil {
		bad("%v", err)
	}
	if len(s.Modalities()) == 0 {
		bad("a model needs at least one encoder")
	}
	if t := s.Text; t != nil {
		if t.Buckets < 2 || t.MaxLen < 1 || t.EmbedDim < 1 || t.Filters < 1 || t.Attention < 1 {
			bad("text: buckets >= 2 and positive sizes required")
		}
		if t.Kernel < 1 || t.Kernel%2 == 0 {
			bad("text: kernel must be odd and positive, got %d", t.Kernel)
		}
	}
	if im := s.Image; im != nil {
		if im.C < 1 || im.H < 4 || im.W < 4 || im.H%4 != 0 || im.W%4 != 0 {
			bad("image: need C >= 1 and H, W multiples of 4, got %dx%dx%d", im.C, im.H, im.W)
		}
		if im.Conv1 < 1 || im.Conv2 < 1 {
			bad("image: conv widths must be positive")
		}
	}
	if tb := s.Tabular; tb != nil && (tb.Fields < 1 || tb.Hidden < 1) {
		bad("tabular: fields and hidden must be positive")
	}
	if err := errors.Join(errs...); err != nil {
		return fmt.Errorf("models: invalid spec: %w", err)
	}
	return nil
}
