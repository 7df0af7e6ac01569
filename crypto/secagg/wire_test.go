package secagg

import (
	"bytes"
	"encoding/binary"
	"errors"
	"fmt"
	"math/rand/v2"
	"slices"
	"sync"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
)

// A codec is one message type, as a reader in a round decodes it: a valid message from a
// transcript, and the decoder with everything the reader knows.
type codec struct {
	typ    msgType
	index  int // the sender of a client's message, the recipient of the server's
	valid  []byte
	decode func(msg []byte, h header) error
	encode func(msg []byte, h header) []byte // re-encodes what decode accepted
}

// transcriptParams are the parameters of the transcripts of the decoder tests.
var transcriptParams = testParams(5, 2)

var transcripts sync.Map // KEM name -> []codec

// codecs plays a round of 4 members (complete graph, t = 2) in which member 4 drops after
// sharing, so that member 1 reveals a share of 4's key secret, and returns member 1's
// messages and the server's to it.
func codecs(t testing.TB, kem string) []codec {
	if c, ok := transcripts.Load(kem); ok {
		return c.([]codec)
	}
	t.Helper()
	p := transcriptParams
	p.MaxWeight = 100
	cfg := Config{KEM: kem, T: 2}
	inputs := randomInputs(rand.New(rand.NewPCG(9, 9)), p, 4)
	tr := play(t, newCohort(cfg), p, inputs, map[int][]int{2: {4}}, nil)
	if tr.err != nil {
		t.Fatal(tr.err)
	}
	s, _ := suiteFor(kem)
	hybrid := s.ctSize() > 0
	neighbour := func(j int) bool { return j >= 2 && j <= 4 }
	size := func(from, to int) int {
		if !neighbour(from) && !neighbour(to) {
			return 0
		}
		return sealedSize(s, hybrid && from < to)
	}
	layout := tr.srv.layout
	want := []unmaskEntry{{owner: 1, kind: kindB}, {owner: 2, kind: kindB}, {owner: 3, kind: kindB}, {owner: 4, kind: kindSigma}}
	c := []codec{
		{typ: typeAdvert, valid: tr.sent[0][1],
			decode: func(msg []byte, h header) error { _, err := decodeAdvert(msg, h, s); return err },
			encode: func(msg []byte, h header) []byte {
				a, _ := decodeAdvert(msg, h, s)
				return encodeAdvert(h, a.kem, a.cpk, a.spk, a.cert, func([]byte) []byte { return a.sig })
			}},
		{typ: typeNeighbours, valid: tr.told[1][1],
			decode: func(msg []byte, h header) error { _, err := decodeNeighbours(msg, h); return err },
			encode: func(msg []byte, h header) []byte {
				m, _ := decodeNeighbours(msg, h)
				return encodeNeighbours(h, m)
			}},
		{typ: typeShares, valid: tr.sent[1][1],
			decode: func(msg []byte, h header) error {
				_, err := decodeEntries(msg, h, 3, func(to int) int { return size(1, to) })
				return err
			},
			encode: func(msg []byte, h header) []byte {
				e, _ := decodeEntries(msg, h, 3, func(to int) int { return size(1, to) })
				return encodeEntries(h, e)
			}},
		{typ: typeRouted, valid: tr.told[2][1],
			decode: func(msg []byte, h header) error {
				_, err := decodeEntries(msg, h, 3, func(from int) int { return size(from, 1) })
				return err
			},
			encode: func(msg []byte, h header) []byte {
				e, _ := decodeEntries(msg, h, 3, func(from int) int { return size(from, 1) })
				return encodeEntries(h, e)
			}},
		{typ: typeMasked, valid: tr.sent[2][1],
			decode: func(msg []byte, h header) error {
				_, err := decodeMasked(msg, h, layout.Len()*layout.WordSize())
				return err
			},
			encode: func(msg []byte, h header) []byte {
				body, _ := decodeMasked(msg, h, layout.Len()*layout.WordSize())
				return append(newMessage(h, len(body)), body...)
			}},
		{typ: typeSurvivors, valid: tr.told[3][1],
			decode: func(msg []byte, h header) error { _, err := decodeSurvivors(msg, h, 3, neighbour); return err },
			encode: func(msg []byte, h header) []byte {
				a, _ := decodeSurvivors(msg, h, 3, neighbour)
				return encodeSurvivors(h, a)
			}},
		{typ: typeUnmask, valid: tr.sent[3][1],
			decode: func(msg []byte, h header) error { _, err := decodeUnmask(msg, h, want); return err },
			encode: func(msg []byte, h header) []byte {
				e, _ := decodeUnmask(msg, h, want)
				return encodeUnmask(h, e)
			}},
	}
	for i := range c {
		c[i].index = 1
	}
	transcripts.Store(kem, c)
	return c
}

