package policy

import (
	"crypto/ed25519"
	"encoding/base64"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/internal/store"
)

// An EventType says what an audit [Event] records.
type EventType string

// The event types of the audit log.
const (
	EventJoin          EventType = "join"           // a client joined a task
	EventRound         EventType = "round"          // a round was committed or aborted
	EventPolicyChange  EventType = "policy_change"  // a policy set was applied, rolled back or edited
	EventDenial        EventType = "denial"         // a request was denied
	EventModelDownload EventType = "model_download" // a model or checkpoint was downloaded
	EventErasure       EventType = "erasure"        // an erasure was requested or carried out (with its receipt)
)

// An Event is one entry of the audit log.
type Event struct {
	Time      time.Time         `json:"time"`
	Type      EventType         `json:"type"`
	Principal string            `json:"principal,omitempty"` // who, as a principal URI
	Action    string            `json:"action,omitempty"`    // the action, as named in the schema
	Resource  string            `json:"resource,omitempty"`  // what, as Type::"id"
	Decision  string            `json:"decision,omitempty"`  // "allow" or "deny", with the policies in Details["policies"]
	Details   map[string]string `json:"details,omitempty"`
}

// MaxEventSize is the largest encoded event, in bytes.
const MaxEventSize = 64 << 10

// AuditEvent returns the event to log for a decision of the authorizer, and whether there is
// one: a denial for every denied request, and for allowed requests the ones the log keeps
// (Join, DownloadModel and RequestErasure). Details["policies"] lists the determining
// policies.
func AuditEvent(req Request, d Decision) (Event, bool) {
	ev := Event{
		Type:      EventDenial,
		Principal: req.Principal.URI(),
		Action:    req.Action,
		Resource:  req.Resource.String(),
		Decision:  "deny",
	}
	if d.Allow {
		ev.Decision = "allow"
		switch req.Action {
		case "Join":
			ev.Type = EventJoin
		case "DownloadModel":
			ev.Type = EventModelDownload
		case "RequestErasure":
			ev.Type = EventErasure
		default:
			return Event{}, false
		}
	}
	if len(d.Reasons) > 0 {
		ev.Details = map[string]string{"policies": strings.Join(d.Reasons, " ")}
	}
	return ev, true
}

// A Signer signs the checkpoints of an audit log with Ed25519. A [pki.PrivateKey] is one, so
// the server signs with the key of its certificate; [Ed25519Signer] adapts a bare key.
type Signer interface {
	Sign(msg []byte) []byte
	Public() ed25519.PublicKey
}

var _ Signer = pki.PrivateKey{}

// Ed25519Signer returns k as a [Signer].
func Ed25519Signer(k ed25519.PrivateKey) Signer { return edSigner{k} }

type edSigner struct{ k ed25519.PrivateKey }

func (s edSigner) Sign(msg []byte) []byte    { return ed25519.Sign(s.k, msg) }
func (s edSigner) Public() ed25519.PublicKey { return s.k.Public().(ed25519.PublicKey) }

// A Checkpoint is a signed tree head: the size and root of the audit log's Merkle tree at a
// time, signed by the server. Whoever keeps a checkpoint can later check, with a consistency
// proof, that the log only grew since.
type Checkpoint struct {
	Size      uint64
	Root      Hash
	Time      time.Time
	Signature []byte
}

const checkpointOrigin = "fedweave audit checkpoint v1"

// signed returns the message the signature covers.
func (c Checkpoint) signed() []byte {
	return fmt.Appendf(nil, "%s\n%d\n%s\n%d\n", checkpointOrigin, c.Size,
		base64.StdEncoding.EncodeToString(c.Root[:]), c.Time.UnixNano())
}

// Verify checks the signature of c with the public key pub.
func (c Checkpoint) Verify(pub ed25519.PublicKey) error {
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, c.signed(), c.Signature) {
		return fmt.Errorf("policy: audit checkpoint of size %d: the signature does not verify with this key", c.Size)
	}
	return nil
}

// MarshalText encodes c as text: the signed lines (origin, size, base64 root, time in Unix
// nanoseconds) and a last line "signature BASE64".
func (c Checkpoint) MarshalText() ([]byte, error) {
	return fmt.Appendf(c.signed(), "signature %s\n", base64.StdEncoding.EncodeToString(c.Signature)), nil
}

