package envelope

import (
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"path/filepath"
	"runtime"
	"strings"

	"github.com/fedweave/fedweave/internal/secretfile"
)

// A RootKey wraps and unwraps the keyring, the top of the hierarchy. [FileRootKey] keeps it in
// a key file; a KMS plugs in by implementing the two methods with its own encrypt and decrypt
// calls (the key then never leaves the KMS).
//
// Wrap returns a new slice that authenticates plaintext and ad; Unwrap returns the plaintext
// for the same ad, or an error that wraps [ErrDecrypt] when wrapped does not authenticate
// under this root key. Neither keeps its arguments.
type RootKey interface {
	Wrap(plaintext, ad []byte) ([]byte, error)
	Unwrap(wrapped, ad []byte) ([]byte, error)
}

// FileRootKey is a root key held in a key file (see [NewRootKeyFile]). It wraps with AES-256-GCM.
type FileRootKey struct{ k Key }

var _ RootKey = (*FileRootKey)(nil)

var rootDomain = []byte("fedweave/envelope root v1\x00")

// Wrap seals plaintext under the root key, with ad bound.
func (r *FileRootKey) Wrap(plaintext, ad []byte) ([]byte, error) {
	return Seal(r.k, plaintext, append(append([]byte{}, rootDomain...), ad...)), nil
}

// Unwrap opens what Wrap sealed.
func (r *FileRootKey) Unwrap(wrapped, ad []byte) ([]byte, error) {
	return Open(r.k, wrapped, append(append([]byte{}, rootDomain...), ad...))
}

// rootKeyPrefix types the text of a root key file.
const rootKeyPrefix = "fedweave-root-key-v1:"

// NewRootKeyFile creates a root key file at path: a fresh random key, written as
// "fedweave-root-key-v1:" and 64 hex digits, mode 0600. It refuses to overwrite an existing
// file (the error wraps [fs.ErrExist]).
func NewRootKeyFile(path string) error {
	k := NewKey()
	text := []byte(rootKeyPrefix + hex.EncodeToString(k.k[:]) + "\n")
	defer clear(text)
	if err := secretfile.Create(path, text); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("envelope: root key file %w", err)
		}
		return fmt.Errorf("envelope: new root key file: %w", err)
	}
	return syncDir(path)
}

// LoadRootKeyFile reads a root key file made by [NewRootKeyFile]. It refuses a file that group
// or others may read or write. Its errors name the file, never its content.
func LoadRootKeyFile(path string) (*FileRootKey, error) {
	buf, err := secretfile.Read(path, 256)
	defer clear(buf)
	if err != nil {
		return nil, fmt.Errorf("envelope: root key file: %w", err)
	}
	text, ok := strings.CutPrefix(strings.TrimSpace(string(buf)), rootKeyPrefix)
	if !ok || len(text) != hex.EncodedLen(KeySize) {
		return nil, fmt.Errorf("%w: %s is not a fedweave root key file", ErrMalformed, path)
	}
	r := &FileRootKey{k: Key{set: true}}
	if _, err := hex.Decode(r.k.k[:], []byte(text)); err != nil {
		// hex errors quote the offending byte; keep it out of the message.
		return nil, fmt.Errorf("%w: %s is not a fedweave root key file", ErrMalformed, path)
	}
	return r, nil
}

// syncDir fsyncs the directory that holds path, so that a file created or renamed in it stays
// after a crash.
func syncDir(path string) error {
	d, err := os.Open(filepath.Dir(path))
	if err != nil {
		return err
	}
	defer d.Close()
	if err := d.Sync(); err != nil && runtime.GOOS != "windows" {
		return fmt.Errorf("envelope: sync directory: %w", err)
	}
	return nil
}
