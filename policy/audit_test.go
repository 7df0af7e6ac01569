package policy

import (
	"bytes"
	"crypto/ed25519"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedweave/fedweave/internal/store"
)

func newTestStore(t testing.TB) *store.Store {
	t.Helper()
	dir := t.TempDir()
	key := filepath.Join(dir, "master.key")
	if err := store.NewKeyFile(key); err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Options{Dir: filepath.Join(dir, "db"), KeyFile: key, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { st.Close() })
	return st
}

// testSigner is a fixed Ed25519 key, so that failures reproduce.
func testSigner() Signer {
	return Ed25519Signer(ed25519.NewKeyFromSeed(bytes.Repeat([]byte{7}, ed25519.SeedSize)))
}

var eventTypes = []EventType{EventJoin, EventRound, EventPolicyChange, EventDenial, EventModelDownload, EventErasure}

// fillLog appends n events to a new log, with a checkpoint after each index in checkpointAt.
func fillLog(t testing.TB, n int, checkpointAt ...int) (*store.Store, *AuditLog) {
	t.Helper()
	st := newTestStore(t)
	l := NewAuditLog(st, testSigner())
	clock := time.Date(2026, 5, 1, 9, 0, 0, 0, time.UTC)
	l.now = func() time.Time { clock = clock.Add(time.Second); return clock }
	for i := range n {
		idx, err := l.Append(Event{
			Type:      eventTypes[i%len(eventTypes)],
			Principal: fmt.Sprintf("fedweave://acme/org/hospital-a/client/node%d", i),
			Action:    "Join",
			Resource:  `Task::"triage"`,
			Decision:  "allow",
			Details:   map[string]string{"i": fmt.Sprint(i)},
		})
		if err != nil {
			t.Fatal(err)
		}
		if idx != uint64(i) {
			t.Fatalf("Append #%d returned index %d", i, idx)
		}
		for _, c := range checkpointAt {
			if c == i {
				if _, err := l.Checkpoint(); err != nil {
					t.Fatal(err)
				}
			}
		}
	}
	return st, l
}

