package pki_test

import (
	"crypto/tls"
	"fmt"
	"io"
	"log"
	"net"
	"os"
	"path/filepath"

	"github.com/fedweave/fedweave/crypto/pki"
)

// A federation's CA issues a certificate to its aggregation server and to a partner's client;
// the two authenticate each other over TLS, and the server learns the client's principal.
func ExampleCA() {
	dir, err := os.MkdirTemp("", "fedweave-pki")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)

	// Once per federation, by an admin (fedweave ca init).
	ca, err := pki.Init(filepath.Join(dir, "ca"), "acme", 0)
	if err != nil {
		log.Fatal(err)
	}

	// One certificate per principal (fedweave ca issue).
	server, err := pki.ParsePrincipal("fedweave://acme/org/acme/server/agg")
	if err != nil {
		log.Fatal(err)
	}
	client := pki.Principal{Federation: "acme", Org: "hospital-a", Role: pki.RoleClient, Name: "node1"}
	for name, p := range map[string]pki.Principal{"agg": server, "node1": client} {
		if err := ca.IssueFiles(p, pki.IssueOptions{}, filepath.Join(dir, name)); err != nil {
			log.Fatal(err)
		}
	}

	// Each process loads its identity and the CA certificate.
	pool, err := pki.LoadPool(filepath.Join(dir, "ca", pki.CACertFile))
	if err != nil {
		log.Fatal(err)
	}
	srvID, err := pki.LoadIdentity(filepath.Join(dir, "agg.crt"), filepath.Join(dir, "agg.key"))
	if err != nil {
		log.Fatal(err)
	}
	cliID, err := pki.LoadIdentity(filepath.Join(dir, "node1.crt"), filepath.Join(dir, "node1.key"))
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("client:", cliID.Principal, cliID.Principal.Org, cliID.Principal.Role)

	// Mutual TLS; net.Pipe stands in for a TCP connection.
	c, s := net.Pipe()
	srv := tls.Server(s, pki.ServerTLS(srvID, pool))
	go func() {
		cli := tls.Client(c, pki.ClientTLS(cliID, pool, "localhost"))
		io.Copy(io.Discard, cli) // handshakes, then reads until the server closes
		cli.Close()
	}()
	if err := srv.Handshake(); err != nil {
		log.Fatal(err)
	}
	defer srv.Close()
	peer, err := pki.PrincipalFromState(srv.ConnectionState(), ca.Federation())
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("server sees:", peer)
	fmt.Println("same principal:", peer == client)
	// Output:
	// client: fedweave://acme/org/hospital-a/client/node1 hospital-a client
	// server sees: fedweave://acme/org/hospital-a/client/node1
	// same principal: true
}
