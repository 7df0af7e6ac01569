package pki

import (
	"bufio"
	"context"
	"crypto/tls"
	"crypto/x509"
	"errors"
	"net"
	"strings"
	"testing"
	"time"
)

// A serverResult is what the test server saw of one connection.
type serverResult struct {
	peer    Principal
	resumed bool
	err     error
}

// serve starts a TLS server on 127.0.0.1:0 that, on each connection, completes the handshake,
// reads the client's principal with PrincipalFromState and writes its URI back on one line.
func serve(t *testing.T, cfg *tls.Config, federation string) (addr string, results <-chan serverResult) {
	t.Helper()
	ln, err := tls.Listen("tcp", "127.0.0.1:0", cfg)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { ln.Close() })
	ch := make(chan serverResult, 16)
	go func() {
		for {
			conn, err := ln.Accept()
			if err != nil {
				return
			}
			go func() {
				defer conn.Close()
				conn.SetDeadline(time.Now().Add(10 * time.Second))
				tc := conn.(*tls.Conn)
				if err := tc.HandshakeContext(context.Background()); err != nil {
					ch <- serverResult{err: err}
					return
				}
				cs := tc.ConnectionState()
				p, err := PrincipalFromState(cs, federation)
				if err == nil {
					_, err = conn.Write([]byte(p.URI() + "\n"))
				}
				ch <- serverResult{peer: p, resumed: cs.DidResume, err: err}
			}()
		}
	}()
	return ln.Addr().String(), ch
}

// dial connects with cfg and reads the server's one line. Under TLS 1.3 the client finishes
// its handshake before the server has checked the client's certificate, so a rejected client
// learns of it on its first read.
func dial(addr string, cfg *tls.Config) (line string, cs tls.ConnectionState, err error) {
	d := &tls.Dialer{NetDialer: &net.Dialer{Timeout: 10 * time.Second}, Config: cfg}
	conn, err := d.Dial("tcp", addr)
	if err != nil {
		return "", cs, err
	}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(10 * time.Second))
	line, err = bufio.NewReader(conn).ReadString('\n')
	return strings.TrimSuffix(line, "\n"), conn.(*tls.Conn).ConnectionState(), err
}

func waitResult(t *testing.T, ch <-chan serverResult) serverResult {
	t.Helper()
	select {
	case r := <-ch:
		return r
	case <-time.After(10 * time.Second):
		t.Fatal("the server saw no connection")
	}
	return serverResult{}
}

// pool returns a pool of the CA certificates of cas.
func pool(cas ...*CA) *x509.CertPool {
	p := x509.NewCertPool()
	for _, ca := range cas {
		p.AddCert(ca.Certificate())
	}
	return p
}

func TestHandshakeAccepts(t *testing.T) {
	ca := newCA(t, "acme")
	srv := issue(t, ca, principal("acme", "acme", RoleServer, "agg"), IssueOptions{})
	addr, results := serve(t, ServerTLS(srv, ca.Pool()), "acme")
	for _, p := range []Principal{
		principal("acme", "hospital-a", RoleClient, "node1"),
		principal("acme", "acme", RoleAdmin, "alice"),
		principal("acme", "insurer", RoleReader, "svc"),
		principal("acme", "acme", RoleServer, "leaf-aggregator"),
	} {
		t.Run(string(p.Role), func(t *testing.T) {
			id := issue(t, ca, p, IssueOptions{})
			for _, serverName := range []string{"", "localhost", "127.0.0.1"} {
				line, cs, err := dial(addr, ClientTLS(id, ca.Pool(), serverName))
				if err != nil {
					t.Fatalf("server name %q: %v", serverName, err)
				}
				r := waitResult(t, results)
				if r.err != nil || r.peer != p || line != p.URI() {
					t.Errorf("server saw %v (%v) and answered %q, want %v", r.peer, r.err, line, p)
				}
				if cs.Version != tls.VersionTLS13 {
					t.Errorf("TLS version %x, want 1.3", cs.Version)
				}
				sp, err := PrincipalFromState(cs, "acme")
				if err != nil || sp != srv.Principal {
					t.Errorf("client sees the server as %v, %v", sp, err)
				}
			}
		})
	}
}

