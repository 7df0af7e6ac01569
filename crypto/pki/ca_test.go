package pki

import (
	"bytes"
	"crypto/ed25519"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/asn1"
	"errors"
	"fmt"
	"io/fs"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

// newCA creates a CA of federation in a fresh directory.
func newCA(t *testing.T, federation string) *CA {
	t.Helper()
	ca, err := Init(filepath.Join(t.TempDir(), "ca"), federation, 0)
	if err != nil {
		t.Fatalf("Init: %v", err)
	}
	return ca
}

// issue issues a certificate for p and returns it as an Identity.
func issue(t *testing.T, ca *CA, p Principal, opt IssueOptions) *Identity {
	t.Helper()
	certPEM, keyPEM, err := ca.Issue(p, opt)
	if err != nil {
		t.Fatalf("Issue(%v): %v", p, err)
	}
	id, err := ParseIdentity(certPEM, keyPEM)
	if err != nil {
		t.Fatalf("ParseIdentity: %v", err)
	}
	return id
}

func principal(fed, org string, role Role, name string) Principal {
	return Principal{Federation: fed, Org: org, Role: role, Name: name}
}

func TestInitTwiceRefused(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	if _, err := Init(dir, "acme", time.Hour); err != nil {
		t.Fatal(err)
	}
	before, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	_, err := Init(dir, "acme", time.Hour)
	if !errors.Is(err, fs.ErrExist) {
		t.Fatalf("second Init = %v, want an error matching fs.ErrExist", err)
	}
	if !strings.Contains(err.Error(), "a CA already exists in "+dir) {
		t.Errorf("error %q does not say a CA exists in %s", err, dir)
	}
	after, _ := os.ReadFile(filepath.Join(dir, CAKeyFile))
	if !bytes.Equal(before, after) {
		t.Error("second Init changed ca.key")
	}

	// A directory with only a key is refused too.
	dir2 := t.TempDir()
	os.WriteFile(filepath.Join(dir2, CAKeyFile), nil, 0o600)
	if _, err := Init(dir2, "acme", 0); !errors.Is(err, fs.ErrExist) {
		t.Errorf("Init over a lone ca.key = %v, want fs.ErrExist", err)
	}
}

func TestInitBadArguments(t *testing.T) {
	for _, fed := range []string{"", "Acme", "a/b", "-x"} {
		if _, err := Init(t.TempDir(), fed, 0); err == nil || !strings.Contains(err.Error(), "invalid federation") {
			t.Errorf("Init(federation %q) = %v, want an invalid federation error", fed, err)
		}
	}
	if _, err := Init(t.TempDir(), "acme", -time.Hour); err == nil {
		t.Error("Init with a negative validity succeeded")
	}
}

func TestCACertificate(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "ca")
	ca, err := Init(dir, "acme.health", 0)
	if err != nil {
		t.Fatal(err)
	}
	c := ca.Certificate()
	if !c.IsCA || c.MaxPathLen != 0 || !c.MaxPathLenZero || c.KeyUsage&x509.KeyUsageCertSign == 0 {
		t.Errorf("CA certificate: IsCA %v MaxPathLen %d MaxPathLenZero %v KeyUsage %b", c.IsCA, c.MaxPathLen, c.MaxPathLenZero, c.KeyUsage)
	}
	if c.Subject.CommonName != "fedweave acme.health CA" {
		t.Errorf("CN %q", c.Subject.CommonName)
	}
	if len(c.URIs) != 1 || c.URIs[0].String() != "fedweave://acme.health/ca" {
		t.Errorf("URIs %v", c.URIs)
	}
	if d := c.NotAfter.Sub(c.NotBefore) - DefaultCAValidity - backdate; d < -time.Minute || d > time.Minute {
		t.Errorf("CA valid from %v to %v", c.NotBefore, c.NotAfter)
	}
	for name, want := range map[string]fs.FileMode{CACertFile: 0o644, CAKeyFile: 0o600} {
		fi, err := os.Stat(filepath.Join(dir, name))
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&^want != 0 {
			t.Errorf("%s has mode %v, want at most %v", name, fi.Mode().Perm(), want)
		}
	}
	fi, _ := os.Stat(dir)
	if fi.Mode().Perm() != 0o700 {
		t.Errorf("CA directory has mode %v, want 0700", fi.Mode().Perm())
	}

	loaded, err := LoadCA(dir)
	if err != nil {
		t.Fatalf("LoadCA: %v", err)
	}
	if loaded.Federation() != "acme.health" || !loaded.Certificate().Equal(c) || !loaded.key.Equal(*ca.key) {
		t.Error("LoadCA does not give back the CA that Init made")
	}
	if !bytes.Equal(loaded.CertPEM(), ca.CertPEM()) {
		t.Error("CertPEM differs after LoadCA")
	}
	// The loaded CA issues certificates that chain to the original.
	id := issue(t, loaded, principal("acme.health", "o", RoleClient, "n"), IssueOptions{})
	if _, err := id.Cert.Leaf.Verify(x509.VerifyOptions{Roots: ca.Pool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}); err != nil {
		t.Errorf("issued certificate does not verify: %v", err)
	}
}

