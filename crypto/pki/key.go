package pki

import (
	"crypto"
	"crypto/ed25519"
	"crypto/subtle"
	"crypto/x509"
	"encoding/pem"
	"errors"
	"fmt"
	"io"
	"os"
	"runtime"
)

// A PrivateKey is the Ed25519 private key of a certificate. It is opaque: it prints as
// "pki.PrivateKey(redacted)" with every fmt verb, and leaves its files only as PKCS#8 PEM
// written by this package. The zero PrivateKey holds no key; using it panics.
type PrivateKey struct {
	k ed25519.PrivateKey
}

func generateKey() (PrivateKey, error) {
	_, k, err := ed25519.GenerateKey(nil)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("pki: generate key: %w", err)
	}
	return PrivateKey{k: k}, nil
}

// Public returns the public half of k.
func (k PrivateKey) Public() ed25519.PublicKey {
	return k.k.Public().(ed25519.PublicKey)
}

// Sign returns the Ed25519 signature of msg (pure Ed25519, not prehashed).
func (k PrivateKey) Sign(msg []byte) []byte {
	return ed25519.Sign(k.k, msg)
}

// Equal reports whether k and x hold the same key, in constant time.
func (k PrivateKey) Equal(x PrivateKey) bool {
	return len(k.k) == len(x.k) && subtle.ConstantTimeCompare(k.k, x.k) == 1
}

// Format prints "pki.PrivateKey(redacted)" whatever the verb, so that no log line holds a key.
func (k PrivateKey) Format(f fmt.State, verb rune) {
	io.WriteString(f, "pki.PrivateKey(redacted)")
}

// signer returns k as the crypto.Signer that crypto/x509 and crypto/tls want.
func (k PrivateKey) signer() crypto.Signer { return keySigner{k} }

// keySigner adapts a PrivateKey to crypto.Signer. It is a distinct type so that a
// tls.Certificate that holds it prints redacted too.
type keySigner struct{ k PrivateKey }

func (s keySigner) Public() crypto.PublicKey { return s.k.Public() }

func (s keySigner) Sign(rand io.Reader, msg []byte, opts crypto.SignerOpts) ([]byte, error) {
	return s.k.k.Sign(rand, msg, opts)
}

func (s keySigner) Format(f fmt.State, verb rune) { s.k.Format(f, verb) }

const keyPEMType = "PRIVATE KEY"

// marshalKey returns k as a PKCS#8 PEM block.
func marshalKey(k PrivateKey) ([]byte, error) {
	der, err := x509.MarshalPKCS8PrivateKey(k.k)
	if err != nil {
		return nil, fmt.Errorf("pki: encode key: %w", err)
	}
	return pem.EncodeToMemory(&pem.Block{Type: keyPEMType, Bytes: der}), nil
}

// parseKey parses one PKCS#8 PEM block holding an Ed25519 key. Its errors never quote the
// input.
func parseKey(data []byte) (PrivateKey, error) {
	b, rest := pem.Decode(data)
	if b == nil || b.Type != keyPEMType {
		return PrivateKey{}, errors.New("no PEM block of type PRIVATE KEY")
	}
	if next, _ := pem.Decode(rest); next != nil {
		return PrivateKey{}, errors.New("more than one PEM block")
	}
	k, err := x509.ParsePKCS8PrivateKey(b.Bytes)
	if err != nil {
		return PrivateKey{}, errors.New("malformed PKCS#8 private key")
	}
	ek, ok := k.(ed25519.PrivateKey)
	if !ok {
		return PrivateKey{}, fmt.Errorf("a %T, want an Ed25519 key", k)
	}
	return PrivateKey{k: ek}, nil
}

// maxFile bounds what this package reads from a certificate or key file.
const maxFile = 1 << 20

// readKeyFile reads a key file, refusing one that group or others may access.
func readKeyFile(name string) (PrivateKey, error) {
	f, err := os.Open(name)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("pki: %w", err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return PrivateKey{}, fmt.Errorf("pki: %w", err)
	}
	if perm := fi.Mode().Perm(); perm&0o077 != 0 && runtime.GOOS != "windows" {
		return PrivateKey{}, fmt.Errorf("pki: key file %s is accessible by group or others (mode %04o): run chmod 600 %s", name, perm, name)
	}
	data, err := io.ReadAll(io.LimitReader(f, maxFile))
	if err != nil {
		return PrivateKey{}, fmt.Errorf("pki: %w", err)
	}
	k, err := parseKey(data)
	if err != nil {
		return PrivateKey{}, fmt.Errorf("pki: key file %s: %w", name, err)
	}
	return k, nil
}

// readFile reads a certificate file.
func readFile(name string) ([]byte, error) {
	f, err := os.Open(name)
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	defer f.Close()
	data, err := io.ReadAll(io.LimitReader(f, maxFile))
	if err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}
	return data, nil
}

// writeNew creates name with mode perm and writes data to it. It never replaces a file: if
// name exists, the error matches fs.ErrExist.
func writeNew(name string, data []byte, perm os.FileMode) error {
	f, err := os.OpenFile(name, os.O_WRONLY|os.O_CREATE|os.O_EXCL, perm)
	if err != nil {
		return fmt.Errorf("pki: %w", err)
	}
	_, err = f.Write(data)
	if err1 := f.Sync(); err == nil {
		err = err1
	}
	if err1 := f.Close(); err == nil {
		err = err1
	}
	if err != nil {
		os.Remove(name)
		return fmt.Errorf("pki: %w", err)
	}
	return nil
}
