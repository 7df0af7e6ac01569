package pki

import (
	"bytes"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/pem"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"time"
)

// Default validities.
const (
	DefaultCAValidity = 365 * 24 * time.Hour // of a CA made by Init with validity 0
	DefaultValidity   = 90 * 24 * time.Hour  // of a certificate issued with Validity 0
)

// backdate is how far before now certificates start, to absorb clock skew between machines.
const backdate = 5 * time.Minute

// The files of a CA directory.
const (
	CACertFile = "ca.crt"
	CAKeyFile  = "ca.key"
)

// A CA is the certificate authority of one federation: its self-signed certificate and its
// key. A CA is safe for concurrent use.
type CA struct {
	federation string
	cert       *x509.Certificate
	certPEM    []byte
	key        *PrivateKey // a pointer, so that printing a CA prints an address, not the key
}

// Init creates the CA of federation in dir, creating dir (mode 0700) if needed, and writes
// dir/ca.crt and dir/ca.key (mode 0600). The CA certificate is valid from now for validity
// (DefaultCAValidity if 0). federation must be a valid principal component (see [Principal]).
//
// Init never replaces a CA: if dir already holds ca.crt or ca.key, it returns an error that
// matches fs.ErrExist and leaves dir as it was.
func Init(dir, federation string, validity time.Duration) (*CA, error) {
	if err := checkComponent(federation); err != nil {
		return nil, fmt.Errorf("pki: invalid federation: federation %w", err)
	}
	switch {
	case validity == 0:
		validity = DefaultCAValidity
	case validity < 0:
		return nil, fmt.Errorf("pki: CA validity %v is negative", validity)
	}
	certFile, keyFile := filepath.Join(dir, CACertFile), filepath.Join(dir, CAKeyFile)
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Lstat(f); err == nil {
			return nil, &existError{"pki: a CA already exists in " + dir}
		}
	}
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return nil, fmt.Errorf("pki: %w", err)
	}

	key, err := generateKey()
	if err != nil {
		return nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, err
	}
	u, _ := url.Parse(caURI(federation))
	now := time.Now()
	tmpl := &x509.Certificate{
		SerialNumber:          serial,
		Subject:               pkix.Name{CommonName: "fedweave " + federation + " CA", Organization: []string{"fedweave"}},
		NotBefore:             now.Add(-backdate),
		NotAfter:              now.Add(validity),
		KeyUsage:              x509.KeyUsageCertSign | x509.KeyUsageCRLSign | x509.KeyUsageDigitalSignature,
		BasicConstraintsValid: true,
		IsCA:                  true,
		MaxPathLen:            0,
		MaxPathLenZero:        true,
		URIs:                  []*url.URL{u},
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, key.Public(), key.signer())
	if err != nil {
		return nil, fmt.Errorf("pki: create CA certificate: %w", err)
	}
	cert, err := x509.ParseCertificate(der)
	if err != nil {
		return nil, fmt.Errorf("pki: parse CA certificate: %w", err)
	}
	keyPEM, err := marshalKey(key)
	if err != nil {
		return nil, err
	}
	certPEM := pem.EncodeToMemory(&pem.Block{Type: certPEMType, Bytes: der})
	// The key first: a directory with ca.key and no ca.crt is refused by Init and LoadCA
	// alike, never mistaken for a usable CA.
	if err := writeNew(keyFile, keyPEM, 0o600); err != nil {
		return nil, err
	}
	if err := writeNew(certFile, certPEM, 0o644); err != nil {
		os.Remove(keyFile)
		return nil, err
	}
	return &CA{federation: federation, cert: cert, certPEM: certPEM, key: &key}, nil
}

