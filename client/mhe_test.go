package client

import (
	"path/filepath"
	"testing"

	"github.com/fedweave/fedweave/crypto/mhe"
)

// TestMHEKeysPersist: a client with a store keeps its share of an mhe key set across a
// restart (a new Client over the same store), sealed, and survives a keyring rotation.
func TestMHEKeysPersist(t *testing.T) {
	_, kms, err := mhe.RunSetup(mhe.SetupConfig{Task: "triage", Members: 3, Threshold: 2, MaxWeight: 100})
	if err != nil {
		t.Fatal(err)
	}
	dir, keys := filepath.Join(t.TempDir(), "store"), filepath.Join(t.TempDir(), "keys")
	st, err := OpenStore(StoreOptions{Dir: dir, KeyDir: keys, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	first := mheKeys{store: st}
	if err := first.keep(kms[1]); err != nil {
		t.Fatal(err)
	}
	if err := st.Rotate(); err != nil {
		t.Fatal(err)
	}
	st.Close()

	st, err = OpenStore(StoreOptions{Dir: dir, KeyDir: keys, NoSync: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	restarted := mheKeys{store: st}
	got := restarted.get(kms[1].Public().ID())
	if got == nil || !got.Equal(kms[1]) {
		t.Fatal("the key material did not survive the restart")
	}
	var other [32]byte
	if restarted.get(other) != nil {
		t.Fatal("a key set the client never joined was found")
	}
	if (&mheKeys{}).get(kms[1].Public().ID()) != nil {
		t.Fatal("a client without a store found key material")
	}
}
