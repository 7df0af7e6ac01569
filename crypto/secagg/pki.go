package secagg

import (
	"crypto/ed25519"
	"crypto/x509"
	"errors"
	"fmt"

	"github.com/fedweave/fedweave/crypto/pki"
)

// FromPKI returns the Identity of a client that holds id: the leaf of its certificate chain,
// and its certificate key to sign with.
func FromPKI(id *pki.Identity) *Identity {
	return &Identity{CertDER: id.Cert.Certificate[0], Sign: id.Key.Sign}
}

// PKIVerifier returns a Verifier that accepts a certificate that chains to roots (the
// federation's CA, see pki.LoadPool), is valid now for client authentication, and names a
// principal of role client in federation. Its errors never quote the certificate.
func PKIVerifier(roots *x509.CertPool, federation string) Verifier {
	return func(der []byte) (ed25519.PublicKey, error) {
		cert, err := x509.ParseCertificate(der)
		if err != nil {
			return nil, errors.New("malformed certificate")
		}
		opts := x509.VerifyOptions{Roots: roots, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
		if _, err := cert.Verify(opts); err != nil {
			return nil, errors.New("certificate does not chain to the federation CA, or has expired")
		}
		p, err := pki.PrincipalFromCert(cert, federation)
		if err != nil {
			return nil, err
		}
		if p.Role != pki.RoleClient {
			return nil, fmt.Errorf("certificate of role %s: %w", p.Role, pki.ErrWrongRole)
		}
		pub, ok := cert.PublicKey.(ed25519.PublicKey)
		if !ok {
			return nil, errors.New("certificate key is not Ed25519")
		}
		return pub, nil
	}
}