// UnmarshalText decodes what MarshalText encodes. It does not verify the signature.
func (c *Checkpoint) UnmarshalText(b []byte) error {
	lines := strings.Split(string(b), "\n")
	bad := func(what string) error { return fmt.Errorf("policy: audit checkpoint: %s", what) }
	if len(lines) != 6 || lines[5] != "" || lines[0] != checkpointOrigin {
		return bad("not a fedweave audit checkpoint")
	}
	size, err := strconv.ParseUint(lines[1], 10, 64)
	if err != nil {
		return bad("bad size")
	}
	root, err := base64.StdEncoding.DecodeString(lines[2])
	if err != nil || len(root) != len(Hash{}) {
		return bad("bad root")
	}
	ns, err := strconv.ParseInt(lines[3], 10, 64)
	if err != nil {
		return bad("bad time")
	}
	sig, ok := strings.CutPrefix(lines[4], "signature ")
	if !ok {
		return bad("no signature")
	}
	sigb, err := base64.StdEncoding.DecodeString(sig)
	if err != nil || len(sigb) != ed25519.SignatureSize {
		return bad("bad signature encoding")
	}
	*c = Checkpoint{Size: size, Root: Hash(root), Time: time.Unix(0, ns).UTC(), Signature: sigb}
	return nil
}

// Keys of the audit log in the store. Indices and sizes are 8-byte big-endian, so that keys
// sort as numbers.
const (
	auditSizeKey    = "audit/size" // the number of entries
	auditEntryPre   = "audit/e/"   // + index: the entry, JSON of an Event
	auditHashPre    = "audit/h/"   // + level byte + index: hash of a perfect subtree
	auditCheckpoint = "audit/c/"   // + size + Unix nanoseconds: a Checkpoint as text
)

func be64(n uint64) []byte { return binary.BigEndian.AppendUint64(nil, n) }

func entryKey(i uint64) []byte { return append([]byte(auditEntryPre), be64(i)...) }

func hashKey(level int, index uint64) []byte {
	return append(append([]byte(auditHashPre), byte(level)), be64(index)...)
}

func checkpointKey(c Checkpoint) []byte {
	return append(append([]byte(auditCheckpoint), be64(c.Size)...), be64(uint64(c.Time.UnixNano()))...)
}

// An AuditLog is the append-only audit log of a fedweave server: an RFC 6962 Merkle tree of
// events kept in the server's encrypted store, with checkpoints signed by the server.
//
// On disk (keys under "audit/"): each entry under its index, the hash of every complete
// perfect subtree (so that roots and proofs cost O(log² n) reads), the size, and every
// checkpoint made. Entries are never changed or deleted by this package; [VerifyLog] detects
// it when someone else does.
//
// Its methods are safe for concurrent use by one process (the store admits one).
type AuditLog struct {
	st     *store.Store
	signer Signer
	mu     sync.Mutex
	now    func() time.Time
}

// NewAuditLog returns the audit log kept in st. signer signs checkpoints; it may be nil for a
// log that is only read (tail, proofs), and then [AuditLog.Checkpoint] fails.
func NewAuditLog(st *store.Store, signer Signer) *AuditLog {
	return &AuditLog{st: st, signer: signer, now: time.Now}
}

// ErrNoSigner is the error of [AuditLog.Checkpoint] on a log opened without a signer.
var ErrNoSigner = errors.New("policy: audit log has no signing key")

// Append adds ev to the log and returns its index. A zero ev.Time is set to now; ev.Type must
// not be empty. The entry is committed (and fsynced, unless the store says otherwise) when
// Append returns.
func (l *AuditLog) Append(ev Event) (uint64, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	var idx uint64
	err := retry(func() error {
		return l.st.Update(func(tx *store.Tx) error {
			var err error
			idx, err = l.appendTx(tx, ev)
			return err
		})
	})
	return idx, err
}

// retry runs f again while the store reports a conflict with another transaction.
func retry(f func() error) error {
	var err error
	for range 16 {
		if err = f(); !errors.Is(err, store.ErrConflict) {
			return err
		}
	}
	return err
}

