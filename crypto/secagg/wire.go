package secagg

import (
	"crypto/ed25519"
	"encoding/binary"
	"fmt"

	"github.com/fedweave/fedweave/crypto/agg"
)

// Every message, either way, starts with a header of 56 bytes:
//
//	magic "FWSA" | version (1 byte, 1) | type (1 byte) | flags (uint16, 0) | round (uint64) |
//	layout hash (32 bytes) | index (uint32: the sender of a client's message, the recipient of
//	the server's) | body length (uint32)
//
// then a body of that length, all integers little-endian. (The flags, reserved, keep the body
// 8-byte aligned, so that a masked input can be written in place.) The types are the phases: a client's
// message of phase p has type p+1, the server's message that a client answers in phase p has
// type 0x80+p. Decoders check every field, every length and every index against what the
// reader expects, and fail with errors that wrap agg.ErrBadMessage.
const (
	magic     = "FWSA"
	version   = 1
	headerLen = 4 + 1 + 1 + 2 + 8 + 32 + 4 + 4
)

type msgType byte

const (
	typeAdvert     msgType = 1    // client, phase 0
	typeShares     msgType = 2    // client, phase 1
	typeMasked     msgType = 3    // client, phase 2
	typeUnmask     msgType = 4    // client, phase 3
	typeNeighbours msgType = 0x81 // server, answered in phase 1
	typeRouted     msgType = 0x82 // server, answered in phase 2
	typeSurvivors  msgType = 0x83 // server, answered in phase 3
)

func (t msgType) String() string {
	switch t {
	case typeAdvert:
		return "key advertisement"
	case typeShares:
		return "encrypted shares"
	case typeMasked:
		return "masked input"
	case typeUnmask:
		return "unmasking shares"
	case typeNeighbours:
		return "neighbours' advertisements"
	case typeRouted:
		return "routed shares"
	case typeSurvivors:
		return "survivors"
	}
	return fmt.Sprintf("message type %#x", byte(t))
}

// header is what a message's header must say.
type header struct {
	typ    msgType
	round  uint64
	layout [32]byte
	index  int
}

func headerOf(p agg.Params, typ msgType, index int) header {
	return header{typ: typ, round: p.Round, layout: p.LayoutHash, index: index}
}

// newMessage returns a message of h with room for a body of n bytes, the header written and
// the body empty (append to it).
func newMessage(h header, n int) []byte {
	b := make([]byte, headerLen, headerLen+n)
	putHeader(b, h, n)
	return b
}

// putHeader writes the header of h, with a body of n bytes, to b.
func putHeader(b []byte, h header, n int) {
	copy(b, magic)
	b[4] = version
	b[5] = byte(h.typ)
	b[6], b[7] = 0, 0
	binary.LittleEndian.PutUint64(b[8:], h.round)
	copy(b[16:48], h.layout[:])
	binary.LittleEndian.PutUint32(b[48:], uint32(h.index))
	binary.LittleEndian.PutUint32(b[52:], uint32(n))
}

// finish sets the body length of a message built with newMessage.
func finish(b []byte) []byte {
	binary.LittleEndian.PutUint32(b[52:], uint32(len(b)-headerLen))
	return b
}

// parseHeader checks msg's header against want and returns its body.
func parseHeader(msg []byte, want header) ([]byte, error) {
	if len(msg) < headerLen {
		return nil, fmt.Errorf("%w: %s of %d bytes is shorter than its header", agg.ErrBadMessage, want.typ, len(msg))
	}
	if string(msg[:4]) != magic {
		return nil, fmt.Errorf("%w: not a secagg message", agg.ErrBadMessage)
	}
	if msg[4] != version {
		return nil, fmt.Errorf("%w: secagg message of version %d, want %d", agg.ErrBadMessage, msg[4], version)
	}
	if t := msgType(msg[5]); t != want.typ {
		return nil, fmt.Errorf("%w: a %s where a %s was due", agg.ErrBadMessage, t, want.typ)
	}
	if f := binary.LittleEndian.Uint16(msg[6:]); f != 0 {
		return nil, fmt.Errorf("%w: %s with unknown flags %#x", agg.ErrBadMessage, want.typ, f)
	}
	if r := binary.LittleEndian.Uint64(msg[8:]); r != want.round {
		return nil, fmt.Errorf("%w: %s for round %d, this is round %d", agg.ErrBadMessage, want.typ, r, want.round)
	}
	if [32]byte(msg[16:48]) != want.layout {
		return nil, fmt.Errorf("%w: %s for another model layout", agg.ErrBadMessage, want.typ)
	}
	if i := binary.LittleEndian.Uint32(msg[48:]); int64(i) != int64(want.index) {
		return nil, fmt.Errorf("%w: %s of cohort member %d, want %d", agg.ErrBadMessage, want.typ, i, want.index)
	}
	if n := binary.LittleEndian.Uint32(msg[52:]); int64(n) != int64(len(msg)-headerLen) {
		return nil, fmt.Errorf("%w: %s says its body is %d bytes, it is %d", agg.ErrBadMessage, want.typ, n, len(msg)-headerLen)
	}
	return msg[headerLen:], nil
}