// LoadCA loads the CA that [Init] wrote in dir. If dir holds no CA the error matches
// fs.ErrNotExist. The key file must not be accessible by group or others.
func LoadCA(dir string) (*CA, error) {
	certPEM, err := readFile(filepath.Join(dir, CACertFile))
	if err != nil {
		return nil, err
	}
	key, err := readKeyFile(filepath.Join(dir, CAKeyFile))
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", filepath.Join(dir, CACertFile), err)
	}
	cert := certs[0]
	if len(certs) != 1 || !cert.IsCA {
		return nil, fmt.Errorf("pki: %s does not hold one CA certificate", filepath.Join(dir, CACertFile))
	}
	if !key.Public().Equal(cert.PublicKey) {
		return nil, fmt.Errorf("pki: %s and %s do not match", CACertFile, CAKeyFile)
	}
	fed, err := caFederation(cert)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", filepath.Join(dir, CACertFile), err)
	}
	return &CA{federation: fed, cert: cert, certPEM: certPEM, key: &key}, nil
}

// caFederation reads the federation from the URI fedweave://<federation>/ca of a CA
// certificate.
func caFederation(cert *x509.Certificate) (string, error) {
	uris, err := fedweaveURIs(cert)
	if err != nil {
		return "", err
	}
	if len(uris) == 1 {
		if rest, ok := bytes.CutPrefix([]byte(uris[0]), []byte(scheme)); ok {
			if fed, ok := bytes.CutSuffix(rest, []byte("/ca")); ok && checkComponent(string(fed)) == nil {
				return string(fed), nil
			}
		}
	}
	return "", errors.New("not the CA certificate of a fedweave federation")
}

// Federation returns the name of the CA's federation.
func (ca *CA) Federation() string { return ca.federation }

// Certificate returns the CA certificate. The caller must not modify it.
func (ca *CA) Certificate() *x509.Certificate { return ca.cert }

// CertPEM returns the CA certificate in PEM, as in ca.crt. The caller owns the slice.
func (ca *CA) CertPEM() []byte { return bytes.Clone(ca.certPEM) }

// Pool returns a new pool that holds the CA certificate, for [ServerTLS] and [ClientTLS].
func (ca *CA) Pool() *x509.CertPool {
	pool := x509.NewCertPool()
	pool.AddCert(ca.cert)
	return pool
}

// IssueOptions tune [CA.Issue]. The zero value issues a certificate valid for DefaultValidity
// from now.
type IssueOptions struct {
	// Validity is how long the certificate is valid from NotBefore: DefaultValidity if 0. It
	// is cut short to end with the CA's own validity.
	Validity time.Duration

	// DNSNames and IPAddresses are the names a server certificate is valid for. A server
	// certificate issued without either is valid for localhost, 127.0.0.1 and ::1.
	DNSNames    []string
	IPAddresses []net.IP

	// NotBefore is when the certificate starts to be valid; zero means 5 minutes ago. Tests
	// set it in the past to issue certificates that have already expired.
	NotBefore time.Time
}

