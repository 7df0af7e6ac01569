package dataset

import (
	"strings"
	"unicode"
)

// Tokenizer defaults, used by NewTokenizer and for out-of-range fields, and
// the longest sequence a Tokenizer produces.
const (
	DefaultBuckets  = 1 << 13 // token ids 1 .. 8191
	DefaultMaxLen   = 64
	MaxTokenizerLen = 1 << 16
)

// Tokenizer turns text into fixed-length sequences of token ids by hashing
// (the "hashing trick"), so that organisations need no shared vocabulary:
// the same word gets the same id everywhere.
//
// A token is a maximal run of Unicode letters, digits and combining marks
// (so that words with diacritics or in Indic scripts stay whole), lower-cased.
// Its id is 1 + FNV-1a-32(token's UTF-8 bytes) mod (Buckets-1); id 0 is
// padding. Distinct tokens may share an id.
//
// The zero Tokenizer is usable: a Buckets below 2 means DefaultBuckets, a
// MaxLen below 1 means DefaultMaxLen and one above MaxTokenizerLen means
// MaxTokenizerLen. A Tokenizer is a value; it is safe for concurrent use.
type Tokenizer struct {
	Buckets int // number of ids including padding: ids are in [0, Buckets)
	MaxLen  int // length of every encoded sequence
}

// NewTokenizer returns a Tokenizer with the given sizes, replacing values
// out of range (buckets < 2, maxLen < 1) by the defaults and capping maxLen
// at MaxTokenizerLen.
func NewTokenizer(buckets, maxLen int) Tokenizer {
	return Tokenizer{Buckets: buckets, MaxLen: maxLen}.normalized()
}

func (t Tokenizer) normalized() Tokenizer {
	if t.Buckets < 2 {
		t.Buckets = DefaultBuckets
	}
	if t.MaxLen < 1 {
		t.MaxLen = DefaultMaxLen
	}
	t.MaxLen = min(t.MaxLen, MaxTokenizerLen)
	return t
}

// Encode returns the ids of text's first MaxLen tokens, padded with 0 to
// exactly MaxLen. It writes into dst's backing array when cap(dst) >= MaxLen
// (so a caller can reuse one buffer) and allocates otherwise; the result
// belongs to the caller.
func (t Tokenizer) Encode(text string, dst []int) []int {
	t = t.normalized()
	if cap(dst) >= t.MaxLen {
		dst = dst[:t.MaxLen]
	} else {
		dst = make([]int, t.MaxLen)
	}
	n := 0
	for tok := range strings.FieldsFuncSeq(strings.ToLower(text), isSeparator) {
		if n == t.MaxLen {
			break
		}
		dst[n] = t.id(tok)
		n++
	}
	clear(dst[n:])
	return dst
}

// Tokens returns text's tokens, lower-cased, before hashing and without
// truncation: the words an explanation can point at. Encode's i-th id (for
// i < MaxLen) is the hash of Tokens(text)[i].
func (t Tokenizer) Tokens(text string) []string {
	return strings.FieldsFunc(strings.ToLower(text), isSeparator)
}

// ID returns the id of one token as Encode computes it. The token is used
// as given: it is not lower-cased or split.
func (t Tokenizer) ID(token string) int {
	return t.normalized().id(token)
}

func (t Tokenizer) id(token string) int {
	return 1 + int(uint64(fnv1a32(token))%uint64(t.Buckets-1))
}

func isSeparator(r rune) bool {
	return !unicode.IsLetter(r) && !unicode.IsDigit(r) && !unicode.IsMark(r)
}

// fnv1a32 is FNV-1a, 32-bit (hash/fnv.New32a without the allocation).
func fnv1a32(s string) uint32 {
	const (
		offset = 2166136261
		prime  = 16777619
	)
	h := uint32(offset)
	for i := 0; i < len(s); i++ {
		h ^= uint32(s[i])
		h *= prime
	}
	return h
}
