package secagg

import (
	"crypto/aes"
	"crypto/cipher"
	"encoding/binary"
	"math/bits"
	"runtime"
	"slices"
	"sync"
	"unsafe"

	"github.com/fedweave/fedweave/crypto/quant"
)

// A mask's stream is AES-128-CTR under the mask's key from a zero counter (a 128-bit
// big-endian block counter), read as little-endian words of the vector's width: word i is
// bytes 4i to 4i+3 of the stream (8i to 8i+7 for 64-bit words). Each key masks one vector
// of one round.

// A mask is a stream to add to a vector, or to subtract from it.
type mask struct {
	key *maskKey
	neg bool
}

// chunkBytes is how much of a vector is masked at a time: the chunk of the vector and the
// keystreams of a group of masks stay in the L1 cache while they are added to it.
const chunkBytes = 4 << 10

// groupSize is how many masks' streams are summed before they are added to the vector, which
// saves the vector's loads and stores: with a group of 8, adding costs a fifth of what it
// costs a mask at a time, and the AES-CTR expansion is most of the work.
const groupSize = 8

var littleEndian = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// applyMasks adds each mask's stream to v (subtracts it, for neg), modulo the word size, in
// parallel over ranges of v.
func applyMasks(v quant.Vector, masks []mask) {
	if len(masks) == 0 {
		return
	}
	// The masks to add, then those to subtract, in groups of up to 8 of the same sign.
	masks = slices.Clone(masks)
	slices.SortStableFunc(masks, func(a, b mask) int {
		switch {
		case a.neg == b.neg:
			return 0
		case b.neg:
			return -1
		}
		return 1
	})
	blocks := make([]cipher.Block, len(masks))
	for i, m := range masks {
		b, err := aes.NewCipher(m.key.k[:])
		if err != nil {
			panic(err)
		}
		blocks[i] = b
	}
	if v.Wide() {
		applyWords(v.U64, masks, blocks)
	} else {
		applyWords(v.U32, masks, blocks)
	}
}

func applyWords[W uint32 | uint64](x []W, masks []mask, blocks []cipher.Block) {
	size := int(unsafe.Sizeof(W(0)))
	per := chunkBytes / size
	chunks := (len(x) + per - 1) / per
	// A goroutine for each share of the chunks, when there is enough work for several.
	parallel(chunks, max(1, (1<<18)/(per*len(masks))), func(c0, c1 int) {
		var ks [groupSize][]W
		var kb [groupSize][]byte
		for i := range ks {
			ks[i] = make([]W, per)
			kb[i] = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(ks[i]))), per*size)
		}
		defer func() {
			for i := range ks {
				clear(ks[i])
			}
		}()
		zeroW := make([]W, per)
		zero := make([]byte, chunkBytes)
		iv := make([]byte, aes.BlockSize)
		binary.BigEndian.PutUint64(iv[8:], uint64(c0*chunkBytes/aes.BlockSize))
		streams := make([]cipher.Stream, len(blocks))
		for i, b := range blocks {
			streams[i] = cipher.NewCTR(b, iv)
		}
		var sum [groupSize][]W
		for c := c0; c < c1; c++ {
			seg := x[c*per : min((c+1)*per, len(x))]
			n := len(seg)
			for m := 0; m < len(masks); {
				g := 1
				for g < groupSize && m+g < len(masks) && masks[m+g].neg == masks[m].neg {
					g++
				}
				for i := range groupSize {
					if i >= g {
						sum[i] = zeroW[:n]
						continue
					}
					streams[m+i].XORKeyStream(kb[i][:n*size], zero[:n*size])
					sum[i] = ks[i][:n]
					if !littleEndian {
						swapWords(sum[i])
					}
				}
				if g <= 2 { // too few to pay for the padding
					for i := range g {
						addStream(seg, sum[i], masks[m].neg)
					}
				} else {
					addGroup(seg, &sum, masks[m].neg)
				}
				m += g
			}
		}
	})
}

// addStream adds k to seg, or subtracts it.
func addStream[W uint32 | uint64](seg, k []W, neg bool) {
	k = k[:len(seg)]
	if neg {
		for j := range seg {
			seg[j] -= k[j]
		}
		return
	}
	for j := range seg {
		seg[j] += k[j]
	}
}

// addGroup adds the sum of the eight streams k to seg, or subtracts it.
func addGroup[W uint32 | uint64](seg []W, k *[groupSize][]W, neg bool) {
	n := len(seg)
	a, b, c, d := k[0][:n], k[1][:n], k[2][:n], k[3][:n]
	e, f, g, h := k[4][:n], k[5][:n], k[6][:n], k[7][:n]
	if neg {
		for j := range seg {
			seg[j] -= a[j] + b[j] + c[j] + d[j] + e[j] + f[j] + g[j] + h[j]
		}
		return
	}
	for j := range seg {
		seg[j] += a[j] + b[j] + c[j] + d[j] + e[j] + f[j] + g[j] + h[j]
	}
}

