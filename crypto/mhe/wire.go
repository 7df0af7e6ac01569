package mhe

import (
	"encoding/binary"
	"fmt"
	"unsafe"

	"github.com/fedweave/fedweave/crypto/agg"
)

// Every message starts with a magic, a version and a type. Round messages:
//
//	off  size  field
//	0    4     magic "FWMR"
//	4    1     version (1)
//	5    1     type: 1 ciphertext, 2 decryption request, 3 decryption share
//	6    2     phase (uint16)
//	8    8     round (uint64)
//	16   32    layout hash
//	48   32    key set id (PublicSetup.ID)
//	80   4     member: the sender's set-up member index (0 from the server)
//	84   4     ciphertexts of the round (uint32)
//	88         payload
//
// and set-up messages:
//
//	0    4     magic "FWMS"
//	4    1     version (1)
//	5    1     type: 1 keys, 2 roster, 3 shares, 4 finish, 5 confirm
//	6    2     zero
//	8    32    set-up id (SetupConfig.ID)
//	40   4     member: the sender's index (client messages) or the recipient's (0: all)
//	44         payload
//
// Integers are little-endian. Polynomials are ringN words of 8 bytes, in coefficient form: in
// ciphertexts and decryption shares, 61-bit words taken modulo q0 (the server adds them up
// without reducing each); elsewhere, words below their modulus.
const (
	version = 1

	roundHeaderLen = 88
	setupHeaderLen = 44

	msgCiphertext = 1
	msgRequest    = 2
	msgShare      = 3

	msgKeys    = 1
	msgRoster  = 2
	msgShares  = 3
	msgFinish  = 4
	msgConfirm = 5
)

var (
	roundMagic = [4]byte{'F', 'W', 'M', 'R'}
	setupMagic = [4]byte{'F', 'W', 'M', 'S'}
)

// roundHeader is the header of a round message.
type roundHeader struct {
	typ    byte
	phase  int
	round  uint64
	layout [32]byte
	keyID  [32]byte
	member int
	count  int
}

func (h roundHeader) put(b []byte) {
	copy(b, roundMagic[:])
	b[4] = version
	b[5] = h.typ
	binary.LittleEndian.PutUint16(b[6:], uint16(h.phase))
	binary.LittleEndian.PutUint64(b[8:], h.round)
	copy(b[16:48], h.layout[:])
	copy(b[48:80], h.keyID[:])
	binary.LittleEndian.PutUint32(b[80:], uint32(h.member))
	binary.LittleEndian.PutUint32(b[84:], uint32(h.count))
}

// check reads the header of b and compares it with want, field by field.
func (want roundHeader) check(b []byte) error {
	if len(b) < roundHeaderLen {
		return fmt.Errorf("%w: message of %d bytes is shorter than its header", agg.ErrBadMessage, len(b))
	}
	if [4]byte(b[:4]) != roundMagic {
		return fmt.Errorf("%w: not an mhe round message (format %q)", agg.ErrBadMessage, b[:4])
	}
	if b[4] != version {
		return fmt.Errorf("%w: mhe message version %d, want %d", agg.ErrBadMessage, b[4], version)
	}
	if b[5] != want.typ {
		return fmt.Errorf("%w: mhe message of type %d, want %d", agg.ErrBadMessage, b[5], want.typ)
	}
	if p := int(binary.LittleEndian.Uint16(b[6:])); p != want.phase {
		return fmt.Errorf("%w: message for phase %d, this is phase %d", agg.ErrBadMessage, p, want.phase)
	}
	if r := binary.LittleEndian.Uint64(b[8:]); r != want.round {
		return fmt.Errorf("%w: message for round %d, this is round %d", agg.ErrBadMessage, r, want.round)
	}
	if [32]byte(b[16:48]) != want.layout {
		return fmt.Errorf("%w: message for another model layout", agg.ErrBadMessage)
	}
	if [32]byte(b[48:80]) != want.keyID {
		return fmt.Errorf("%w: message under another key set", agg.ErrBadMessage)
	}
	if m := int64(binary.LittleEndian.Uint32(b[80:])); m != int64(want.member) {
		return fmt.Errorf("%w: message from member %d, want %d", agg.ErrBadMessage, m, want.member)
	}
	if c := int64(binary.LittleEndian.Uint32(b[84:])); c != int64(want.count) {
		return fmt.Errorf("%w: message of %d ciphertexts, want %d", agg.ErrBadMessage, c, want.count)
	}
	return nil
}

// setupHeader is the header of a set-up message.
type setupHeader struct {
	typ     byte
	setupID [32]byte
	member  int
}

func (h setupHeader) put(b []byte) {
	copy(b, setupMagic[:])
	b[4] = version
	b[5] = h.typ
	b[6], b[7] = 0, 0
	copy(b[8:40], h.setupID[:])
	binary.LittleEndian.PutUint32(b[40:], uint32(h.member))
}

