package envelope_test

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fedweave/fedweave/crypto/envelope"
)

// A store seals each subject's records under the subject's data key, then erases a subject
// by shredding its key: the wrapped key it keeps (and every copy of it) opens no more.
func Example() {
	dir, _ := os.MkdirTemp("", "envelope-example")
	defer os.RemoveAll(dir)
	rootFile, ringFile := filepath.Join(dir, "root.key"), filepath.Join(dir, "keyring")
	if err := envelope.NewRootKeyFile(rootFile); err != nil {
		panic(err)
	}
	root, err := envelope.LoadRootKeyFile(rootFile)
	if err != nil {
		panic(err)
	}
	ring, err := envelope.CreateKeyring(ringFile, root)
	if err != nil {
		panic(err)
	}

	name := []byte("subject/17")
	dek, wrapped, err := ring.NewDataKey(name) // keep wrapped beside the data
	if err != nil {
		panic(err)
	}
	sealed := envelope.Seal(dek, []byte("blood pressure 120/80"), []byte("r/17/1"))

	// Later: unwrap the key and open the record.
	dek, _ = ring.Unwrap(wrapped, name)
	plain, _ := envelope.Open(dek, sealed, []byte("r/17/1"))
	fmt.Printf("%s (key %v)\n", plain, dek)

	// Erase subject 17.
	if err := ring.Shred(envelope.WrappedKey{Wrapped: wrapped, Name: name}); err != nil {
		panic(err)
	}
	_, err = ring.Unwrap(wrapped, name)
	fmt.Println(errors.Is(err, envelope.ErrShredded))
	// Output:
	// blood pressure 120/80 (key envelope.Key(redacted))
	// true
}