func TestLoadCAMissing(t *testing.T) {
	_, err := LoadCA(t.TempDir())
	if !errors.Is(err, fs.ErrNotExist) {
		t.Errorf("LoadCA of an empty directory = %v, want fs.ErrNotExist", err)
	}
}

func TestIssue(t *testing.T) {
	ca := newCA(t, "acme")
	loopback := []string{"127.0.0.1", "::1"}
	tests := []struct {
		name     string
		p        Principal
		opt      IssueOptions
		ext      []x509.ExtKeyUsage
		dns, ips []string
	}{
		{"client", principal("acme", "hospital-a", RoleClient, "node1"), IssueOptions{},
			[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil},
		{"admin", principal("acme", "acme", RoleAdmin, "alice"), IssueOptions{},
			[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil},
		{"reader", principal("acme", "insurer", RoleReader, "svc"), IssueOptions{},
			[]x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}, nil, nil},
		{"server with loopback defaults", principal("acme", "acme", RoleServer, "agg"), IssueOptions{},
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, []string{"localhost"}, loopback},
		{"server with names", principal("acme", "acme", RoleServer, "agg"),
			IssueOptions{DNSNames: []string{"agg.acme.example"}, IPAddresses: []net.IP{net.ParseIP("10.0.0.7")}},
			[]x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth}, []string{"agg.acme.example"}, []string{"10.0.0.7"}},
	}
	serials := map[string]bool{}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			id := issue(t, ca, tt.p, tt.opt)
			c := id.Cert.Leaf
			if id.Principal != tt.p {
				t.Errorf("principal %v, want %v", id.Principal, tt.p)
			}
			if len(c.URIs) != 1 || c.URIs[0].String() != tt.p.URI() {
				t.Errorf("URIs %v, want [%s]", c.URIs, tt.p.URI())
			}
			if !slices.Equal(c.ExtKeyUsage, tt.ext) {
				t.Errorf("ExtKeyUsage %v, want %v", c.ExtKeyUsage, tt.ext)
			}
			var ips []string
			for _, ip := range c.IPAddresses {
				ips = append(ips, ip.String())
			}
			if !slices.Equal(c.DNSNames, tt.dns) || !slices.Equal(ips, tt.ips) {
				t.Errorf("DNS %v IP %v, want %v %v", c.DNSNames, ips, tt.dns, tt.ips)
			}
			if c.IsCA || c.Subject.CommonName != tt.p.Name {
				t.Errorf("IsCA %v CN %q", c.IsCA, c.Subject.CommonName)
			}
			if c.SerialNumber.Sign() <= 0 || c.SerialNumber.BitLen() > 128 || serials[c.SerialNumber.String()] {
				t.Errorf("serial number %v: not positive, over 128 bits, or repeated", c.SerialNumber)
			}
			serials[c.SerialNumber.String()] = true
			if d := c.NotAfter.Sub(c.NotBefore) - DefaultValidity; d < -time.Minute || d > time.Minute {
				t.Errorf("valid from %v to %v, want %v", c.NotBefore, c.NotAfter, DefaultValidity)
			}
			if time.Now().Before(c.NotBefore) {
				t.Errorf("not valid yet: NotBefore %v", c.NotBefore)
			}
			if _, ok := c.PublicKey.(ed25519.PublicKey); !ok {
				t.Errorf("public key is a %T, want Ed25519", c.PublicKey)
			}
		})
	}
}