// appendTx appends ev within tx. The caller holds l.mu.
func (l *AuditLog) appendTx(tx *store.Tx, ev Event) (uint64, error) {
	if ev.Type == "" {
		return 0, errors.New("policy: audit event has no type")
	}
	if ev.Time.IsZero() {
		ev.Time = l.now()
	}
	ev.Time = ev.Time.UTC()
	entry, err := json.Marshal(ev)
	if err != nil {
		return 0, fmt.Errorf("policy: audit event: %w", err)
	}
	if len(entry) > MaxEventSize {
		return 0, fmt.Errorf("policy: audit event of %d bytes is over the limit of %d", len(entry), MaxEventSize)
	}
	size, err := readSize(tx.Get)
	if err != nil {
		return 0, err
	}
	if err := tx.Put(entryKey(size), entry); err != nil {
		return 0, err
	}
	// Write the leaf hash and the hash of every perfect subtree that this leaf completes.
	h := LeafHash(entry)
	if err := tx.Put(hashKey(0, size), h[:]); err != nil {
		return 0, err
	}
	for level, idx := 0, size; idx&1 == 1; level, idx = level+1, idx>>1 {
		left, err := getHash(tx.Get, level, idx-1)
		if err != nil {
			return 0, err
		}
		h = NodeHash(left, h)
		if err := tx.Put(hashKey(level+1, idx>>1), h[:]); err != nil {
			return 0, err
		}
	}
	if err := tx.Put([]byte(auditSizeKey), be64(size+1)); err != nil {
		return 0, err
	}
	return size, nil
}

type getter func(key []byte) ([]byte, error)

func readSize(get getter) (uint64, error) {
	b, err := get([]byte(auditSizeKey))
	if errors.Is(err, store.ErrNotFound) {
		return 0, nil
	}
	if err != nil {
		return 0, err
	}
	if len(b) != 8 {
		return 0, errors.New("policy: audit log: the stored size is malformed")
	}
	return binary.BigEndian.Uint64(b), nil
}

func getHash(get getter, level int, index uint64) (Hash, error) {
	b, err := get(hashKey(level, index))
	if err != nil {
		return Hash{}, fmt.Errorf("policy: audit log: hash of level %d, index %d: %w", level, index, err)
	}
	if len(b) != len(Hash{}) {
		return Hash{}, fmt.Errorf("policy: audit log: hash of level %d, index %d is malformed", level, index)
	}
	return Hash(b), nil
}

func (l *AuditLog) subtrees() subtrees {
	return func(level int, index uint64) (Hash, error) { return getHash(l.st.Get, level, index) }
}

// Size returns the number of entries.
func (l *AuditLog) Size() (uint64, error) { return readSize(l.st.Get) }

// Root returns the root of the tree of the first size entries.
func (l *AuditLog) Root(size uint64) (Hash, error) {
	if err := l.checkSize(size); err != nil {
		return Hash{}, err
	}
	return rootOf(l.subtrees(), size)
}

func (l *AuditLog) checkSize(size uint64) error {
	n, err := l.Size()
	if err != nil {
		return err
	}
	if size > n {
		return fmt.Errorf("policy: audit log has %d entries, not %d", n, size)
	}
	return nil
}

// InclusionProof returns the RFC 6962 audit path that proves that entry index is in the tree
// of the first size entries; check it with [VerifyInclusion].
func (l *AuditLog) InclusionProof(index, size uint64) ([]Hash, error) {
	if err := l.checkSize(size); err != nil {
		return nil, err
	}
	return inclusionProof(l.subtrees(), index, size)
}

// ConsistencyProof returns the RFC 6962 consistency proof between the trees of the first
// oldSize and newSize entries; check it with [VerifyConsistency].
func (l *AuditLog) ConsistencyProof(oldSize, newSize uint64) ([]Hash, error) {
	if err := l.checkSize(newSize); err != nil {
		return nil, err
	}
	return consistencyProof(l.subtrees(), oldSize, newSize)
}

// Checkpoint signs the current tree head, stores the checkpoint and returns it.
func (l *AuditLog) Checkpoint() (Checkpoint, error) {
	if l.signer == nil {
		return Checkpoint{}, ErrNoSigner
	}
	l.mu.Lock()
	defer l.mu.Unlock()
	size, err := l.Size()
	if err != nil {
		return Checkpoint{}, err
	}
	root, err := rootOf(l.subtrees(), size)
	if err != nil {
		return Checkpoint{}, err
	}
	c := Checkpoint{Size: size, Root: root, Time: l.now().UTC()}
	c.Signature = l.signer.Sign(c.signed())
	text, _ := c.MarshalText()
	if err := l.st.Put(checkpointKey(c), text); err != nil {
		return Checkpoint{}, err
	}
	return c, nil
}