func (c codec) header() header { return headerOf(transcriptParams, c.typ, c.index) }

// check requires msg to be refused with an error that wraps agg.ErrBadMessage.
func (c codec) refuse(t *testing.T, msg []byte, what string) {
	t.Helper()
	if err := c.decode(msg, c.header()); !errors.Is(err, agg.ErrBadMessage) {
		t.Errorf("%s: %s: %v, want %v", c.typ, what, err, agg.ErrBadMessage)
	}
}

// edit returns a copy of msg changed by f.
func edit(msg []byte, f func(b []byte) []byte) []byte { return f(slices.Clone(msg)) }

// setBody replaces msg's body, and its length field.
func setBody(msg, body []byte) []byte {
	b := append(slices.Clone(msg[:headerLen]), body...)
	return finish(b)
}

func TestDecoders(t *testing.T) {
	for _, kem := range []string{"x25519", "hybrid"} {
		for _, c := range codecs(t, kem) {
			t.Run(fmt.Sprintf("%s/%s", kem, c.typ), func(t *testing.T) {
				if err := c.decode(c.valid, c.header()); err != nil {
					t.Fatalf("the valid message: %v", err)
				}
				if got := c.encode(c.valid, c.header()); !bytes.Equal(got, c.valid) {
					t.Fatalf("re-encoded, the valid message changes")
				}
				t.Run("truncated", func(t *testing.T) {
					for n := range len(c.valid) {
						if n < 200 || n > len(c.valid)-200 || n%97 == 0 {
							c.refuse(t, c.valid[:n], fmt.Sprintf("the first %d of %d bytes", n, len(c.valid)))
						}
					}
				})
				t.Run("truncated, length field adjusted", func(t *testing.T) {
					for _, n := range []int{headerLen, headerLen + 1, headerLen + 4, len(c.valid) - 1, (len(c.valid) + headerLen) / 2} {
						if n >= headerLen && n < len(c.valid) {
							c.refuse(t, finish(slices.Clone(c.valid[:n])), fmt.Sprintf("a body of %d bytes", n-headerLen))
						}
					}
				})
				t.Run("trailing garbage", func(t *testing.T) {
					c.refuse(t, append(slices.Clone(c.valid), 0), "a byte more")
					c.refuse(t, finish(append(slices.Clone(c.valid), 0)), "a byte more, counted")
				})
				t.Run("flipped header bit", func(t *testing.T) {
					for i := range headerLen {
						for _, bit := range []byte{0x01, 0x80} {
							c.refuse(t, edit(c.valid, func(b []byte) []byte { b[i] ^= bit; return b }), fmt.Sprintf("bit %#x of byte %d", bit, i))
						}
					}
				})
				t.Run("flags set", func(t *testing.T) {
					c.refuse(t, edit(c.valid, func(b []byte) []byte { b[7] = 1; return b }), "flags 0x100")
				})
				t.Run("wrong version", func(t *testing.T) {
					for _, v := range []byte{0, 2, 255} {
						c.refuse(t, edit(c.valid, func(b []byte) []byte { b[4] = v; return b }), fmt.Sprintf("version %d", v))
					}
				})
				t.Run("wrong phase", func(t *testing.T) {
					for _, typ := range []msgType{0, typeAdvert, typeShares, typeMasked, typeUnmask, typeNeighbours, typeRouted, typeSurvivors, 0x84} {
						if typ != c.typ {
							c.refuse(t, edit(c.valid, func(b []byte) []byte { b[5] = byte(typ); return b }), typ.String())
						}
					}
				})
				t.Run("wrong round", func(t *testing.T) {
					// A message of the round before, replayed, or of one to come.
					for _, r := range []uint64{transcriptParams.Round - 1, transcriptParams.Round + 1, transcriptParams.Round + 1<<32} {
						c.refuse(t, edit(c.valid, func(b []byte) []byte { binary.LittleEndian.PutUint64(b[8:], r); return b }), fmt.Sprintf("round %d", r))
					}
				})
				t.Run("wrong index", func(t *testing.T) {
					for _, i := range []uint32{0, 2, 4, 5, 1 << 31} {
						c.refuse(t, edit(c.valid, func(b []byte) []byte { binary.LittleEndian.PutUint32(b[48:], i); return b }), fmt.Sprintf("index %d", i))
					}
				})
				t.Run("not a secagg message", func(t *testing.T) {
					c.refuse(t, nil, "nothing")
					c.refuse(t, agg.EncodePlain(transcriptParams, agg.Input{Values: make([]float32, 5), Weights: []float64{1, 1}}), "a plaintext update")
				})
				for _, m := range malformed(c) {
					t.Run(m.name, func(t *testing.T) { c.refuse(t, m.msg, m.name) })
				}
			})
		}
	}
}