func (want setupHeader) check(b []byte) error {
	if len(b) < setupHeaderLen {
		return fmt.Errorf("%w: set-up message of %d bytes is shorter than its header", agg.ErrBadMessage, len(b))
	}
	if [4]byte(b[:4]) != setupMagic {
		return fmt.Errorf("%w: not an mhe set-up message (format %q)", agg.ErrBadMessage, b[:4])
	}
	if b[4] != version {
		return fmt.Errorf("%w: set-up message version %d, want %d", agg.ErrBadMessage, b[4], version)
	}
	if b[5] != want.typ {
		return fmt.Errorf("%w: set-up message of type %d, want %d", agg.ErrBadMessage, b[5], want.typ)
	}
	if b[6] != 0 || b[7] != 0 {
		return fmt.Errorf("%w: set-up message with unknown flags", agg.ErrBadMessage)
	}
	if [32]byte(b[8:40]) != want.setupID {
		return fmt.Errorf("%w: message for another set-up", agg.ErrBadMessage)
	}
	if m := int64(binary.LittleEndian.Uint32(b[40:])); m != int64(want.member) {
		return fmt.Errorf("%w: set-up message for member %d, want %d", agg.ErrBadMessage, m, want.member)
	}
	return nil
}

// writer appends to a byte slice.
type writer struct{ b []byte }

func (w *writer) u16(v int)    { w.b = binary.LittleEndian.AppendUint16(w.b, uint16(v)) }
func (w *writer) u32(v int)    { w.b = binary.LittleEndian.AppendUint32(w.b, uint32(v)) }
func (w *writer) u64(v uint64) { w.b = binary.LittleEndian.AppendUint64(w.b, v) }
func (w *writer) raw(b []byte) { w.b = append(w.b, b...) }

// blob appends b with a uint32 length.
func (w *writer) blob(b []byte) {
	w.u32(len(b))
	w.raw(b)
}

// words appends ws, 8 bytes each.
func (w *writer) words(ws []uint64) {
	off := len(w.b)
	w.b = append(w.b, make([]byte, 8*len(ws))...)
	putWords(w.b[off:], ws)
}

// reader consumes a byte slice; the first failure sticks, and every later read returns zeros.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: "+format, append([]any{agg.ErrBadMessage}, args...)...)
	}
}

func (r *reader) take(n int) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("message truncated")
		return nil
	}
	b := r.b[:n:n]
	r.b = r.b[n:]
	return b
}

func (r *reader) u16() int {
	if b := r.take(2); b != nil {
		return int(binary.LittleEndian.Uint16(b))
	}
	return 0
}

func (r *reader) u32() int {
	if b := r.take(4); b != nil {
		return int(binary.LittleEndian.Uint32(b))
	}
	return 0
}

func (r *reader) u64() uint64 {
	if b := r.take(8); b != nil {
		return binary.LittleEndian.Uint64(b)
	}
	return 0
}

// blob reads a byte string with a uint32 length of at most max.
func (r *reader) blob(max int) []byte {
	n := r.u32()
	if n > max {
		r.fail("field of %d bytes, at most %d", n, max)
		return nil
	}
	return r.take(n)
}

// words reads n words, each below mod, into a new slice.
func (r *reader) words(n int, mod uint64) []uint64 {
	b := r.take(8 * n)
	if b == nil {
		return nil
	}
	ws := make([]uint64, n)
	if !getWords(ws, b, mod) {
		r.fail("coefficient out of range")
		return nil
	}
	return ws
}

// end requires that everything was read.
func (r *reader) end() error {
	if r.err == nil && len(r.b) != 0 {
		r.fail("%d trailing bytes", len(r.b))
	}
	return r.err
}

// nativeLE says the machine is little-endian, so that words can be read and written in place.
var nativeLE = binary.NativeEndian.Uint16([]byte{1, 0}) == 1

// asWords returns b viewed as len(b)/8 words if the machine is little-endian and b is 8-byte
// aligned, else nil.
func asWords(b []byte) []uint64 {
	if !nativeLE || len(b) < 8 {
		return nil
	}
	p := unsafe.SliceData(b)
	if uintptr(unsafe.Pointer(p))%8 != 0 {
		return nil
	}
	return unsafe.Slice((*uint64)(unsafe.Pointer(p)), len(b)/8)
}

// putWords writes ws into b, 8 bytes each, little-endian.
func putWords(b []byte, ws []uint64) {
	b = b[:8*len(ws)]
	if w := asWords(b); w != nil {
		copy(w, ws)
		return
	}
	for i, w := range ws {
		binary.LittleEndian.PutUint64(b[8*i:], w)
	}
}

// getWords reads len(ws) words from b and reports whether all are below mod (< 2^62).
func getWords(ws []uint64, b []byte, mod uint64) bool {
	b = b[:8*len(ws)]
	if w := asWords(b); w != nil {
		copy(ws, w)
		return below(ws, mod)
	}
	var bad uint64
	for i := range ws {
		x := binary.LittleEndian.Uint64(b[8*i:])
		bad |= x>>62 | (mod-1-x)>>63
		ws[i] = x
	}
	return bad == 0
}

// below reports whether every word of ws is below mod (< 2^62).
func below(ws []uint64, mod uint64) bool {
	var bad uint64
	for _, x := range ws {
		bad |= x>>62 | (mod-1-x)>>63
	}
	return bad == 0
}