// Checkpoints returns the stored checkpoints, by size and time. It does not verify them.
func (l *AuditLog) Checkpoints() ([]Checkpoint, error) {
	var out []Checkpoint
	err := l.st.Scan([]byte(auditCheckpoint), func(key, val []byte) error {
		var c Checkpoint
		if err := c.UnmarshalText(val); err != nil {
			return fmt.Errorf("%w (key %x)", err, key)
		}
		out = append(out, c)
		return nil
	})
	return out, err
}

// An Entry is an event of the log with its index.
type Entry struct {
	Index uint64
	Event Event
	// Raw is the entry as stored and hashed.
	Raw []byte
}

// Entries returns the entries with indices from from up to (not including) to.
func (l *AuditLog) Entries(from, to uint64) ([]Entry, error) {
	if err := l.checkSize(to); err != nil {
		return nil, err
	}
	var out []Entry
	for i := from; i < to; i++ {
		raw, err := l.st.Get(entryKey(i))
		if err != nil {
			return nil, fmt.Errorf("policy: audit entry %d: %w", i, err)
		}
		var ev Event
		if err := json.Unmarshal(raw, &ev); err != nil {
			return nil, fmt.Errorf("policy: audit entry %d is not an event: %w", i, err)
		}
		out = append(out, Entry{Index: i, Event: ev, Raw: raw})
	}
	return out, nil
}

// ErrTampered is matched (with errors.Is) by the *[TamperError] of [VerifyLog].
var ErrTampered = errors.New("policy: audit log was tampered with")

// TamperError is the error of [VerifyLog] for a log that was changed: it names the first entry
// found bad.
type TamperError struct {
	// Index is the first bad entry. When only a signed checkpoint disagrees with the log,
	// the changed entry is one of Index to Last (inclusive); else Last equals Index.
	Index, Last uint64
	// Type is the event type of entry Index as it is stored now; "" when the entry is missing
	// or unreadable, or when the range holds more than one entry.
	Type EventType
	// Reason says what was found.
	Reason string
}

func (e *TamperError) Error() string {
	what := fmt.Sprintf("entry %d", e.Index)
	if e.Last != e.Index {
		what = fmt.Sprintf("entries %d to %d", e.Index, e.Last)
	}
	if e.Type != "" {
		what += " (" + string(e.Type) + ")"
	}
	return "audit log tampered with: " + what + " " + e.Reason
}

func (e *TamperError) Is(target error) bool { return target == ErrTampered }

// A LogReport is what [VerifyLog] verified.
type LogReport struct {
	// Size is the number of entries.
	Size uint64
	// Root is the root of the tree of all entries.
	Root Hash
	// Checkpoints is the number of signed checkpoints verified.
	Checkpoints int
	// Latest is the latest checkpoint (by size, then time), if Checkpoints > 0.
	Latest Checkpoint
	// Unsigned is the number of entries after the largest checkpoint: no signature covers
	// them yet.
	Unsigned uint64
}

