package dataset

import (
	"hash/fnv"
	"slices"
	"testing"
)

// Known answers, computed once with an independent FNV-1a implementation:
// id = 1 + fnv1a32(token) % (Buckets-1).
func TestTokenizerKnownIDs(t *testing.T) {
	for _, tc := range []struct {
		token   string
		hash    uint32
		buckets int
		id      int
	}{
		{"patient", 0x80ee595e, DefaultBuckets, 242},
		{"acute", 0x7abdd093, DefaultBuckets, 1697},
		{"stable", 0xbc9cb896, DefaultBuckets, 7595},
		{"café", 0xa82b5049, DefaultBuckets, 4558},
		{"patient", 0x80ee595e, 100, 31},
		{"a", 0xe40c292c, 100, 8},
	} {
		t.Run(tc.token, func(t *testing.T) {
			h := fnv.New32a()
			h.Write([]byte(tc.token))
			if got := h.Sum32(); got != tc.hash || fnv1a32(tc.token) != tc.hash {
				t.Fatalf("hash/fnv = %#x, fnv1a32 = %#x, want %#x", got, fnv1a32(tc.token), tc.hash)
			}
			tok := NewTokenizer(tc.buckets, 4)
			if got := tok.ID(tc.token); got != tc.id {
				t.Fatalf("ID(%q) = %d, want %d", tc.token, got, tc.id)
			}
			if got := tok.Encode(tc.token, nil); !slices.Equal(got, []int{tc.id, 0, 0, 0}) {
				t.Fatalf("Encode(%q) = %v", tc.token, got)
			}
		})
	}
}

func TestTokenizerTokens(t *testing.T) {
	var tok Tokenizer // the zero value works
	for _, tc := range []struct {
		name, text string
		want       []string
	}{
		{"empty", "", nil},
		{"punctuation only", " -- !? ", nil},
		{"lower-cases and splits", "Patient reported: ACUTE pain, day-3.", []string{"patient", "reported", "acute", "pain", "day", "3"}},
		{"unicode letters", "Größe ÉTÉ naïve", []string{"größe", "été", "naïve"}},
		{"combining marks stay in the word", "cafe\u0301 noir", []string{"cafe\u0301", "noir"}},
		{"scripts and digits", "心电图 ٣ नमस्ते", []string{"心电图", "٣", "नमस्ते"}},
		{"invalid utf-8", "ab\xffcd", []string{"ab", "cd"}},
		{"emoji separates", "good👍bad", []string{"good", "bad"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := tok.Tokens(tc.text); !slices.Equal(got, tc.want) {
				t.Fatalf("Tokens(%q) = %q, want %q", tc.text, got, tc.want)
			}
		})
	}
}

func TestTokenizerEncode(t *testing.T) {
	tok := NewTokenizer(50, 4)
	id := func(w string) int { return tok.ID(w) }
	for _, tc := range []struct {
		name, text string
		want       []int
	}{
		{"padding", "Acute pain", []int{id("acute"), id("pain"), 0, 0}},
		{"exact length", "a b c d", []int{id("a"), id("b"), id("c"), id("d")}},
		{"truncation", "a b c d e f", []int{id("a"), id("b"), id("c"), id("d")}},
		{"empty", "", []int{0, 0, 0, 0}},
		{"case-insensitive", "ACUTE", []int{id("acute"), 0, 0, 0}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			got := tok.Encode(tc.text, nil)
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Encode(%q) = %v, want %v", tc.text, got, tc.want)
			}
			for _, v := range got {
				if v < 0 || v >= tok.Buckets {
					t.Fatalf("id %d out of [0, %d)", v, tok.Buckets)
				}
			}
			// Tokens and Encode agree.
			for i, w := range tok.Tokens(tc.text) {
				if i < tok.MaxLen && got[i] != id(w) {
					t.Fatalf("Encode[%d] = %d, ID(Tokens[%d]) = %d", i, got[i], i, id(w))
				}
			}
		})
	}

	t.Run("reuses dst and clears it", func(t *testing.T) {
		buf := make([]int, 2, 10)
		buf = append(buf, 7, 7, 7)
		got := tok.Encode("x", buf[:0])
		if &got[0] != &buf[0] || len(got) != 4 || got[1] != 0 || got[2] != 0 {
			t.Fatalf("Encode did not reuse and clear dst: %v", got)
		}
	})
	t.Run("allocates when dst is short", func(t *testing.T) {
		short := make([]int, 0, 3)
		if got := tok.Encode("x", short); len(got) != 4 {
			t.Fatalf("len = %d", len(got))
		}
	})
	t.Run("deterministic", func(t *testing.T) {
		a := NewTokenizer(0, 0).Encode("The patient was stable", nil)
		b := Tokenizer{Buckets: DefaultBuckets, MaxLen: DefaultMaxLen}.Encode("the PATIENT, was stable!", nil)
		if len(a) != DefaultMaxLen || !slices.Equal(a, b) {
			t.Fatalf("encodings differ: %v vs %v", a[:5], b[:5])
		}
	})
	t.Run("defaults replace bad sizes", func(t *testing.T) {
		for _, tk := range []Tokenizer{{}, {Buckets: 1, MaxLen: -3}, NewTokenizer(-1, 0)} {
			if got := tk.Encode("hello", nil); len(got) != DefaultMaxLen || got[0] != tk.ID("hello") || got[0] >= DefaultBuckets {
				t.Fatalf("%+v: Encode = %v", tk, got[:2])
			}
		}
		if got := (Tokenizer{Buckets: 1 << 62, MaxLen: 1 << 62}).Encode("x", nil); len(got) != MaxTokenizerLen || got[0] < 1 {
			t.Fatalf("huge sizes: len %d, id %d", len(got), got[0])
		}
		if got := (Tokenizer{Buckets: 2, MaxLen: 1}).Encode("anything", nil); got[0] != 1 {
			t.Fatalf("two buckets: id %d, want 1", got[0])
		}
	})
}

func BenchmarkTokenizerEncode(b *testing.B) {
	tok := NewTokenizer(0, 32)
	text := "Patient reported acute pain in the lower back after a long walk; follow up next week."
	buf := make([]int, 32)
	b.ReportAllocs()
	for b.Loop() {
		buf = tok.Encode(text, buf)
	}
}
