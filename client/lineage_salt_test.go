package client

import (
	"bytes"
	"path/filepath"
	"testing"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/lineage"
)

// lineageFixture is a CA to issue client identities, and records to commit to.
type lineageFixture struct {
	ca *pki.CA
	d  *dataset.Dataset
}

func newLineageFixture(t *testing.T) *lineageFixture {
	t.Helper()
	ca, err := pki.Init(filepath.Join(t.TempDir(), "ca"), "consortium", 0)
	if err != nil {
		t.Fatal(err)
	}
	return &lineageFixture{ca: ca, d: dataset.Synthetic(dataset.SyntheticConfig{N: 20, Seed: 4})}
}

// client returns a client of org, with st (nil: none), training on f.d (not run: c.train is
// set as Run would set it).
func (f *lineageFixture) client(t *testing.T, org string, st *Store) *Client {
	t.Helper()
	certPEM, keyPEM, err := f.ca.Issue(pki.Principal{Federation: "consortium", Org: org, Role: pki.RoleClient, Name: "node"}, pki.IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	id, err := pki.ParseIdentity(certPEM, keyPEM)
	if err != nil {
		t.Fatal(err)
	}
	c, err := New(Config{Server: "127.0.0.1:1", Task: "triage", Identity: id, CAPool: f.ca.Pool(), Source: DatasetSource(f.d), Store: st})
	if err != nil {
		t.Fatal(err)
	}
	c.train = f.d
	return c
}

// commitOf returns the commitment c puts into a round's report, after checking its signature.
func commitOf(t *testing.T, c *Client, round uint64) []byte {
	t.Helper()
	e := &pb.EvalReport{Round: round}
	c.commit(e, "layout")
	if err := lineage.Verify(c.cfg.Identity.Cert.Leaf, "triage", round, "layout", e.GetDatasetCommitment(), e.GetSignature()); err != nil {
		t.Fatalf("round %d: %v", round, err)
	}
	return e.GetDatasetCommitment()
}

func openStore(t *testing.T, dir string) *Store {
	t.Helper()
	st, err := OpenStore(StoreOptions{Dir: filepath.Join(dir, "store"), KeyDir: filepath.Join(dir, "keys"), NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	return st
}

// TestLineageSaltStore: clients with different stores commit differently to the same records;
// a client keeps its salt in its store, so that one reopening the store commits as before, and
// the partner can open its commitments with the stored salt.
func TestLineageSaltStore(t *testing.T) {
	f := newLineageFixture(t)
	dirA, dirB := t.TempDir(), t.TempDir()
	stA, stB := openStore(t, dirA), openStore(t, dirB)
	defer stB.Close()
	a := commitOf(t, f.client(t, "orga", stA), 1)
	b := commitOf(t, f.client(t, "orgb", stB), 1)
	if bytes.Equal(a, b) {
		t.Fatal("two clients with different stores give the same commitment to the same records")
	}
	saltA, err := stA.Secret(LineageSaltSecret)
	if err != nil {
		t.Fatal(err)
	}
	if !lineage.Open(f.d, saltA, a) {
		t.Error("the commitment does not open with the stored salt")
	}
	if lineage.Open(f.d, saltA, b) {
		t.Error("another store's commitment opens with this store's salt")
	}
	// A second client on the same store (another task, say) uses the same salt.
	if again := commitOf(t, f.client(t, "orga", stA), 2); !bytes.Equal(again, a) {
		t.Error("a second client on the same store commits differently")
	}
	if err := stA.Close(); err != nil {
		t.Fatal(err)
	}

	stA = openStore(t, dirA)
	defer stA.Close()
	if again := commitOf(t, f.client(t, "orga", stA), 3); !bytes.Equal(again, a) {
		t.Error("a client reopening its store commits differently: the salt was not reused")
	}
	if salt, err := stA.Secret(LineageSaltSecret); err != nil || !bytes.Equal(salt, saltA) {
		t.Errorf("the stored salt after reopening: %x, %v; want %x", salt, err, saltA)
	}
}

// TestLineageSaltMemory: without a store each client draws its own salt and keeps it: its
// commitments change only with its training records.
func TestLineageSaltMemory(t *testing.T) {
	f := newLineageFixture(t)
	c1, c2 := f.client(t, "orga", nil), f.client(t, "orgb", nil)
	a := commitOf(t, c1, 1)
	if bytes.Equal(a, commitOf(t, c2, 1)) {
		t.Fatal("two clients without a store give the same commitment to the same records")
	}
	if !bytes.Equal(a, commitOf(t, c1, 2)) {
		t.Error("a client's commitment to the same records changed between rounds")
	}
	if !lineage.Open(f.d, c1.commitment.salt, a) {
		t.Error("the commitment does not open with the client's salt")
	}
	// Other training records (a reload after an erasure): another commitment, same salt.
	salt := c1.commitment.salt
	c1.train = f.d.Subset([]int{0, 1, 2})
	b := commitOf(t, c1, 3)
	if bytes.Equal(a, b) || !bytes.Equal(salt, c1.commitment.salt) || !lineage.Open(c1.train, salt, b) {
		t.Error("the commitment did not follow the training records under the same salt")
	}
}

// TestLineageSaltUnusable: when the salt cannot be had (here the store holds a malformed one),
// commit does not panic and leaves the report without a commitment or a signature.
func TestLineageSaltUnusable(t *testing.T) {
	f := newLineageFixture(t)
	st := openStore(t, t.TempDir())
	defer st.Close()
	if err := st.PutSecret(LineageSaltSecret, []byte("short")); err != nil {
		t.Fatal(err)
	}
	c := f.client(t, "orga", st)
	e := &pb.EvalReport{Round: 1, DatasetCommitment: []byte("stale"), Signature: []byte("stale")}
	c.commit(e, "layout")
	if e.DatasetCommitment != nil || e.Signature != nil {
		t.Errorf("report with commitment %x and signature %x, want neither", e.DatasetCommitment, e.Signature)
	}
	if c.commitment.salt != nil {
		t.Error("the client kept an unusable salt")
	}
}