// reader reads a body. The first failure sticks: later reads return zeros, and err says what
// was short or wrong.
type reader struct {
	b   []byte
	typ msgType
	err error
}

func (r *reader) fail(format string, args ...any) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s: %s", agg.ErrBadMessage, r.typ, fmt.Sprintf(format, args...))
	}
}

func (r *reader) take(n int, what string) []byte {
	if r.err != nil {
		return nil
	}
	if n < 0 || n > len(r.b) {
		r.fail("%s truncated", what)
		return nil
	}
	b := r.b[:n:n]
	r.b = r.b[n:]
	return b
}

func (r *reader) u8(what string) byte {
	if b := r.take(1, what); b != nil {
		return b[0]
	}
	return 0
}

func (r *reader) u16(what string) int {
	if b := r.take(2, what); b != nil {
		return int(binary.LittleEndian.Uint16(b))
	}
	return 0
}

func (r *reader) u32(what string) int {
	if b := r.take(4, what); b != nil {
		return int(binary.LittleEndian.Uint32(b))
	}
	return 0
}

// count reads a count of items of at least min bytes each, and checks that it is at most max
// and that the rest of the body can hold them.
func (r *reader) count(what string, max, min int) int {
	n := r.u32(what + " count")
	switch {
	case r.err != nil:
		return 0
	case n > max:
		r.fail("%d %s, at most %d expected", n, what, max)
		return 0
	case n*min > len(r.b):
		r.fail("%d %s do not fit in %d bytes", n, what, len(r.b))
		return 0
	}
	return n
}

// end fails if bytes are left over, and returns the first failure.
func (r *reader) end() error {
	if r.err == nil && len(r.b) > 0 {
		r.fail("%d bytes of trailing garbage", len(r.b))
	}
	return r.err
}

func appendU16(b []byte, v int) []byte { return binary.LittleEndian.AppendUint16(b, uint16(v)) }
func appendU32(b []byte, v int) []byte { return binary.LittleEndian.AppendUint32(b, uint32(v)) }

// The bodies of the messages.
//
// advert (client, phase 0):
//
//	kem (1) | c public key (uint16 length, bytes) | s public key (uint16 length, bytes) |
//	certificate DER (uint32 length, bytes) | Ed25519 signature (64)
//
// The signature covers advertDomain followed by the whole message up to the signature.
//
// neighbours (server, answered in phase 1):
//
//	n (uint32) | k (uint32) | t (uint32) | kem (1) | count (uint32) |
//	count × (index (uint32) | length (uint32) | the neighbour's advert message)
//
// shares (client, phase 1), and routed (server, answered in phase 2):
//
//	count (uint32) | count × (peer (uint32) | length (uint32) | sealed shares)
//
// where the peer is the recipient in shares and the sender in routed, and the sealed shares
// are what the suite's seal returns: [KEM ciphertext |] AES-256-GCM of the b share and the σ
// share [| the pairwise KEM ciphertext when the sender's index is the lower].
//
// masked (client, phase 2): the words of y, 4 or 8 bytes each as the layout says.
//
// survivors (server, answered in phase 3): count (uint32) | count × index (uint32).
//
// unmask (client, phase 3): count (uint32) | count × (owner (uint32) | kind (1) | share (32)).
const advertDomain = "fedweave/secagg/v1 key advertisement\x00"

const (
	kindB     = 1 // a share of a self-mask seed b_j
	kindSigma = 2 // a share of a pairwise-key secret σ_j
)

// advert is a parsed key advertisement.
type advert struct {
	index    int
	kem      byte
	cpk, spk []byte
	cert     []byte
	sig      []byte
	signed   []byte // what the signature covers, less the domain
	raw      []byte // the whole message, as the client sent it
}

func encodeAdvert(h header, kem byte, cpk, spk, cert []byte, sign func([]byte) []byte) []byte {
	n := 1 + 2 + len(cpk) + 2 + len(spk) + 4 + len(cert) + ed25519.SignatureSize
	b := newMessage(h, n)
	b = append(b, kem)
	b = append(appendU16(b, len(cpk)), cpk...)
	b = append(appendU16(b, len(spk)), spk...)
	b = append(appendU32(b, len(cert)), cert...)
	sig := sign(append([]byte(advertDomain), b...))
	if len(sig) != ed25519.SignatureSize {
		// A broken signer; the advert will be refused by every peer.
		sig = make([]byte, ed25519.SignatureSize)
	}
	return append(b, sig...)
}