// VerifyLog checks the audit log in st from scratch, with the server's public key pub: every
// entry is read in order and re-hashed, the tree is rebuilt and compared with every stored
// subtree hash, and every stored checkpoint must carry a valid signature and the root of the
// rebuilt tree at its size. A changed entry is named by its index and type (when its stored
// hash still tells, else as the range between the last checkpoint that matches and the first
// that does not); a removed entry by its index, when later entries or a checkpoint cover it.
// The error is a *[TamperError] (matching [ErrTampered]) for a log that was changed, and
// another error when the log cannot be read or a checkpoint's signature does not verify.
//
// What it cannot see: entries removed from the end together with every checkpoint that covered
// them, and a log rebuilt from scratch, since the store holds all it checks. Keep the latest
// checkpoint elsewhere (it is printed by "fedweave audit verify") to catch those.
func VerifyLog(st *store.Store, pub ed25519.PublicKey) (LogReport, error) {
	var rep LogReport
	size, err := readSize(st.Get)
	if err != nil {
		return rep, err
	}
	cps, err := NewAuditLog(st, nil).Checkpoints()
	if err != nil {
		return rep, err
	}
	for _, c := range cps {
		if err := c.Verify(pub); err != nil {
			return rep, err
		}
	}
	next := 0 // the next checkpoint to compare, by size
	lastGood := uint64(0)
	// checkCheckpoints compares the tree so far with the checkpoints of its size; typ is the
	// type of the last entry.
	checkCheckpoints := func(f *frontier, typ EventType) error {
		for next < len(cps) && cps[next].Size == f.size {
			c := cps[next]
			if c.Root != f.root() {
				te := &TamperError{Index: lastGood, Last: c.Size - 1,
					Reason: fmt.Sprintf("hold a changed entry: the tree differs from the checkpoint of size %d signed %s", c.Size, c.Time.Format(time.RFC3339))}
				if te.Index == te.Last {
					te.Type = typ
					te.Reason = fmt.Sprintf("was changed: the tree differs from the checkpoint of size %d signed %s", c.Size, c.Time.Format(time.RFC3339))
				}
				return te
			}
			lastGood = c.Size
			next++
		}
		return nil
	}

	var f frontier
	if err := checkCheckpoints(&f, ""); err != nil {
		return rep, err
	}
	err = st.Scan([]byte(auditEntryPre), func(key, val []byte) error {
		if len(key) != len(auditEntryPre)+8 {
			return &TamperError{Index: f.size, Last: f.size, Reason: fmt.Sprintf("is followed by a stray key %q", key)}
		}
		idx := binary.BigEndian.Uint64(key[len(auditEntryPre):])
		if idx != f.size {
			return &TamperError{Index: f.size, Last: f.size, Reason: "is missing: it was removed"}
		}
		var ev Event
		typ := EventType("")
		if err := json.Unmarshal(val, &ev); err == nil {
			typ = ev.Type
		}
		leaf := LeafHash(val)
		stored, err := getHash(st.Get, 0, idx)
		if err != nil && !errors.Is(err, store.ErrNotFound) {
			return err
		}
		if err != nil || stored != leaf {
			return &TamperError{Index: idx, Last: idx, Type: typ, Reason: "was changed: its bytes do not match the hash recorded when it was appended"}
		}
		if typ == "" {
			return &TamperError{Index: idx, Last: idx, Reason: "is not a valid event"}
		}
		err = f.add(leaf, func(level int, index uint64, h Hash) error {
			if level == 0 {
				return nil
			}
			stored, err := getHash(st.Get, level, index)
			if err != nil && !errors.Is(err, store.ErrNotFound) {
				return err
			}
			if err != nil || stored != h {
				first := index << level
				return &TamperError{Index: first, Last: first + 1<<level - 1,
					Reason: "hold a changed entry: a stored tree hash over them does not match them"}
			}
			return nil
		})
		if err != nil {
			return err
		}
		return checkCheckpoints(&f, typ)
	})
	if err != nil {
		return rep, err
	}
	plural := func(first, last uint64, one, many string) string {
		if first == last {
			return one
		}
		return many
	}
	switch {
	case f.size < size:
		return rep, &TamperError{Index: f.size, Last: size - 1,
			Reason: plural(f.size, size-1, "is", "are") + fmt.Sprintf(" missing: the log says it holds %d entries, %d are left", size, f.size)}
	case f.size > size:
		return rep, &TamperError{Index: size, Last: f.size - 1,
			Reason: plural(size, f.size-1, "is", "are") + fmt.Sprintf(" beyond the log's size %d", size)}
	case next < len(cps):
		c := cps[next]
		return rep, &TamperError{Index: f.size, Last: c.Size - 1,
			Reason: fmt.Sprintf("%s removed: the checkpoint of size %d signed %s covers %s",
				plural(f.size, c.Size-1, "was", "were"), c.Size, c.Time.Format(time.RFC3339), plural(f.size, c.Size-1, "it", "them"))}
	}
	rep = LogReport{Size: size, Root: f.root(), Checkpoints: len(cps), Unsigned: size}
	if len(cps) > 0 {
		rep.Latest = cps[len(cps)-1]
		rep.Unsigned = size - rep.Latest.Size
	}
	return rep, nil
}
