// Package servertest starts real fedweave federations on loopback, the way net/http/httptest
// starts real HTTP servers: a federation CA in a directory, certificates for every party, and
// the real aggregation server with mutual TLS on 127.0.0.1 and an encrypted store. Tests and the
// demo use it; nothing in it is a mock.
//
// The servers decide every call with the default policies, which deny by default. So that a
// federation works as soon as its parties have certificates, Identity makes the org of every
// client, reader and admin it issues for a member of the federation, on the servers started
// already and on those started later; NonMemberIdentity issues a valid certificate for an org
// that is not a member, for tests of what outsiders cannot do.
package servertest

import (
	"crypto/x509"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"time"

	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/server"
)

// Federation is a CA and the directory that holds it and the parties' state.
type Federation struct {
	Name string
	Dir  string
	CA   *pki.CA

	mu      sync.Mutex
	members []string         // orgs made members by Identity
	servers []*server.Server // started servers whose members come from their config
}

// NewFederation creates a federation CA under dir/ca.
func NewFederation(dir, name string) (*Federation, error) {
	ca, err := pki.Init(filepath.Join(dir, "ca"), name, 24*time.Hour)
	if err != nil {
		return nil, err
	}
	return &Federation{Name: name, Dir: dir, CA: ca}, nil
}

// Pool is the pool of the federation's CA.
func (f *Federation) Pool() *x509.CertPool { return f.CA.Pool() }

// Identity issues a certificate for org/role/name; servers get loopback names. The org of a
// client, reader or admin becomes a member of the federation.
func (f *Federation) Identity(org string, role pki.Role, name string) (*pki.Identity, error) {
	id, err := f.NonMemberIdentity(org, role, name)
	if err != nil || role == pki.RoleServer {
		return id, err
	}
	f.mu.Lock()
	defer f.mu.Unlock()
	if !slices.Contains(f.members, org) {
		f.members = append(f.members, org)
		for _, s := range f.servers {
			if err := s.AddMembers(org); err != nil {
				return nil, err
			}
		}
	}
	return id, nil
}

// NonMemberIdentity issues a certificate for org/role/name, as Identity does, without making
// the org a member: its holder passes the TLS handshake and is denied by the policies.
func (f *Federation) NonMemberIdentity(org string, role pki.Role, name string) (*pki.Identity, error) {
	p := pki.Principal{Federation: f.Name, Org: org, Role: role, Name: name}
	opt := pki.IssueOptions{Validity: 24 * time.Hour}
	if role == pki.RoleServer {
		opt.DNSNames = []string{"localhost"}
		opt.IPAddresses = []net.IP{net.IPv4(127, 0, 0, 1)}
	}
	certPEM, keyPEM, err := f.CA.Issue(p, opt)
	if err != nil {
		return nil, err
	}
	return pki.ParseIdentity(certPEM, keyPEM)
}

// Running is a server serving on loopback.
type Running struct {
	*server.Server
	Addr     string
	Identity *pki.Identity
	served   chan error
}

// KeyFile creates (once) the master key file of a store directory and returns its path.
func KeyFile(dir string) (string, error) {
	if err := os.MkdirAll(dir, 0o700); err != nil {
		return "", err
	}
	path := filepath.Join(dir, "master.key")
	if _, err := os.Stat(path); err == nil {
		return path, nil
	}
	return path, store.NewKeyFile(path)
}

// StartServer starts the real server for cfg: its store in cfg.Dir (default dir/server, with a
// key file made on first use), listening on cfg.Listen (default 127.0.0.1:0). Unless the config
// names an entity file (cfg.Policy.Entities), the orgs Identity has made members are members.
func (f *Federation) StartServer(cfg server.Config, opt server.Options) (*Running, error) {
	cfg.Federation = f.Name
	if cfg.Dir == "" {
		cfg.Dir = filepath.Join(f.Dir, "server")
	}
	if cfg.KeyFile == "" {
		kf, err := KeyFile(filepath.Join(f.Dir, "keys"))
		if err != nil {
			return nil, err
		}
		cfg.KeyFile = kf
	}
	if cfg.Listen == "" {
		cfg.Listen = "127.0.0.1:0"
	}
	id, err := f.Identity("operator", pki.RoleServer, "aggregator")
	if err != nil {
		return nil, err
	}
	opt.Identity, opt.CAPool = id, f.Pool()
	f.mu.Lock()
	defer f.mu.Unlock()
	derived := cfg.Policy.Entities == ""
	if derived {
		cfg.Policy.Members = slices.Clone(cfg.Policy.Members)
		for _, m := range f.members {
			if !slices.Contains(cfg.Policy.Members, m) {
				cfg.Policy.Members = append(cfg.Policy.Members, m)
			}
		}
	}
	srv, err := server.New(cfg, opt)
	if err != nil {
		return nil, err
	}
	if derived {
		f.servers = append(f.servers, srv)
	}
	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		srv.Close()
		return nil, fmt.Errorf("servertest: %w", err)
	}
	r := &Running{Server: srv, Addr: lis.Addr().String(), Identity: id, served: make(chan error, 1)}
	go func() { r.served <- srv.Serve(lis) }()
	return r, nil
}