// decodeAdvert parses the advert of cohort member index for the round h describes, of the
// suite s. It checks the format only; verify checks the signature.
func decodeAdvert(msg []byte, h header, s suite) (*advert, error) {
	body, err := parseHeader(msg, h)
	if err != nil {
		return nil, err
	}
	r := reader{b: body, typ: typeAdvert}
	a := &advert{index: h.index, raw: msg}
	a.kem = r.u8("KEM")
	if r.err == nil && a.kem != s.id() {
		r.fail("keys of KEM %d, this round uses %s", a.kem, s.name())
	}
	if n := r.u16("c key length"); r.err == nil && n != s.publicKeySize() {
		r.fail("c key of %d bytes, want %d", n, s.publicKeySize())
	}
	a.cpk = r.take(s.publicKeySize(), "c key")
	if n := r.u16("s key length"); r.err == nil && n != s.publicKeySize() {
		r.fail("s key of %d bytes, want %d", n, s.publicKeySize())
	}
	a.spk = r.take(s.publicKeySize(), "s key")
	if n := r.u32("certificate length"); r.err == nil && (n < 1 || n > maxCert) {
		r.fail("certificate of %d bytes, want 1 to %d", n, maxCert)
	} else {
		a.cert = r.take(n, "certificate")
	}
	a.signed = msg[:len(msg)-len(r.b)]
	a.sig = r.take(ed25519.SignatureSize, "signature")
	if err := r.end(); err != nil {
		return nil, err
	}
	if string(a.cpk) == string(a.spk) {
		return nil, fmt.Errorf("%w: %w: the same key twice", agg.ErrBadMessage, ErrForgedAdvert)
	}
	return a, nil
}

// verify checks a's certificate with v and a's signature with the certificate's key, which it
// returns.
func (a *advert) verify(v Verifier) (ed25519.PublicKey, error) {
	pub, err := v(a.cert)
	if err != nil {
		return nil, fmt.Errorf("%w: %w: advert of cohort member %d: certificate refused: %v", agg.ErrBadMessage, ErrForgedAdvert, a.index, err)
	}
	if len(pub) != ed25519.PublicKeySize {
		return nil, fmt.Errorf("%w: %w: advert of cohort member %d: certificate has no Ed25519 key", agg.ErrBadMessage, ErrForgedAdvert, a.index)
	}
	msg := append([]byte(advertDomain), a.signed...)
	if !ed25519.Verify(pub, msg, a.sig) {
		return nil, fmt.Errorf("%w: %w: advert of cohort member %d: signature does not match its certificate", agg.ErrBadMessage, ErrForgedAdvert, a.index)
	}
	return pub, nil
}

// neighboursMsg is the server's message that a client answers in phase 1.
type neighboursMsg struct {
	n, k, t int
	kem     byte
	adverts map[int][]byte // by cohort index
	order   []int          // the indices, ascending
}

func encodeNeighbours(h header, m *neighboursMsg) []byte {
	size := 3*4 + 1 + 4
	for _, a := range m.adverts {
		size += 8 + len(a)
	}
	b := newMessage(h, size)
	b = appendU32(appendU32(appendU32(b, m.n), m.k), m.t)
	b = append(b, m.kem)
	b = appendU32(b, len(m.order))
	for _, i := range m.order {
		b = append(appendU32(appendU32(b, i), len(m.adverts[i])), m.adverts[i]...)
	}
	return b
}