type malformedMsg struct {
	name string
	msg  []byte
}

// malformed returns messages of c's type whose header is right and whose body is not.
func malformed(c codec) []malformedMsg {
	body := c.valid[headerLen:]
	u32 := func(v int) []byte { return binary.LittleEndian.AppendUint32(nil, uint32(v)) }
	cat := func(parts ...[]byte) []byte { return bytes.Join(parts, nil) }
	withCount := func(n int) []byte { return setBody(c.valid, cat(u32(n), body[4:])) }
	switch c.typ {
	case typeAdvert:
		keyLen := int(binary.LittleEndian.Uint16(body[1:]))
		certAt := 1 + 2 + keyLen + 2 + keyLen
		return []malformedMsg{
			{"another KEM", setBody(c.valid, cat([]byte{body[0] ^ 3}, body[1:]))},
			{"c key a byte short", setBody(c.valid, cat(body[:1], binary.LittleEndian.AppendUint16(nil, uint16(keyLen-1)), body[3:]))},
			{"certificate of 0 bytes", setBody(c.valid, cat(body[:certAt], u32(0), body[certAt+4:]))},
			{"certificate of 1 MiB", setBody(c.valid, cat(body[:certAt], u32(1<<20), body[certAt+4:]))},
			{"certificate longer than the message", setBody(c.valid, cat(body[:certAt], u32(len(body)), body[certAt+4:]))},
			{"the same key twice", setBody(c.valid, cat(body[:3+keyLen+2], body[3:3+keyLen], body[3+keyLen+2+keyLen:]))},
			{"no signature", setBody(c.valid, body[:len(body)-64])},
		}
	case typeNeighbours:
		n := func(v int) []byte { return setBody(c.valid, cat(u32(v), body[4:])) }
		count := 13
		return []malformedMsg{
			{"a cohort of 1", n(1)},
			{"a cohort too large", n(MaxCohort + 1)},
			{"a cohort smaller than the recipient's index", setBody(c.valid, cat(u32(2), body[4:]))}, // index 1 ok, adverts of 3, 4
			{"more adverts than members", setBody(c.valid, cat(body[:count], u32(100), body[count+4:]))},
			{"an advert of the recipient", setBody(c.valid, cat(body[:count+4], u32(1), body[count+8:]))},
			{"adverts out of order", setBody(c.valid, cat(body[:count+4], u32(4), body[count+8:]))},
			{"an advert longer than the message", setBody(c.valid, cat(body[:count+8], u32(len(body)), body[count+12:]))},
		}
	case typeShares, typeRouted:
		first := body[4 : 4+8+int(binary.LittleEndian.Uint32(body[8:]))]
		peer := func(p int) []byte { return cat(u32(p), first[4:]) }
		return []malformedMsg{
			{"more entries than neighbours", withCount(4)},
			{"a count beyond the body", withCount(1 << 30)},
			{"an entry for the sender itself", setBody(c.valid, cat(u32(1), peer(1)))},
			{"an entry of a stranger", setBody(c.valid, cat(u32(1), peer(5)))},
			{"an entry of member 0", setBody(c.valid, cat(u32(1), peer(0)))},
			{"the same peer twice", setBody(c.valid, cat(u32(2), first, first))},
			{"an entry a byte short", setBody(c.valid, cat(u32(1), first[:4], u32(len(first)-9), first[8:len(first)-1]))},
			{"an entry a byte long", setBody(c.valid, cat(u32(1), first[:4], u32(len(first)-7), first[8:], []byte{0}))},
		}
	case typeMasked:
		return []malformedMsg{
			{"a word short", setBody(c.valid, body[:len(body)-4])},
			{"a word long", setBody(c.valid, cat(body, make([]byte, 4)))},
			{"64-bit words for a 32-bit layout", setBody(c.valid, cat(body, body))},
		}
	case typeSurvivors:
		return []malformedMsg{
			{"more survivors than neighbours", setBody(c.valid, cat(u32(4), u32(1), u32(2), u32(3), u32(4)))},
			{"the recipient itself", setBody(c.valid, cat(u32(1), u32(1)))},
			{"a stranger", setBody(c.valid, cat(u32(1), u32(7)))},
			{"out of order", setBody(c.valid, cat(u32(2), u32(3), u32(2)))},
			{"twice the same", setBody(c.valid, cat(u32(2), u32(2), u32(2)))},
			{"a count beyond the body", withCount(3)},
		}
	case typeUnmask:
		entry := func(i int) []byte { return body[4+37*i : 4+37*(i+1)] }
		kind := func(i int, k byte) []byte { e := slices.Clone(entry(i)); e[4] = k; return e }
		return []malformedMsg{
			{"a share missing", setBody(c.valid, cat(u32(3), entry(0), entry(1), entry(2)))},
			{"a share more", setBody(c.valid, cat(u32(5), entry(0), entry(1), entry(2), entry(3), entry(3)))},
			{"both shares of a dropped member", setBody(c.valid, cat(u32(5), entry(0), entry(1), entry(2), entry(3), kind(3, kindB)))},
			{"a self-mask share of a dropped member", setBody(c.valid, cat(u32(4), entry(0), entry(1), entry(2), kind(3, kindB)))},
			{"a key share of a survivor", setBody(c.valid, cat(u32(4), entry(0), kind(1, kindSigma), entry(2), entry(3)))},
			{"a share of kind 0", setBody(c.valid, cat(u32(4), kind(0, 0), entry(1), entry(2), entry(3)))},
			{"out of order", setBody(c.valid, cat(u32(4), entry(1), entry(0), entry(2), entry(3)))},
		}
	}
	return nil
}