func TestIssueRefused(t *testing.T) {
	ca := newCA(t, "acme")
	tests := []struct {
		name string
		p    Principal
		opt  IssueOptions
		is   error
		why  string
	}{
		{name: "other federation", p: principal("other", "o", RoleClient, "n"), is: ErrWrongFederation, why: "this CA is for federation acme"},
		{name: "invalid principal", p: principal("acme", "O", RoleClient, "n"), why: "invalid principal"},
		{name: "unknown role", p: principal("acme", "o", "root", "n"), why: "unknown role"},
		{name: "negative validity", p: principal("acme", "o", RoleClient, "n"), opt: IssueOptions{Validity: -time.Hour}, why: "negative"},
		{name: "starts after the CA ends", p: principal("acme", "o", RoleClient, "n"), opt: IssueOptions{NotBefore: time.Now().Add(2 * DefaultCAValidity)}, why: "expire before it starts"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, _, err := ca.Issue(tt.p, tt.opt)
			if err == nil || !strings.Contains(err.Error(), tt.why) || tt.is != nil && !errors.Is(err, tt.is) {
				t.Errorf("Issue = %v, want an error mentioning %q (matching %v)", err, tt.why, tt.is)
			}
		})
	}
}

func TestIssueClampedToCA(t *testing.T) {
	ca, err := Init(t.TempDir(), "acme", 48*time.Hour)
	if err != nil {
		t.Fatal(err)
	}
	id := issue(t, ca, principal("acme", "o", RoleClient, "n"), IssueOptions{Validity: 1000 * time.Hour})
	if !id.Cert.Leaf.NotAfter.Equal(ca.Certificate().NotAfter) {
		t.Errorf("certificate ends %v, CA ends %v", id.Cert.Leaf.NotAfter, ca.Certificate().NotAfter)
	}
}

func TestIssueFiles(t *testing.T) {
	ca := newCA(t, "acme")
	dir := t.TempDir()
	prefix := filepath.Join(dir, "node1")
	p := principal("acme", "hospital-a", RoleClient, "node1")
	if err := ca.IssueFiles(p, IssueOptions{}, prefix); err != nil {
		t.Fatal(err)
	}
	for name, want := range map[string]fs.FileMode{prefix + ".crt": 0o644, prefix + ".key": 0o600} {
		fi, err := os.Stat(name)
		if err != nil {
			t.Fatal(err)
		}
		if fi.Mode().Perm()&^want != 0 {
			t.Errorf("%s has mode %v, want at most %v", name, fi.Mode().Perm(), want)
		}
	}
	id, err := LoadIdentity(prefix+".crt", prefix+".key")
	if err != nil {
		t.Fatalf("LoadIdentity: %v", err)
	}
	if id.Principal != p {
		t.Errorf("principal %v, want %v", id.Principal, p)
	}

	before, _ := os.ReadFile(prefix + ".key")
	if err := ca.IssueFiles(p, IssueOptions{}, prefix); !errors.Is(err, fs.ErrExist) {
		t.Errorf("second IssueFiles = %v, want fs.ErrExist", err)
	}
	if after, _ := os.ReadFile(prefix + ".key"); !bytes.Equal(before, after) {
		t.Error("second IssueFiles replaced the key")
	}
	if err := ca.IssueFiles(principal("other", "o", RoleClient, "n"), IssueOptions{}, filepath.Join(dir, "x")); !errors.Is(err, ErrWrongFederation) {
		t.Errorf("IssueFiles for another federation = %v", err)
	}
	if _, err := os.Stat(filepath.Join(dir, "x.key")); !errors.Is(err, fs.ErrNotExist) {
		t.Error("a refused IssueFiles left a key behind")
	}
}

func TestKeyFileModeRefused(t *testing.T) {
	ca := newCA(t, "acme")
	prefix := filepath.Join(t.TempDir(), "node1")
	if err := ca.IssueFiles(principal("acme", "o", RoleClient, "node1"), IssueOptions{}, prefix); err != nil {
		t.Fatal(err)
	}
	for _, mode := range []fs.FileMode{0o644, 0o640, 0o604, 0o660} {
		if err := os.Chmod(prefix+".key", mode); err != nil {
			t.Fatal(err)
		}
		_, err := LoadIdentity(prefix+".crt", prefix+".key")
		want := fmt.Sprintf("key file %s is accessible by group or others (mode %04o): run chmod 600 %s", prefix+".key", mode, prefix+".key")
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("mode %04o: LoadIdentity = %v, want %q", mode, err, want)
		}
	}
	os.Chmod(prefix+".key", 0o400)
	if _, err := LoadIdentity(prefix+".crt", prefix+".key"); err != nil {
		t.Errorf("mode 0400: %v", err)
	}

	dir := t.TempDir()
	if _, err := Init(dir, "acme", 0); err != nil {
		t.Fatal(err)
	}
	os.Chmod(filepath.Join(dir, CAKeyFile), 0o644)
	if _, err := LoadCA(dir); err == nil || !strings.Contains(err.Error(), "chmod 600 "+filepath.Join(dir, CAKeyFile)) {
		t.Errorf("LoadCA with ca.key mode 0644 = %v", err)
	}
}

