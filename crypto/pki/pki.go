// Package pki is the certificate authority of a fedweave federation. It issues X.509
// certificates whose one URI SAN names a principal,
//
//	fedweave://<federation>/org/<org>/<role>/<name>
//
// (see [Principal]), and builds the mutual-TLS configurations that accept only such
// certificates from the same federation. Authorization decides on that principal and nothing
// else; the certificate's Subject is informational.
//
// Where to start: an administrator creates the CA once per federation with [Init] (later
// [LoadCA]) and issues a certificate and key to every server, client, admin and reader with
// [CA.IssueFiles] or [CA.Issue]. Each process then loads its own certificate with
// [LoadIdentity] and the CA certificate with [LoadPool], and passes both to [ServerTLS] or
// [ClientTLS]. The server names the verified peer of a connection with [PrincipalFromState].
// The fedweave command wraps the CA as "fedweave ca init" and "fedweave ca issue".
//
// Decisions:
//   - Keys are Ed25519, stored as PKCS#8 PEM ("PRIVATE KEY") in files of mode 0600; a key file
//     that group or others may access is refused on load, as ssh does.
//   - One self-signed CA per federation, without intermediates (MaxPathLen 0). Its
//     certificate carries the URI fedweave://<federation>/ca, from which [LoadCA] learns the
//     federation.
//   - Certificates live 90 days unless asked otherwise, start 5 minutes in the past to absorb
//     clock skew, and never outlive the CA. Server certificates may authenticate as clients too
//     (both extended key usages); the other roles are clients only. A server certificate
//     issued without DNS names or IP addresses is valid for localhost, 127.0.0.1 and ::1.
//   - TLS 1.3 only, client certificates required on every connection.
//
// What it does not do: revocation (there is no CRL or OCSP; short validity takes its place),
// renewal, intermediate CAs, and keys in hardware.
package pki

import (
	"errors"
	"fmt"
	"strings"
)

var (
	// ErrNoPrincipal means a certificate or connection names no valid principal: no
	// certificate, no verified chain, no fedweave URI, more than one, or one that does not parse.
	ErrNoPrincipal = errors.New("no fedweave principal")

	// ErrWrongFederation means a principal or certificate belongs to another federation than
	// the one expected.
	ErrWrongFederation = errors.New("principal of another federation")

	// ErrWrongRole means the peer's principal has a role the connection does not accept, as
	// when a client finds that the server it dialed holds a certificate of role client.
	ErrWrongRole = errors.New("principal has the wrong role")
)

// A Role is what a principal is in the federation. Authorization policies are written
// against roles.
type Role string

// The roles of a federation.
const (
	RoleServer Role = "server" // an aggregation server
	RoleClient Role = "client" // a partner organisation's training client
	RoleAdmin  Role = "admin"  // an administrator: policies, erasure, audit
	RoleReader Role = "reader" // a consumer of the trained model
)

// ParseRole returns the role named s, which must be spelled exactly as a Role constant.
func ParseRole(s string) (Role, error) {
	switch r := Role(s); r {
	case RoleServer, RoleClient, RoleAdmin, RoleReader:
		return r, nil
	}
	return "", fmt.Errorf("pki: unknown role %q: use server, client, admin or reader", s)
}

// A Principal is an identity in a federation: a named server, client, admin or reader of one
// organisation. Its canonical text form is its URI. A Principal is valid when every field is
// 1 to 64 characters of a-z, 0-9, '.', '_' and '-' starting with a letter or digit, and Role is
// one of the Role constants; see [Principal.Validate].
type Principal struct {
	Federation string
	Org        string
	Role       Role
	Name       string
}

const scheme = "fedweave://"

// URI returns fedweave://<federation>/org/<org>/<role>/<name>. It does not validate p.
func (p Principal) URI() string {
	return scheme + p.Federation + "/org/" + p.Org + "/" + string(p.Role) + "/" + p.Name
}

// String returns p.URI().
func (p Principal) String() string { return p.URI() }

// Validate reports whether p is valid, naming the first field that is not.
func (p Principal) Validate() error {
	if err := p.validate(); err != nil {
		return fmt.Errorf("pki: invalid principal: %w", err)
	}
	return nil
}

func (p Principal) validate() error {
	for _, f := range []struct{ name, v string }{
		{"federation", p.Federation}, {"org", p.Org}, {"name", p.Name},
	} {
		if err := checkComponent(f.v); err != nil {
			return fmt.Errorf("%s %w", f.name, err)
		}
	}
	if _, err := ParseRole(string(p.Role)); err != nil {
		return fmt.Errorf("unknown role %q: use server, client, admin or reader", p.Role)
	}
	return nil
}

// ParsePrincipal parses the URI form of a principal, fedweave://<federation>/org/<org>/<role>/<name>,
// strictly: no user, port, query, fragment, percent-escape, upper case or extra path segment.
// Whatever it accepts, [Principal.URI] gives back byte for byte.
func ParsePrincipal(s string) (Principal, error) {
	rest, ok := strings.CutPrefix(s, scheme)
	if !ok {
		return Principal{}, fmt.Errorf("pki: invalid principal %q: want fedweave://FEDERATION/org/ORG/ROLE/NAME", s)
	}
	parts := strings.Split(rest, "/")
	if len(parts) != 5 || parts[1] != "org" {
		return Principal{}, fmt.Errorf("pki: invalid principal %q: want fedweave://FEDERATION/org/ORG/ROLE/NAME", s)
	}
	p := Principal{Federation: parts[0], Org: parts[2], Role: Role(parts[3]), Name: parts[4]}
	if err := p.validate(); err != nil {
		return Principal{}, fmt.Errorf("pki: invalid principal %q: %w", s, err)
	}
	return p, nil
}

// maxComponent is the longest federation, org or name.
const maxComponent = 64

// checkComponent returns an error that completes "federation ...", "org ..." or "name ...".
func checkComponent(s string) error {
	switch {
	case s == "":
		return errors.New("is empty")
	case len(s) > maxComponent:
		return fmt.Errorf("is longer than %d characters", maxComponent)
	case !isAlnum(s[0]):
		return fmt.Errorf("%q must start with a lower-case letter or a digit", s)
	}
	for i := 0; i < len(s); i++ {
		if c := s[i]; !isAlnum(c) && c != '.' && c != '_' && c != '-' {
			return fmt.Errorf("%q may hold only a-z, 0-9, '.', '_' and '-'", s)
		}
	}
	return nil
}

func isAlnum(c byte) bool { return 'a' <= c && c <= 'z' || '0' <= c && c <= '9' }

// caURI is the URI SAN of the CA certificate of a federation.
func caURI(federation string) string { return scheme + federation + "/ca" }