func swapWords[W uint32 | uint64](k []W) {
	switch k := any(k).(type) {
	case []uint32:
		for i, w := range k {
			k[i] = bits.ReverseBytes32(w)
		}
	case []uint64:
		for i, w := range k {
			k[i] = bits.ReverseBytes64(w)
		}
	}
}

// parallel splits [0, n) into ranges of at least minPer items, one for each processor at
// most, and calls fn on them concurrently.
func parallel(n, minPer int, fn func(lo, hi int)) {
	p := max(1, min(runtime.GOMAXPROCS(0), n/max(1, minPer)))
	if p == 1 {
		fn(0, n)
		return
	}
	var wg sync.WaitGroup
	for i := range p {
		lo, hi := i*n/p, (i+1)*n/p
		wg.Go(func() { fn(lo, hi) })
	}
	wg.Wait()
}

// newMaskedMessage returns a masked-input message of h for layout l, and the vector that is its
// body: on a little-endian machine the two share memory (the body is 8-byte aligned), so that
// the client encodes and masks its input in place; elsewhere inPlace is false and the caller
// must copy the vector into the body.
func newMaskedMessage(h header, l quant.Layout) (msg []byte, v quant.Vector, inPlace bool) {
	size := l.Len() * l.WordSize()
	backing := make([]uint64, (headerLen+size+7)/8)
	msg = unsafe.Slice((*byte)(unsafe.Pointer(unsafe.SliceData(backing))), headerLen+size)
	putHeader(msg, h, size)
	if !littleEndian {
		return msg, l.NewVector(), false
	}
	body := unsafe.Pointer(unsafe.SliceData(msg[headerLen:]))
	if l.Wide {
		v.U64 = unsafe.Slice((*uint64)(body), l.Len())
	} else {
		v.U32 = unsafe.Slice((*uint32)(body), l.Len())
	}
	return msg, v, true
}

// minWords is the fewest words worth a goroutine of their own when copying or adding.
const minWords = 1 << 17

// appendWords appends v's words to b, little-endian.
func appendWords(b []byte, v quant.Vector) []byte {
	off := len(b)
	if v.Wide() {
		b = append(b, make([]byte, 8*len(v.U64))...)
		out := b[off:]
		parallel(len(v.U64), minWords, func(lo, hi int) {
			for i, w := range v.U64[lo:hi] {
				binary.LittleEndian.PutUint64(out[8*(lo+i):], w)
			}
		})
		return b
	}
	b = append(b, make([]byte, 4*len(v.U32))...)
	out := b[off:]
	parallel(len(v.U32), minWords, func(lo, hi int) {
		for i, w := range v.U32[lo:hi] {
			binary.LittleEndian.PutUint32(out[4*(lo+i):], w)
		}
	})
	return b
}

// addWords adds the little-endian words of b, of v's width and number, to v. When b is
// aligned on a little-endian machine, as the messages of newMaskedMessage are, its words are
// read in place.
func addWords(v quant.Vector, b []byte) {
	if v.Wide() {
		if src, ok := wordsOf[uint64](b); ok {
			addAligned(v.U64, src)
			return
		}
		parallel(len(v.U64), minWords, func(lo, hi int) {
			seg, src := v.U64[lo:hi], b[8*lo:8*hi]
			for i := range seg {
				seg[i] += binary.LittleEndian.Uint64(src[8*i:])
			}
		})
		return
	}
	if src, ok := wordsOf[uint32](b); ok {
		addAligned(v.U32, src)
		return
	}
	parallel(len(v.U32), minWords, func(lo, hi int) {
		seg, src := v.U32[lo:hi], b[4*lo:4*hi]
		for i := range seg {
			seg[i] += binary.LittleEndian.Uint32(src[4*i:])
		}
	})
}

// wordsOf returns b as words, if b is aligned for them and the machine little-endian.
func wordsOf[W uint32 | uint64](b []byte) ([]W, bool) {
	size := int(unsafe.Sizeof(W(0)))
	if !littleEndian || len(b) == 0 || uintptr(unsafe.Pointer(unsafe.SliceData(b)))%uintptr(size) != 0 {
		return nil, false
	}
	return unsafe.Slice((*W)(unsafe.Pointer(unsafe.SliceData(b))), len(b)/size), true
}

func addAligned[W uint32 | uint64](dst, src []W) {
	parallel(len(dst), minWords, func(lo, hi int) {
		addStream(dst[lo:hi], src[lo:hi], false)
	})
}