func TestParseIdentityRefused(t *testing.T) {
	ca := newCA(t, "acme")
	certPEM, keyPEM, err := ca.Issue(principal("acme", "o", RoleClient, "a"), IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	_, otherKey, err := ca.Issue(principal("acme", "o", RoleClient, "b"), IssueOptions{})
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name          string
		certPEM, keyP []byte
		why           string
	}{
		{"mismatched key", certPEM, otherKey, "do not match"},
		{"key as certificate", keyPEM, keyPEM, "not a CERTIFICATE"},
		{"certificate as key", certPEM, certPEM, "no PEM block of type PRIVATE KEY"},
		{"empty certificate", nil, keyPEM, "no PEM block of type CERTIFICATE"},
		{"CA certificate", ca.CertPEM(), keyPEM, "do not match"},
		{"two keys", certPEM, append(bytes.Clone(keyPEM), keyPEM...), "more than one PEM block"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			_, err := ParseIdentity(tt.certPEM, tt.keyP)
			if err == nil || !strings.Contains(err.Error(), tt.why) {
				t.Fatalf("ParseIdentity = %v, want an error mentioning %q", err, tt.why)
			}
			if strings.Contains(err.Error(), "BEGIN") || strings.Contains(err.Error(), string(keyPEM[30:50])) {
				t.Errorf("error quotes the input: %v", err)
			}
		})
	}
}

func TestPrivateKeyOpaque(t *testing.T) {
	ca := newCA(t, "acme")
	id := issue(t, ca, principal("acme", "o", RoleClient, "n"), IssueOptions{})
	secret := []byte(id.Key.k)
	forms := []string{fmt.Sprintf("%x", secret[:8]), fmt.Sprint(secret[:8])[1:20]}
	for _, verb := range []string{"%v", "%+v", "%#v", "%s", "%x", "%X", "%d", "%q"} {
		for what, v := range map[string]any{"key": id.Key, "identity": id, "*identity": *id, "CA": ca, "*CA": *ca} {
			out := fmt.Sprintf(verb, v)
			for _, f := range forms {
				if strings.Contains(strings.ToLower(out), strings.ToLower(f)) {
					t.Errorf("fmt %s of %s prints the key: %s", verb, what, out)
				}
			}
		}
	}
	if got := fmt.Sprint(id.Key); got != "pki.PrivateKey(redacted)" {
		t.Errorf("key prints as %q", got)
	}

	msg := []byte("advertise keys for round 7")
	if !ed25519.Verify(id.Key.Public(), msg, id.Key.Sign(msg)) {
		t.Error("signature does not verify")
	}
	if !id.Key.Public().Equal(id.Cert.Leaf.PublicKey) {
		t.Error("Key is not the certificate's key")
	}
	other := issue(t, ca, principal("acme", "o", RoleClient, "m"), IssueOptions{})
	if !id.Key.Equal(id.Key) || id.Key.Equal(other.Key) || id.Key.Equal(PrivateKey{}) {
		t.Error("Equal is wrong")
	}
}

func TestLoadPool(t *testing.T) {
	ca := newCA(t, "acme")
	dir := t.TempDir()
	caFile := filepath.Join(dir, "ca.crt")
	os.WriteFile(caFile, ca.CertPEM(), 0o644)
	pool, err := LoadPool(caFile)
	if err != nil {
		t.Fatal(err)
	}
	id := issue(t, ca, principal("acme", "o", RoleClient, "n"), IssueOptions{})
	if _, err := id.Cert.Leaf.Verify(x509.VerifyOptions{Roots: pool, KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageAny}}); err != nil {
		t.Errorf("verify against the loaded pool: %v", err)
	}

	prefix := filepath.Join(dir, "leaf")
	ca.IssueFiles(principal("acme", "o", RoleClient, "n"), IssueOptions{}, prefix)
	empty := filepath.Join(dir, "empty")
	os.WriteFile(empty, nil, 0o644)
	for file, why := range map[string]string{
		prefix + ".crt":               "not a CA",
		prefix + ".key":               "not a CERTIFICATE",
		empty:                         "no PEM block",
		filepath.Join(dir, "no-such"): "no such file",
	} {
		if _, err := LoadPool(file); err == nil || !strings.Contains(err.Error(), why) {
			t.Errorf("LoadPool(%s) = %v, want an error mentioning %q", filepath.Base(file), err, why)
		}
	}
}

