package pki

import (
	"crypto/ed25519"
	"crypto/tls"
	"crypto/x509"
	"encoding/asn1"
	"encoding/pem"
	"errors"
	"fmt"
	"strings"
)

const certPEMType = "CERTIFICATE"

// An Identity is what a process proves itself to be on every connection: its principal, its
// certificate chain and its key.
type Identity struct {
	// Principal is the principal named by the certificate.
	Principal Principal
	// Cert holds the certificate chain (leaf first, Leaf parsed) and the key, ready for
	// tls.Config.Certificates. Its PrivateKey is a crypto.Signer that prints redacted.
	Cert tls.Certificate
	// Key is the certificate's private key, for signing protocol messages (such as the
	// SecAgg+ key advertisement) with the identity that TLS authenticates.
	Key PrivateKey
}

// LoadIdentity loads a certificate (PEM, leaf first, optionally followed by its chain) and
// its key (PKCS#8 PEM), as written by [CA.IssueFiles]. The key file must not be accessible by
// group or others. The certificate must name exactly one valid principal, else the error
// matches ErrNoPrincipal, and match the key.
func LoadIdentity(certFile, keyFile string) (*Identity, error) {
	certPEM, err := readFile(certFile)
	if err != nil {
		return nil, err
	}
	key, err := readKeyFile(keyFile)
	if err != nil {
		return nil, err
	}
	id, err := newIdentity(certPEM, key)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", certFile, err)
	}
	return id, nil
}

// ParseIdentity is [LoadIdentity] for a certificate and a key already in memory, as returned
// by [CA.Issue]. It does not retain the slices.
func ParseIdentity(certPEM, keyPEM []byte) (*Identity, error) {
	key, err := parseKey(keyPEM)
	if err != nil {
		return nil, fmt.Errorf("pki: key: %w", err)
	}
	id, err := newIdentity(certPEM, key)
	if err != nil {
		return nil, fmt.Errorf("pki: certificate: %w", err)
	}
	return id, nil
}

func newIdentity(certPEM []byte, key PrivateKey) (*Identity, error) {
	certs, err := parseCerts(certPEM)
	if err != nil {
		return nil, err
	}
	leaf := certs[0]
	if pub, ok := leaf.PublicKey.(ed25519.PublicKey); !ok || !pub.Equal(key.Public()) {
		return nil, errors.New("certificate and key do not match")
	}
	p, err := principalOf(leaf)
	if err != nil {
		return nil, err
	}
	chain := make([][]byte, len(certs))
	for i, c := range certs {
		chain[i] = c.Raw
	}
	return &Identity{
		Principal: p,
		Cert:      tls.Certificate{Certificate: chain, PrivateKey: key.signer(), Leaf: leaf},
		Key:       key,
	}, nil
}

// LoadPool returns a pool of the CA certificates in caFile (PEM), normally a federation's
// ca.crt. It fails if caFile holds no certificate or one that is not a CA.
func LoadPool(caFile string) (*x509.CertPool, error) {
	data, err := readFile(caFile)
	if err != nil {
		return nil, err
	}
	certs, err := parseCerts(data)
	if err != nil {
		return nil, fmt.Errorf("pki: %s: %w", caFile, err)
	}
	pool := x509.NewCertPool()
	for _, c := range certs {
		if !c.IsCA {
			return nil, fmt.Errorf("pki: %s holds a certificate that is not a CA (give the federation's ca.crt)", caFile)
		}
		pool.AddCert(c)
	}
	return pool, nil
}

// parseCerts parses one or more PEM CERTIFICATE blocks, nothing else. Its errors never quote
// the input.
func parseCerts(data []byte) ([]*x509.Certificate, error) {
	var certs []*x509.Certificate
	for {
		var b *pem.Block
		b, data = pem.Decode(data)
		if b == nil {
			break
		}
		if b.Type != certPEMType {
			return nil, errors.New("a PEM block that is not a CERTIFICATE")
		}
		c, err := x509.ParseCertificate(b.Bytes)
		if err != nil {
			return nil, errors.New("malformed certificate")
		}
		certs = append(certs, c)
	}
	if len(certs) == 0 {
		return nil, errors.New("no PEM block of type CERTIFICATE")
	}
	return certs, nil
}

// PrincipalFromCert returns the principal that cert names, which must belong to federation.
// The certificate must carry exactly one URI SAN of scheme fedweave, and it must parse with
// [ParsePrincipal]; else the error matches ErrNoPrincipal. A principal of another federation
// gives an error that matches ErrWrongFederation. PrincipalFromCert does not verify the
// certificate: call it on a verified chain's leaf, as [PrincipalFromState] does.
//
// Its errors never quote the certificate's names, so they may reach the peer.
func PrincipalFromCert(cert *x509.Certificate, federation string) (Principal, error) {
	p, err := principalOf(cert)
	if err != nil {
		return Principal{}, fmt.Errorf("pki: %w", err)
	}
	if p.Federation != federation {
		return Principal{}, fmt.Errorf("pki: certificate names a %w", ErrWrongFederation)
	}
	return p, nil
}