func TestHandshakeResumed(t *testing.T) {
	ca := newCA(t, "acme")
	srv := issue(t, ca, principal("acme", "acme", RoleServer, "agg"), IssueOptions{})
	addr, results := serve(t, ServerTLS(srv, ca.Pool()), "acme")
	id := issue(t, ca, principal("acme", "hospital-a", RoleClient, "node1"), IssueOptions{})
	cfg := ClientTLS(id, ca.Pool(), "localhost")
	cfg.ClientSessionCache = tls.NewLRUClientSessionCache(4)
	for i, wantResumed := range []bool{false, true} {
		line, cs, err := dial(addr, cfg)
		r := waitResult(t, results)
		if err != nil || r.err != nil {
			t.Fatalf("connection %d: client %v, server %v", i, err, r.err)
		}
		if cs.DidResume != wantResumed || r.resumed != wantResumed {
			t.Errorf("connection %d: resumed %v/%v, want %v", i, cs.DidResume, r.resumed, wantResumed)
		}
		if r.peer != id.Principal || line != id.Principal.URI() {
			t.Errorf("connection %d: server saw %v", i, r.peer)
		}
	}
}

func TestHandshakeServerRejectsClient(t *testing.T) {
	acme := newCA(t, "acme")
	impostor := newCA(t, "acme") // another CA that calls its federation acme too
	other := newCA(t, "other")
	srv := issue(t, acme, principal("acme", "acme", RoleServer, "agg"), IssueOptions{})
	client := principal("acme", "hospital-a", RoleClient, "node1")

	tests := []struct {
		name    string
		trusted *x509.CertPool // the server's client CAs
		id      *Identity      // nil: no client certificate
		check   func(error) bool
	}{
		{
			name: "client of another CA", trusted: pool(acme),
			id:    issue(t, impostor, client, IssueOptions{}),
			check: func(err error) bool { return errors.As(err, new(x509.UnknownAuthorityError)) },
		},
		{
			name: "expired client", trusted: pool(acme),
			id: issue(t, acme, client, IssueOptions{NotBefore: time.Now().Add(-48 * time.Hour), Validity: 24 * time.Hour}),
			check: func(err error) bool {
				var e x509.CertificateInvalidError
				return errors.As(err, &e) && e.Reason == x509.Expired
			},
		},
		{
			name: "not yet valid client", trusted: pool(acme),
			id: issue(t, acme, client, IssueOptions{NotBefore: time.Now().Add(24 * time.Hour)}),
			check: func(err error) bool {
				var e x509.CertificateInvalidError
				return errors.As(err, &e) && e.Reason == x509.Expired
			},
		},
		{
			// The server trusts both CAs (a shared bundle, a mistake): the federation check
			// still holds.
			name: "client of another federation", trusted: pool(acme, other),
			id:    issue(t, other, principal("other", "hospital-a", RoleClient, "node1"), IssueOptions{}),
			check: func(err error) bool { return errors.Is(err, ErrWrongFederation) },
		},
		{
			name: "certificate without a principal", trusted: pool(acme),
			id:    craftIdentity(t, acme),
			check: func(err error) bool { return errors.Is(err, ErrNoPrincipal) },
		},
		{
			name: "no client certificate", trusted: pool(acme),
			check: func(err error) bool { return err != nil && strings.Contains(err.Error(), "certificate") },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			addr, results := serve(t, ServerTLS(srv, tt.trusted), "acme")
			// A plain client that offers its certificate and trusts the server: what the
			// server decides alone.
			cfg := &tls.Config{MinVersion: tls.VersionTLS13, RootCAs: acme.Pool(), ServerName: "localhost"}
			if tt.id != nil {
				cfg.Certificates = []tls.Certificate{tt.id.Cert}
			}
			line, _, err := dial(addr, cfg)
			if err == nil {
				t.Errorf("client got %q, want an error", line)
			}
			r := waitResult(t, results)
			if r.err == nil || !tt.check(r.err) {
				t.Errorf("server error %v (%T), not the one expected", r.err, r.err)
			}
		})
	}
}