// craft makes a certificate signed by ca whose subject alternative names are the given URIs,
// encoded exactly as given (crypto/x509 would normalise them).
func craft(t *testing.T, ca *CA, uris ...string) *x509.Certificate {
	t.Helper()
	key, err := generateKey()
	if err != nil {
		t.Fatal(err)
	}
	return craftWithKey(t, ca, key, uris...)
}

// craftWithKey is craft for the public half of key.
func craftWithKey(t *testing.T, ca *CA, key PrivateKey, uris ...string) *x509.Certificate {
	t.Helper()
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(time.Now().UnixNano()),
		Subject:      pkix.Name{CommonName: "crafted"},
		NotBefore:    time.Now().Add(-time.Hour),
		NotAfter:     time.Now().Add(time.Hour),
		ExtKeyUsage:  []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth, x509.ExtKeyUsageClientAuth},
	}
	if len(uris) == 0 {
		tmpl.DNSNames = []string{"localhost"}
	} else {
		var names []asn1.RawValue
		for _, u := range uris {
			names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 6, Bytes: []byte(u)})
		}
		names = append(names, asn1.RawValue{Class: asn1.ClassContextSpecific, Tag: 7, Bytes: []byte{127, 0, 0, 1}})
		val, err := asn1.Marshal(names)
		if err != nil {
			t.Fatal(err)
		}
		tmpl.ExtraExtensions = []pkix.Extension{{Id: oidSubjectAltName, Value: val}}
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, ca.cert, key.Public(), ca.key.signer())
	if err != nil {
		t.Fatal(err)
	}
	c, err := x509.ParseCertificate(der)
	if err != nil {
		t.Fatalf("parse crafted certificate: %v", err)
	}
	return c
}

func TestPrincipalFromCert(t *testing.T) {
	ca := newCA(t, "acme")
	const good = "fedweave://acme/org/o/client/n"
	tests := []struct {
		name string
		uris []string
		fed  string
		is   error
	}{
		{name: "one principal", uris: []string{good}, fed: "acme"},
		{name: "with a URI of another scheme", uris: []string{"spiffe://acme/x", good, "https://acme.example/"}, fed: "acme"},
		{name: "no URI", uris: nil, fed: "acme", is: ErrNoPrincipal},
		{name: "only other schemes", uris: []string{"spiffe://acme/x"}, fed: "acme", is: ErrNoPrincipal},
		{name: "two principals", uris: []string{good, "fedweave://acme/org/o/admin/n"}, fed: "acme", is: ErrNoPrincipal},
		{name: "same principal twice", uris: []string{good, good}, fed: "acme", is: ErrNoPrincipal},
		{name: "upper-case scheme", uris: []string{"FEDWEAVE://acme/org/o/client/n"}, fed: "acme", is: ErrNoPrincipal},
		{name: "empty fragment", uris: []string{good + "#"}, fed: "acme", is: ErrNoPrincipal},
		{name: "CA URI", uris: []string{"fedweave://acme/ca"}, fed: "acme", is: ErrNoPrincipal},
		{name: "a good one and a bad one", uris: []string{good, "fedweave://acme/org/O/client/n"}, fed: "acme", is: ErrNoPrincipal},
		{name: "other federation", uris: []string{"fedweave://other/org/o/client/n"}, fed: "acme", is: ErrWrongFederation},
		{name: "empty federation expected", uris: []string{good}, fed: "", is: ErrWrongFederation},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			p, err := PrincipalFromCert(craft(t, ca, tt.uris...), tt.fed)
			if tt.is == nil {
				if err != nil || p.URI() != good {
					t.Fatalf("PrincipalFromCert = %v, %v; want %s", p, err, good)
				}
				return
			}
			if !errors.Is(err, tt.is) {
				t.Fatalf("PrincipalFromCert = %v, %v; want an error matching %v", p, err, tt.is)
			}
			for _, u := range tt.uris {
				if strings.Contains(err.Error(), u) {
					t.Errorf("error %q quotes the certificate's URI", err)
				}
			}
		})
	}
}
