package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"runtime"
	"testing"

	"github.com/fedweave/fedweave/crypto/quant"
)

// TestMasks compares the parallel, chunked masking with a plain reading of the definition:
// word i of a mask is bytes of the AES-128-CTR stream from a zero counter, little-endian.
func TestMasks(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	keys := []maskKey{{k: [16]byte{1}}, {k: [16]byte{2}}, {k: [16]byte{3}}}
	masks := []mask{{key: &keys[0]}, {key: &keys[1], neg: true}, {key: &keys[2]}}
	stream := func(k *maskKey, n int) []byte {
		b, _ := aes.NewCipher(k.k[:])
		out := make([]byte, n)
		cipher.NewCTR(b, make([]byte, 16)).XORKeyStream(out, out)
		return out
	}
	for _, wide := range []bool{false, true} {
		for _, n := range []int{1, 7, 4096, 4097, 300_001} {
			var v quant.Vector
			if wide {
				v.U64 = make([]uint64, n)
			} else {
				v.U32 = make([]uint32, n)
			}
			want := v.Clone()
			for _, m := range masks {
				if wide {
					s := stream(m.key, 8*n)
					for i := range want.U64 {
						w := binary.LittleEndian.Uint64(s[8*i:])
						if m.neg {
							w = -w
						}
						want.U64[i] += w
					}
				} else {
					s := stream(m.key, 4*n)
					for i := range want.U32 {
						w := binary.LittleEndian.Uint32(s[4*i:])
						if m.neg {
							w = -w
						}
						want.U32[i] += w
					}
				}
			}
			applyMasks(v, masks)
			if !v.Equal(want) {
				t.Errorf("wide %v, %d words: masks differ from their definition", wide, n)
			}
			// And the masks come off again.
			for i := range masks {
				masks[i].neg = !masks[i].neg
			}
			applyMasks(v, masks)
			for i := range masks {
				masks[i].neg = !masks[i].neg
			}
			zero := v.Clone()
			clear(zero.U32)
			clear(zero.U64)
			if !v.Equal(zero) {
				t.Errorf("wide %v, %d words: masks do not cancel", wide, n)
			}
		}
	}
}

func TestWords(t *testing.T) {
	defer runtime.GOMAXPROCS(runtime.GOMAXPROCS(4))
	for _, n := range []int{3, 1 << 19} {
		v := quant.Vector{U32: make([]uint32, n)}
		w := quant.Vector{U64: make([]uint64, n)}
		for i := range n {
			v.U32[i] = uint32(i * 2654435761)
			w.U64[i] = uint64(i) * 0x9e3779b97f4a7c15
		}
		for _, x := range []quant.Vector{v, w} {
			for _, off := range []int{1, 8} { // unaligned, and aligned on 8 bytes
				b := appendWords(make([]byte, off, off+8*n), x)
				if len(b) != off+n*map[bool]int{false: 4, true: 8}[x.Wide()] {
					t.Fatalf("appendWords: %d bytes", len(b))
				}
				sum := x.Clone()
				addWords(sum, b[off:])
				twice := x.Clone()
				twice.Add(x)
				if !sum.Equal(twice) {
					t.Errorf("addWords(x, bytes of x at offset %d) is not 2x (wide %v, %d words)", off, x.Wide(), n)
				}
			}
		}
	}
}