// Issue creates a key pair for p and a certificate for it signed by the CA, and returns both
// in PEM (the key as PKCS#8). p must be valid and of the CA's federation, else the error
// matches ErrWrongFederation. Server certificates can authenticate TLS servers and clients,
// the other roles' clients only. Issue fails once the CA has expired.
//
// The caller owns the returned slices; keyPEM is a secret.
func (ca *CA) Issue(p Principal, opt IssueOptions) (certPEM, keyPEM []byte, err error) {
	if err := p.Validate(); err != nil {
		return nil, nil, err
	}
	if p.Federation != ca.federation {
		return nil, nil, fmt.Errorf("pki: issue %s: this CA is for federation %s: %w", p, ca.federation, ErrWrongFederation)
	}
	now := time.Now()
	if !now.Before(ca.cert.NotAfter) {
		return nil, nil, fmt.Errorf("pki: the CA of federation %s expired on %s", ca.federation, ca.cert.NotAfter.UTC().Format(time.DateOnly))
	}
	switch {
	case opt.Validity == 0:
		opt.Validity = DefaultValidity
	case opt.Validity < 0:
		return nil, nil, fmt.Errorf("pki: validity %v is negative", opt.Validity)
	}
	notBefore := opt.NotBefore
	if notBefore.IsZero() {
		notBefore = now.Add(-backdate)
	}
	notAfter := notBefore.Add(opt.Validity)
	if notAfter.After(ca.cert.NotAfter) {
		notAfter = ca.cert.NotAfter
	}
	if !notAfter.After(notBefore) {
		return nil, nil, fmt.Errorf("pki: issue %s: the certificate would expire before it starts (the CA expires on %s)", p, ca.cert.NotAfter.UTC().Format(time.DateOnly))
	}

	dns, ips := opt.DNSNames, opt.IPAddresses
	ext := []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}
	if p.Role == RoleServer {
		ext = []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}
		if len(dns) == 0 && len(ips) == 0 {
			dns = []string{"localhost"}
			ips = []net.IP{net.IPv4(127, 0, 0, 1), net.IPv6loopback}
		}
	}

	key, err := generateKey()
	if err != nil {
		return nil, nil, err
	}
	serial, err := randomSerial()
	if err != nil {
		return nil, nil, err
	}
	u, err := url.Parse(p.URI())
	if err != nil {
		return nil, nil, fmt.Errorf("pki: %w", err)
	}
	tmpl := &x509.Certificate{
		SerialNumber: serial,
		Subject: pkix.Name{
			CommonName:         p.Name,
			Organization:       []string{p.Org},
			OrganizationalUnit: []string{string(p.Role)},
		},
		NotBefore:             notBefore,
		NotAfter:              notAfter,
		KeyUsage:              x509.KeyUsageDigitalSignature,
		ExtKeyUsage:           ext,
		BasicConstraintsValid: true,
		URIs:                  []*url.URL{u},
		DNSNames:              dns,
		IPAddresses:           ips,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key.signer())
	if err != nil {
		return nil, nil, fmt.Errorf("pki: issue %s: %w", p, err)
	}
	keyPEM, err = marshalKey(key)
	if err != nil {
		return nil, nil, err
	}
	return pem.EncodeToMemory(&pem.Block{Type: certPEMType, Bytes: der}), keyPEM, nil
}

// IssueFiles is [CA.Issue] that writes the certificate to prefix.crt (mode 0644) and the key
// to prefix.key (mode 0600). It never replaces a file: if either exists, the error matches
// fs.ErrExist and nothing is written.
func (ca *CA) IssueFiles(p Principal, opt IssueOptions, prefix string) error {
	certFile, keyFile := prefix+".crt", prefix+".key"
	for _, f := range []string{certFile, keyFile} {
		if _, err := os.Lstat(f); err == nil {
			return &existError{"pki: " + f + " already exists"}
		}
	}
	certPEM, keyPEM, err := ca.Issue(p, opt)
	if err != nil {
		return err
	}
	if err := writeNew(keyFile, keyPEM, 0o600); err != nil {
		return err
	}
	if err := writeNew(certFile, certPEM, 0o644); err != nil {
		os.Remove(keyFile)
		return err
	}
	return nil
}

// randomSerial returns a random serial number of 128 bits (RFC 5280 asks for positive, at
// most 20 octets, unpredictable).
func randomSerial() (*big.Int, error) {
	limit := new(big.Int).Lsh(big.NewInt(1), 128)
	for {
		n, err := rand.Int(rand.Reader, limit)
		if err != nil {
			return nil, fmt.Errorf("pki: serial number: %w", err)
		}
		if n.Sign() > 0 {
			return n, nil
		}
	}
}

// existError reports a file that this package refuses to replace. It matches fs.ErrExist
// without saying so in its message.
type existError struct{ msg string }

func (e *existError) Error() string        { return e.msg }
func (e *existError) Is(target error) bool { return target == fs.ErrExist }
