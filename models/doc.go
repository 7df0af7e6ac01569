// Package models holds fedweave's multimodal classifiers: one encoder per modality, a fusion
// head from package fusion, a flat parameter vector with a named, versioned layout, and the
// local trainer a federated client runs.
//
// Start with DefaultSpec and New, turn a data set into arrays with Model.Encode, then call
// Model.Fit (train with per-epoch evaluation) or Model.Train (what a client does in a round).
// Model.Predict evaluates records, hiding modalities for the whole set (PredictOptions.Only) or
// per record (PredictOptions.Visible, how package explain evaluates coalitions of modalities).
// Model.Params, Model.SetParams and Model.LayoutHash are how parameters travel: a vector is
// accepted only with the hash of the layout it was made for, and never with a non-finite value.
//
// The encoders, built with gorgonia (gorgonia.org/gorgonia v0.9.18):
//
//   - text: hashing tokenizer ids (no shared vocabulary) -> embeddings -> 1-D convolution ->
//     attention pooling over the tokens, padding masked -> dense. A 1-D convolution rather than a
//     GRU: it computes every position in one matrix multiply, where a GRU unrolls one step per
//     token into the graph.
//   - image: conv 3x3 -> max-pool -> conv 3x3 -> max-pool -> dense (a small CNN).
//   - tabular: standardisation with statistics kept as non-trainable buffers of the parameter
//     vector (enc.tabular.norm.*), so they travel with the model -> two dense layers.
//
// Parameter segments are named enc.text.*, enc.image.*, enc.tabular.* and fusion.*; see
// internal/nn for how the layout is hashed.
//
// The optimizers (Adam, SGD) are written here rather than taken from gorgonia's solvers because
// they work on the flat vector the federation exchanges: the FedProx term, and later clipping
// and noise, apply to that vector directly, and a parameter update never has to be copied
// between gorgonia values and the wire.
//
// Gorgonia traps this package avoids, each caught by the finite-difference checks in
// TestGradients: gradients accumulate across runs of a tape machine until zeroed; gorgonia's
// softmax kernels mishandle rows (internal/nn has its own); a transpose followed by a reshape
// gets a wrong gradient; an in-place op on a reshaped tensor can overwrite a value another
// gradient still needs. Graphs have static shapes, so a model keeps one compiled graph per batch
// size and pads partial batches with zero-weight rows.
//
// Not here yet: a GPU build (CUDA gorgonia needs a machine with a GPU; fedweave train
// --device cuda says so), and a GRU text encoder.
package models