// decodeNeighbours parses the neighbours message of h. It checks that the indices are
// ascending cohort members and the counts sane; the client checks the rest.
func decodeNeighbours(msg []byte, h header) (*neighboursMsg, error) {
	body, err := parseHeader(msg, h)
	if err != nil {
		return nil, err
	}
	r := reader{b: body, typ: typeNeighbours}
	m := &neighboursMsg{adverts: make(map[int][]byte)}
	m.n, m.k, m.t = r.u32("cohort size"), r.u32("neighbours"), r.u32("threshold")
	m.kem = r.u8("KEM")
	if r.err == nil && (m.n < 2 || m.n > MaxCohort || h.index > m.n) {
		r.fail("cohort of %d for member %d", m.n, h.index)
	}
	count := r.count("adverts", m.n-1, 8+headerLen)
	prev := 0
	for range count {
		i := r.u32("index")
		if r.err == nil && (i <= prev || i > m.n || i == h.index) {
			r.fail("advert of member %d after %d in a cohort of %d", i, prev, m.n)
		}
		prev = i
		a := r.take(r.u32("advert length"), "advert")
		if r.err == nil {
			m.adverts[i] = a
			m.order = append(m.order, i)
		}
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return m, nil
}

// sealedEntry is one item of a shares or routed message: the sealed shares for, or from, a
// peer.
type sealedEntry struct {
	peer int
	data []byte
}

func encodeEntries(h header, entries []sealedEntry) []byte {
	size := 4
	for _, e := range entries {
		size += 8 + len(e.data)
	}
	b := appendU32(newMessage(h, size), len(entries))
	for _, e := range entries {
		b = append(appendU32(appendU32(b, e.peer), len(e.data)), e.data...)
	}
	return b
}

// decodeEntries parses a shares (typeShares) or routed (typeRouted) message: at most max
// entries, peers ascending, none equal to h.index, each of the size that sealedLen gives for
// the peer (0: a peer that may not appear).
func decodeEntries(msg []byte, h header, max int, sealedLen func(peer int) int) ([]sealedEntry, error) {
	body, err := parseHeader(msg, h)
	if err != nil {
		return nil, err
	}
	r := reader{b: body, typ: h.typ}
	count := r.count("entries", max, 8)
	entries := make([]sealedEntry, 0, count)
	prev := 0
	for range count {
		peer := r.u32("peer")
		n := r.u32("length")
		if r.err != nil {
			break
		}
		want := 0
		if peer > prev && peer != h.index {
			want = sealedLen(peer)
		}
		if want == 0 {
			r.fail("an entry of member %d after %d", peer, prev)
			break
		}
		if n != want {
			r.fail("an entry of %d bytes, want %d", n, want)
			break
		}
		prev = peer
		entries = append(entries, sealedEntry{peer: peer, data: r.take(n, "entry")})
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return entries, nil
}

// decodeMasked parses a masked input of size bytes and returns its words, little-endian.
func decodeMasked(msg []byte, h header, size int) ([]byte, error) {
	body, err := parseHeader(msg, h)
	if err != nil {
		return nil, err
	}
	if len(body) != size {
		return nil, fmt.Errorf("%w: masked input of %d bytes, want %d", agg.ErrBadMessage, len(body), size)
	}
	return body, nil
}

func encodeSurvivors(h header, alive []int) []byte {
	b := appendU32(newMessage(h, 4+4*len(alive)), len(alive))
	for _, i := range alive {
		b = appendU32(b, i)
	}
	return b
}

// decodeSurvivors parses a survivors message: ascending indices, each accepted by ok.
func decodeSurvivors(msg []byte, h header, max int, ok func(int) bool) ([]int, error) {
	body, err := parseHeader(msg, h)
	if err != nil {
		return nil, err
	}
	r := reader{b: body, typ: typeSurvivors}
	count := r.count("survivors", max, 4)
	alive := make([]int, 0, count)
	prev := 0
	for range count {
		i := r.u32("survivor")
		if r.err == nil && (i <= prev || !ok(i)) {
			r.fail("survivor %d after %d is not a neighbour that shared", i, prev)
		}
		prev = i
		alive = append(alive, i)
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return alive, nil
}

// unmaskEntry is one share a client reveals in phase 3.
type unmaskEntry struct {
	owner int
	kind  byte
	share [32]byte
}

func encodeUnmask(h header, entries []unmaskEntry) []byte {
	b := appendU32(newMessage(h, 4+37*len(entries)), len(entries))
	for _, e := range entries {
		b = append(appendU32(b, e.owner), e.kind)
		b = append(b, e.share[:]...)
	}
	return b
}

// decodeUnmask parses an unmask message that must hold exactly the entries of want (owners and
// kinds, ascending), and returns them with their shares.
func decodeUnmask(msg []byte, h header, want []unmaskEntry) ([]unmaskEntry, error) {
	body, err := parseHeader(msg, h)
	if err != nil {
		return nil, err
	}
	r := reader{b: body, typ: typeUnmask}
	count := r.count("shares", len(want), 37)
	if r.err == nil && count != len(want) {
		r.fail("%d shares, want %d", count, len(want))
	}
	got := make([]unmaskEntry, 0, count)
	for i := range count {
		e := unmaskEntry{owner: r.u32("owner"), kind: r.u8("kind")}
		copy(e.share[:], r.take(32, "share"))
		if r.err != nil {
			break
		}
		if e.owner != want[i].owner || e.kind != want[i].kind {
			r.fail("share %d is of kind %d for member %d, want kind %d for member %d", i, e.kind, e.owner, want[i].kind, want[i].owner)
			break
		}
		got = append(got, e)
	}
	if err := r.end(); err != nil {
		return nil, err
	}
	return got, nil
}
