package store

import (
	"crypto/rand"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
	"strings"
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

	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("store: key file %s already exists; refusing to overwrite it: %w", path, fs.ErrExist)
	}
	if err != nil {
		return fmt.Errorf("store: new key file: %w", err)
	}
	_, err = f.Write(buf)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
		return fmt.Errorf("store: new key file: %w", err)
	}
	return nil
}

// readKeyFile reads and checks a master key file. Its errors name the file but never show its
// contents.
func readKeyFile(path string) ([]byte, error) {
	f, err := os.Open(path)
	if errors.Is(err, fs.ErrNotExist) {
		return nil, fmt.Errorf("store: no master key file at %s (create one with store.NewKeyFile): %w", path, fs.ErrNotExist)
	}
	if err != nil {
		return nil, fmt.Errorf("store: master key file: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("store: master key file: %w", err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("store: master key file %s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("store: master key file %s has mode %04o, open to group or others; fix with: chmod 600 %s", path, perm, path)
	}
	// A valid file is 64 hex digits and maybe a newline; read a little more to detect junk.
	buf, err := io.ReadAll(io.LimitReader(f, 256))
	defer clear(buf)
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