// craftIdentity returns a client identity whose certificate, signed by ca, has no URI.
func craftIdentity(t *testing.T, ca *CA) *Identity {
	t.Helper()
	key, err := generateKey()
	if err != nil {
		t.Fatal(err)
	}
	c := craftWithKey(t, ca, key)
	return &Identity{Cert: tls.Certificate{Certificate: [][]byte{c.Raw}, PrivateKey: key.signer(), Leaf: c}, Key: key}
}

func TestHandshakeClientRejectsServer(t *testing.T) {
	acme := newCA(t, "acme")
	other := newCA(t, "other")
	client := issue(t, acme, principal("acme", "hospital-a", RoleClient, "node1"), IssueOptions{})
	// A certificate that TLS accepts for a server (ServerAuth, 127.0.0.1) but that names a
	// client: only the role check stops it.
	key, err := generateKey()
	if err != nil {
		t.Fatal(err)
	}
	roleClient := craftWithKey(t, acme, key, "fedweave://acme/org/acme/client/agg")
	fake := &Identity{Principal: principal("acme", "acme", RoleClient, "agg"),
		Cert: tls.Certificate{Certificate: [][]byte{roleClient.Raw}, PrivateKey: key.signer(), Leaf: roleClient}, Key: key}

	tests := []struct {
		name       string
		server     *Identity
		trusted    *x509.CertPool // the client's roots
		serverName string
		check      func(error) bool
	}{
		{
			name: "server certificate of role client", server: fake, trusted: pool(acme), serverName: "127.0.0.1",
			check: func(err error) bool { return errors.Is(err, ErrWrongRole) },
		},
		{
			// An issued client certificate lacks ServerAuth: chain verification refuses it.
			name: "issued client certificate as server", trusted: pool(acme),
			server: issue(t, acme, principal("acme", "acme", RoleClient, "agg"), IssueOptions{IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}}),
			check: func(err error) bool {
				var e x509.CertificateInvalidError
				return errors.As(err, &e) && e.Reason == x509.IncompatibleUsage
			},
		},
		{
			name: "server of another federation", trusted: pool(acme, other),
			server: issue(t, other, principal("other", "other", RoleServer, "agg"), IssueOptions{}),
			check:  func(err error) bool { return errors.Is(err, ErrWrongFederation) },
		},
		{
			name: "server of another CA", trusted: pool(acme),
			server: issue(t, other, principal("other", "other", RoleServer, "agg"), IssueOptions{}),
			check:  func(err error) bool { return errors.As(err, new(x509.UnknownAuthorityError)) },
		},
		{
			name: "expired server", trusted: pool(acme),
			server: issue(t, acme, principal("acme", "acme", RoleServer, "agg"), IssueOptions{NotBefore: time.Now().Add(-48 * time.Hour), Validity: time.Hour}),
			check: func(err error) bool {
				var e x509.CertificateInvalidError
				return errors.As(err, &e) && e.Reason == x509.Expired
			},
		},
		{
			name: "wrong server name", trusted: pool(acme), serverName: "agg.acme.example",
			server: issue(t, acme, principal("acme", "acme", RoleServer, "agg"), IssueOptions{}),
			check:  func(err error) bool { return errors.As(err, new(x509.HostnameError)) },
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			srvPool := pool(acme, other)
			addr, results := serve(t, ServerTLS(tt.server, srvPool), tt.server.Principal.Federation)
			line, _, err := dial(addr, ClientTLS(client, tt.trusted, tt.serverName))
			if err == nil || !tt.check(err) {
				t.Errorf("client got %q, %v (%T); not the error expected", line, err, err)
			}
			if r := waitResult(t, results); r.err == nil {
				t.Error("the server completed a connection the client refused")
			}
		})
	}
}
