// Package secretfile writes and reads the small files that hold fedweave's keys (a store's
// master key, an envelope root key): created exclusively with mode 0600 and synced, refused
// when group or others may read them, read with a size bound. Errors name the file, never its
// content. Callers add their own prefix and hints.
package secretfile

import (
	"errors"
	"fmt"
	"io"
	"io/fs"
	"os"
	"runtime"
)

// ErrExposed: the file is open to group or others.
var ErrExposed = errors.New("open to group or others")

// Create writes content to a new file at path with mode 0600 and syncs it. It refuses to
// overwrite an existing file (the error wraps fs.ErrExist) and removes a half-written one.
func Create(path string, content []byte) error {
	f, err := os.OpenFile(path, os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if errors.Is(err, fs.ErrExist) {
		return fmt.Errorf("%s already exists; refusing to overwrite it: %w", path, fs.ErrExist)
	}
	if err != nil {
		return err
	}
	_, err = f.Write(content)
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		os.Remove(path)
	}
	return err
}

// Read returns at most limit bytes of the regular file at path, refusing one that group or
// others may access (an error wrapping ErrExposed, with the chmod that fixes it). The caller
// should clear the bytes once used.
func Read(path string, limit int64) ([]byte, error) {
	f, err := os.Open(path)
	if err != nil {
		return nil, err
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, err
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("%s is not a regular file", path)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return nil, fmt.Errorf("%s has mode %04o, %w; fix with: chmod 600 %s", path, perm, ErrExposed, path)
	}
	return io.ReadAll(io.LimitReader(f, limit))
}