// PrincipalFromState returns the principal of the verified peer of a TLS connection, which
// must belong to federation. A connection without a verified peer certificate gives an error
// that matches ErrNoPrincipal; otherwise it is [PrincipalFromCert] of the verified leaf.
func PrincipalFromState(cs tls.ConnectionState, federation string) (Principal, error) {
	if len(cs.VerifiedChains) == 0 || len(cs.VerifiedChains[0]) == 0 {
		return Principal{}, fmt.Errorf("pki: connection has no verified peer certificate: %w", ErrNoPrincipal)
	}
	return PrincipalFromCert(cs.VerifiedChains[0][0], federation)
}

// principalOf returns the principal that cert names, of whatever federation.
func principalOf(cert *x509.Certificate) (Principal, error) {
	uris, err := fedweaveURIs(cert)
	if err != nil {
		return Principal{}, fmt.Errorf("certificate has %w: %v", ErrNoPrincipal, err)
	}
	switch len(uris) {
	case 0:
		return Principal{}, fmt.Errorf("certificate names %w", ErrNoPrincipal)
	case 1:
	default:
		return Principal{}, fmt.Errorf("certificate has %d fedweave URIs, so %w", len(uris), ErrNoPrincipal)
	}
	p, err := ParsePrincipal(uris[0])
	if err != nil {
		return Principal{}, fmt.Errorf("certificate's fedweave URI is malformed: %w", ErrNoPrincipal)
	}
	return p, nil
}

var oidSubjectAltName = asn1.ObjectIdentifier{2, 5, 29, 17}

// fedweaveURIs returns the URI SANs of cert whose scheme is fedweave (in any case), exactly
// as encoded: crypto/x509 exposes URIs only parsed, and parsing forgives what a strict reading
// refuses (an upper-case scheme, an empty fragment).
func fedweaveURIs(cert *x509.Certificate) ([]string, error) {
	var uris []string
	for _, ext := range cert.Extensions {
		if !ext.Id.Equal(oidSubjectAltName) {
			continue
		}
		var seq asn1.RawValue
		rest, err := asn1.Unmarshal(ext.Value, &seq)
		if err != nil || len(rest) > 0 || seq.Class != asn1.ClassUniversal || seq.Tag != asn1.TagSequence || !seq.IsCompound {
			return nil, errors.New("malformed subject alternative names")
		}
		for b := seq.Bytes; len(b) > 0; {
			var v asn1.RawValue
			if b, err = asn1.Unmarshal(b, &v); err != nil {
				return nil, errors.New("malformed subject alternative names")
			}
			const uriTag = 6 // GeneralName uniformResourceIdentifier [6] IA5String
			if v.Class == asn1.ClassContextSpecific && v.Tag == uriTag && !v.IsCompound {
				if u := string(v.Bytes); len(u) >= len("fedweave:") && strings.EqualFold(u[:len("fedweave:")], "fedweave:") {
					uris = append(uris, u)
				}
			}
		}
	}
	return uris, nil
}

// ServerTLS returns the configuration of a server that speaks as id: TLS 1.3 only, a client
// certificate required and verified against caPool, and a client accepted only if its
// certificate names a principal of id's federation (any role; authorization comes later).
// Read the client's principal with [PrincipalFromState]. id and caPool must not be nil; the
// configuration keeps both.
func ServerTLS(id *Identity, caPool *x509.CertPool) *tls.Config {
	federation := id.Principal.Federation
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		ClientAuth:   tls.RequireAndVerifyClientCert,
		ClientCAs:    caPool,
		// VerifyConnection, unlike VerifyPeerCertificate, runs on resumed sessions too.
		VerifyConnection: func(cs tls.ConnectionState) error {
			_, err := PrincipalFromState(cs, federation)
			return err
		},
	}
}

// ClientTLS returns the configuration of a client that speaks as id: TLS 1.3 only, its
// certificate offered to the server, and the server accepted only if its certificate chains to
// caPool, is valid for serverName (a DNS name or IP address; "" takes the host of the dialed
// address, as tls.Dial and gRPC do) and names a principal of role server in id's federation;
// else the handshake fails with an error that matches ErrNoPrincipal, ErrWrongFederation or
// ErrWrongRole. id and caPool must not be nil; the configuration keeps both.
func ClientTLS(id *Identity, caPool *x509.CertPool, serverName string) *tls.Config {
	federation := id.Principal.Federation
	return &tls.Config{
		MinVersion:   tls.VersionTLS13,
		Certificates: []tls.Certificate{id.Cert},
		RootCAs:      caPool,
		ServerName:   serverName,
		VerifyConnection: func(cs tls.ConnectionState) error {
			p, err := PrincipalFromState(cs, federation)
			if err != nil {
				return err
			}
			if p.Role != RoleServer {
				return fmt.Errorf("pki: the server's certificate is of role %s: %w", p.Role, ErrWrongRole)
			}
			return nil
		},
	}
}