func TestAuditLogProofs(t *testing.T) {
	const n = 21
	_, l := fillLog(t, n)
	entries, err := l.Entries(0, n)
	if err != nil {
		t.Fatal(err)
	}
	var leaves []Hash
	for i, e := range entries {
		if e.Index != uint64(i) || e.Event.Type != eventTypes[i%len(eventTypes)] || e.Event.Details["i"] != fmt.Sprint(i) {
			t.Fatalf("entry %d = %+v", i, e)
		}
		leaves = append(leaves, LeafHash(e.Raw))
	}
	for size := uint64(0); size <= n; size++ {
		root, err := l.Root(size)
		if err != nil {
			t.Fatal(err)
		}
		if want := refMTH(leaves[:size]); root != want {
			t.Fatalf("Root(%d) = %s, reference %s", size, root, want)
		}
		for i := uint64(0); i < size; i++ {
			p, err := l.InclusionProof(i, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyInclusion(leaves[i], i, size, p, root); err != nil {
				t.Fatalf("inclusion of %d in %d: %v", i, size, err)
			}
		}
		for old := uint64(0); old <= size; old++ {
			p, err := l.ConsistencyProof(old, size)
			if err != nil {
				t.Fatal(err)
			}
			if err := VerifyConsistency(old, size, refMTH(leaves[:old]), root, p); err != nil {
				t.Fatalf("consistency %d to %d: %v", old, size, err)
			}
		}
	}
	if _, err := l.InclusionProof(0, n+1); err == nil {
		t.Error("a proof in a tree larger than the log")
	}
	if _, err := l.ConsistencyProof(5, 4); err == nil {
		t.Error("a consistency proof to a smaller tree")
	}
}

func TestCheckpoints(t *testing.T) {
	st, l := fillLog(t, 10, 2, 6)
	c, err := l.Checkpoint()
	if err != nil {
		t.Fatal(err)
	}
	root, _ := l.Root(10)
	if c.Size != 10 || c.Root != root {
		t.Errorf("checkpoint %+v, want size 10 root %s", c, root)
	}
	pub := testSigner().Public()
	if err := c.Verify(pub); err != nil {
		t.Error(err)
	}
	text, _ := c.MarshalText()
	var back Checkpoint
	if err := back.UnmarshalText(text); err != nil {
		t.Fatal(err)
	}
	if back.Size != c.Size || back.Root != c.Root || !back.Time.Equal(c.Time) || back.Verify(pub) != nil {
		t.Errorf("round trip %+v -> %+v", c, back)
	}
	forged := back
	forged.Size = 11
	if forged.Verify(pub) == nil {
		t.Error("a checkpoint with another size verifies")
	}
	other := ed25519.NewKeyFromSeed(bytes.Repeat([]byte{8}, 32)).Public().(ed25519.PublicKey)
	if c.Verify(other) == nil {
		t.Error("a checkpoint verifies with another key")
	}
	cps, err := l.Checkpoints()
	if err != nil || len(cps) != 3 || cps[0].Size != 3 || cps[1].Size != 7 || cps[2].Size != 10 {
		t.Fatalf("Checkpoints() = %+v, %v", cps, err)
	}
	rep, err := VerifyLog(st, pub)
	if err != nil {
		t.Fatal(err)
	}
	if rep.Size != 10 || rep.Checkpoints != 3 || rep.Latest.Size != 10 || rep.Unsigned != 0 || rep.Root != root {
		t.Errorf("VerifyLog = %+v", rep)
	}
	if _, err := VerifyLog(st, other); err == nil || errors.Is(err, ErrTampered) {
		t.Errorf("VerifyLog with another key: %v", err)
	}
	if _, err := NewAuditLog(st, nil).Checkpoint(); !errors.Is(err, ErrNoSigner) {
		t.Errorf("Checkpoint without a signer: %v", err)
	}
}

// rewrite lets the test change the stored log as an attacker with the master key would.
func rewrite(t *testing.T, st *store.Store, key []byte, f func(old []byte) []byte) {
	t.Helper()
	old, err := st.Get(key)
	if err != nil {
		t.Fatal(err)
	}
	if err := st.Put(key, f(old)); err != nil {
		t.Fatal(err)
	}
}

func changeEntry(old []byte) []byte {
	var ev map[string]any
	if err := json.Unmarshal(old, &ev); err != nil {
		panic(err)
	}
	ev["principal"] = "fedweave://acme/org/hospital-b/client/someone-else"
	b, _ := json.Marshal(ev)
	return b
}

// rehash rewrites every stored tree hash from the stored entries, as an attacker who knows the
// layout would after changing an entry.
func rehash(t *testing.T, st *store.Store) {
	t.Helper()
	var f frontier
	err := st.Scan([]byte(auditEntryPre), func(key, val []byte) error {
		return f.add(LeafHash(val), func(level int, index uint64, h Hash) error {
			return st.Put(hashKey(level, index), h[:])
		})
	})
	if err != nil {
		t.Fatal(err)
	}
}

func TestVerifyLogFindsTampering(t *testing.T) {
	pub := testSigner().Public()
	tests := []struct {
		name    string
		tamper  func(t *testing.T, st *store.Store)
		index   uint64
		last    uint64
		typ     EventType
		message string
	}{
		{
			name:   "changed entry",
			tamper: func(t *testing.T, st *store.Store) { rewrite(t, st, entryKey(4), changeEntry) },
			index:  4, last: 4, typ: eventTypes[4], message: "entry 4 (model_download) was changed",
		},
		{
			name: "changed type",
			tamper: func(t *testing.T, st *store.Store) {
				rewrite(t, st, entryKey(3), func(old []byte) []byte {
					return bytes.Replace(old, []byte(`"denial"`), []byte(`"round"`), 1)
				})
			},
			index: 3, last: 3, typ: EventRound, message: "entry 3 (round) was changed",
		},
		{
			name: "changed bytes",
			tamper: func(t *testing.T, st *store.Store) {
				rewrite(t, st, entryKey(0), func(old []byte) []byte { return append(old, ' ') })
			},
			index: 0, last: 0, typ: eventTypes[0], message: "entry 0 (join) was changed",
		},
		{
			name: "changed entry and every hash, caught by the checkpoint",
			tamper: func(t *testing.T, st *store.Store) {
				rewrite(t, st, entryKey(8), changeEntry)
				rehash(t, st)
			},
			index: 7, last: 9, message: "entries 7 to 9 hold a changed entry: the tree differs from the checkpoint of size 10",
		},
		{
			name: "changed entry and its leaf hash only",
			tamper: func(t *testing.T, st *store.Store) {
				rewrite(t, st, entryKey(5), changeEntry)
				raw, _ := st.Get(entryKey(5))
				h := LeafHash(raw)
				if err := st.Put(hashKey(0, 5), h[:]); err != nil {
					t.Fatal(err)
				}
			},
			index: 4, last: 5, message: "entries 4 to 5 hold a changed entry: a stored tree hash over them does not match them",
		},
		{
			name:   "removed entry",
			tamper: func(t *testing.T, st *store.Store) { st.Delete(entryKey(5)) },
			index:  5, last: 5, message: "entry 5 is missing: it was removed",
		},
		{
			name: "removed last entries and size lowered",
			tamper: func(t *testing.T, st *store.Store) {
				st.Delete(entryKey(11))
				st.Delete(entryKey(10))
				st.Delete(entryKey(9))
				st.Put([]byte(auditSizeKey), binary.BigEndian.AppendUint64(nil, 9))
			},
			index: 9, last: 9, message: "entry 9 was removed: the checkpoint of size 10 signed 2026-05-01T09:00:12Z covers it",
		},
		{
			name:   "removed last entry",
			tamper: func(t *testing.T, st *store.Store) { st.Delete(entryKey(11)) },
			index:  11, last: 11, message: "entry 11 is missing: the log says it holds 12 entries, 11 are left",
		},
		{
			name: "entry that is no event",
			tamper: func(t *testing.T, st *store.Store) {
				st.Put(entryKey(2), []byte("not json"))
				rehash(t, st)
			},
			index: 2, last: 2, message: "entry 2 is not a valid event",
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			st, _ := fillLog(t, 12, 6, 9)
			if _, err := VerifyLog(st, pub); err != nil {
				t.Fatalf("before tampering: %v", err)
			}
			tt.tamper(t, st)
			_, err := VerifyLog(st, pub)
			var te *TamperError
			if !errors.As(err, &te) || !errors.Is(err, ErrTampered) {
				t.Fatalf("VerifyLog = %v, want a TamperError", err)
			}
			if te.Index != tt.index || te.Last != tt.last || te.Type != tt.typ {
				t.Errorf("names entries %d to %d (%q), want %d to %d (%q): %v", te.Index, te.Last, te.Type, tt.index, tt.last, tt.typ, err)
			}
			if !strings.Contains(err.Error(), tt.message) {
				t.Errorf("error %q lacks %q", err, tt.message)
			}
		})
	}
}

func TestAppendRefusesBadEvents(t *testing.T) {
	st := newTestStore(t)
	l := NewAuditLog(st, nil)
	if _, err := l.Append(Event{}); err == nil {
		t.Error("an event without a type was appended")
	}
	if _, err := l.Append(Event{Type: EventRound, Details: map[string]string{"x": strings.Repeat("a", MaxEventSize)}}); err == nil {
		t.Error("an event over the size limit was appended")
	}
	if n, err := l.Size(); err != nil || n != 0 {
		t.Errorf("Size() = %d, %v after refused appends", n, err)
	}
	rep, err := VerifyLog(st, testSigner().Public())
	if err != nil || rep.Size != 0 || rep.Root != emptyRoot {
		t.Errorf("VerifyLog of an empty log = %+v, %v", rep, err)
	}
}