// TestServerRefusesBadShares: shares that decode but are not canonical scalars are refused.
func TestServerRefusesBadShares(t *testing.T) {
	const n = 4
	p := testParams(5, 1)
	proto := newCohort(Config{T: 2})
	inputs := randomInputs(rand.New(rand.NewPCG(3, 1)), p, n)
	srv, _ := proto.NewServer(p, n)
	clients := map[int]agg.Client{}
	for i := 1; i <= n; i++ {
		clients[i], _ = proto.NewClient(p, i, inputs[i-1])
	}
	var from map[int][]byte
	for phase := range 4 {
		for i := 1; i <= n; i++ {
			msg, err := clients[i].Phase(phase, from[i])
			if err != nil {
				t.Fatal(err)
			}
			if phase == 3 && i == 1 {
				bad := slices.Clone(msg)
				copy(bad[headerLen+4+5:], bytes.Repeat([]byte{0xff}, 32)) // not reduced
				if err := srv.Receive(i, bad); !errors.Is(err, agg.ErrBadMessage) {
					t.Fatalf("a share that is no scalar: %v", err)
				}
				continue
			}
			if err := srv.Receive(i, msg); err != nil {
				t.Fatal(err)
			}
		}
		out, done, err := srv.Next()
		if err != nil {
			t.Fatal(err)
		}
		if done {
			sum, _ := srv.Result()
			if !slices.Equal(sum.Contributors, []int{1, 2, 3, 4}) {
				t.Errorf("contributors %v", sum.Contributors)
			}
			return
		}
		from = out
	}
}

// fuzzDecoder fuzzes the decoder of one message type: it must never panic, must refuse with
// agg.ErrBadMessage, and what it accepts must encode back to the same bytes.
func fuzzDecoder(f *testing.F, typ msgType) {
	var cs []codec
	for _, kem := range []string{"x25519", "hybrid"} {
		for _, c := range codecs(f, kem) {
			if c.typ == typ {
				cs = append(cs, c)
				f.Add(byte(len(cs)-1), c.valid)
				for _, m := range malformed(c) {
					f.Add(byte(len(cs)-1), m.msg)
				}
			}
		}
	}
	f.Fuzz(func(t *testing.T, which byte, msg []byte) {
		c := cs[int(which)%len(cs)]
		err := c.decode(msg, c.header())
		if err != nil {
			if !errors.Is(err, agg.ErrBadMessage) {
				t.Fatalf("%v does not wrap %v", err, agg.ErrBadMessage)
			}
			return
		}
		if got := c.encode(msg, c.header()); !bytes.Equal(got, msg) {
			t.Fatalf("accepted %x, which encodes back as %x", msg, got)
		}
	})
}

func FuzzDecodeAdvert(f *testing.F)     { fuzzDecoder(f, typeAdvert) }
func FuzzDecodeNeighbours(f *testing.F) { fuzzDecoder(f, typeNeighbours) }
func FuzzDecodeShares(f *testing.F)     { fuzzDecoder(f, typeShares) }
func FuzzDecodeRouted(f *testing.F)     { fuzzDecoder(f, typeRouted) }
func FuzzDecodeMasked(f *testing.F)     { fuzzDecoder(f, typeMasked) }
func FuzzDecodeSurvivors(f *testing.F)  { fuzzDecoder(f, typeSurvivors) }
func FuzzDecodeUnmask(f *testing.F)     { fuzzDecoder(f, typeUnmask) }
