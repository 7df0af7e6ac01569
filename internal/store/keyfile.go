package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io/fs"
	"strings"

	"github.com/fedweave/fedweave/internal/secretfile"
)

// keySize is the size of the master key: AES-256.
const keySize = 32

// NewKeyFile creates a new master key file at path: 32 bytes from crypto/rand, written as 64
// hex digits and a newline, with mode 0600. It refuses to overwrite an existing file (the error
// wraps [fs.ErrExist]): losing a master key loses every store encrypted under it. Keep the file
// apart from the stores' directories and back it up; [Open] reads it.
func NewKeyFile(path string) error {
	var key [keySize]byte
	if _, err := rand.Read(key[:]); err != nil {
		return fmt.Errorf("store: new key file: %w", err)
	}
	buf := make([]byte, hex.EncodedLen(keySize)+1)
	hex.Encode(buf, key[:])
	buf[len(buf)-1] = '\n'
	defer clear(buf)
	defer clear(key[:])

	if err := secretfile.Create(path, buf); err != nil {
		if errors.Is(err, fs.ErrExist) {
			return fmt.Errorf("store: key file %w", err)
		}
		return fmt.Errorf("store: new key file: %w", err)
	}
	return nil
}

// readKeyFile reads and checks a master key file. Its errors name the file but never show its
// contents.
func readKeyFile(path string) ([]byte, error) {
	// A valid file is 64 hex digits and maybe a newline; read a little more to detect junk.
	buf, err := secretfile.Read(path, 256)
	defer clear(buf)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store: no master key file at %s (create one with store.NewKeyFile): %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("store: master key file: %w", err)
	}
	text := strings.TrimSpace(string(buf))
	key := make([]byte, keySize)
	if len(text) != hex.EncodedLen(keySize) {
		return nil, fmt.Errorf("store: master key file %s: want %d hex digits, found %d bytes", path, hex.EncodedLen(keySize), len(text))
	}
	if _, err := hex.Decode(key, []byte(text)); err != nil {
		// hex errors quote the offending byte; keep it out of the message.
		return nil, fmt.Errorf("store: master key file %s: not hex", path)
	}
	return key, nil
}
