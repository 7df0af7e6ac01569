// Package dataset holds fedweave's multimodal records and everything that
// produces or slices them: loaders for the formats partner organisations
// bring, the hashing tokenizer, the synthetic task the demo and the tests
// run on, and the partitioners that simulate a federation on one machine.
//
// # Records
//
// A [Record] has an id, a label and up to three modalities ([Text], [Image],
// [Tabular]); a missing modality is a first-class case, not an error. A
// [Dataset] is a [Schema] (class names, tabular field names, image
// dimensions) plus records. [Dataset.Validate] checks the invariants every
// consumer relies on; every loader and generator here returns datasets that
// pass it.
//
// # Where to start
//
//   - [Synthetic] generates the default task: a label that only the
//     combination of modalities reveals (each alone is at chance between
//     two classes). [SyntheticBits] documents the construction.
//   - [LoadManifest] reads partner data: a JSONL manifest with image files
//     beside it and, optionally, a CSV of tabular fields ([LoadCSVTabular]).
//     [LoadImageFolder] reads a class-per-folder image tree.
//   - [LoadFashionMNIST] (with [FashionMNISTDir]) and [LoadIDX] read
//     MNIST-style IDX files, gzip-compressed or not.
//   - [Split], [DirichletPartition], [StandardAvailabilities] and
//     [ApplyAvailability] build a federation: a test split, label-skewed
//     clients and per-client modality availability.
//   - [Tokenizer] maps text to fixed-length token ids without a shared
//     vocabulary.
//   - [DecodeRecord] reads one record in the manifest's JSON form with its
//     image inline, as the inference service receives it; [EncodeRecord]
//     writes that form.
//
// # Sharing and ownership
//
// Derived datasets ([Dataset.Subset], [Split], [ApplyAvailability],
// [Record.Without]) copy record values but share the pixel and tabular
// slices and the schema's slices with their source: treat all of them as
// read-only once built, and use [Record.Clone] for a private copy. Nothing
// in this package modifies a dataset it is given.
//
// # Bad input
//
// Loaders never panic on bad input and never allocate more than the input
// can justify (an IDX header is checked against the file length before its
// data is allocated, image dimensions against a pixel limit and the file
// size). They report errors as "path:line: what is wrong" (JSONL, CSV) or
// "path: what is wrong" (IDX, image folders), so a partner can fix the file.
//
// # Determinism
//
// [Synthetic], [Split] and [DirichletPartition] are deterministic given
// their seeds (math/rand/v2 PCG), for a given Go release.
//
// # Not included
//
// Data is loaded into memory whole; there is no streaming, no
// augmentation and no color: images become grayscale. Normalisation of
// tabular fields belongs to the models package.
package dataset
