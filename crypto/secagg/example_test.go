package secagg_test

import (
	"crypto/sha256"
	"fmt"
	"log"
	"os"
	"path/filepath"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/crypto/secagg"
)

// Three partners aggregate a model of two values in one parameter group. Each client signs
// its keys with the certificate the federation's CA issued it; the server routes the
// messages. Client 3 sends its encrypted shares and then drops out: the server rebuilds its
// pairwise masks from the others' shares and learns the sum of clients 1 and 2 — and nothing
// about either alone.
func Example() {
	dir, err := os.MkdirTemp("", "fedweave-secagg")
	if err != nil {
		log.Fatal(err)
	}
	defer os.RemoveAll(dir)
	ca, err := pki.Init(filepath.Join(dir, "ca"), "acme", 0)
	if err != nil {
		log.Fatal(err)
	}
	verify := secagg.PKIVerifier(ca.Pool(), "acme")
	cfg := secagg.Config{} // X25519, complete graph, t = 2 of 3

	p := agg.Params{
		Round:      1,
		LayoutHash: sha256.Sum256([]byte("a two-value model")),
		NumValues:  2,
		NumGroups:  1,
		Groups:     []uint8{0, 0},
		MaxWeight:  100, // each client's sample count is at most 100: sums fit 32 bits
	}
	inputs := []agg.Input{
		{Values: []float32{0.5, -0.25}, Weights: []float64{10}},
		{Values: []float32{0.25, 0.125}, Weights: []float64{30}},
		{Values: []float32{-0.75, 0.5}, Weights: []float64{20}},
	}
	clients := map[int]agg.Client{}
	for i, in := range inputs {
		org := fmt.Sprintf("hospital-%c", 'a'+i)
		certPEM, keyPEM, err := ca.Issue(pki.Principal{Federation: "acme", Org: org, Role: pki.RoleClient, Name: "node1"}, pki.IssueOptions{})
		if err != nil {
			log.Fatal(err)
		}
		id, err := pki.ParseIdentity(certPEM, keyPEM)
		if err != nil {
			log.Fatal(err)
		}
		c, err := secagg.New(cfg, secagg.FromPKI(id), verify).NewClient(p, i+1, in)
		if err != nil {
			log.Fatal(err)
		}
		clients[i+1] = c
	}

	server, err := secagg.New(cfg, nil, verify).NewServer(p, len(inputs))
	if err != nil {
		log.Fatal(err)
	}
	var fromServer map[int][]byte
	for phase := 0; ; phase++ {
		if phase == 2 {
			delete(clients, 3) // gone after sending its shares
		}
		for i := 1; i <= len(inputs); i++ {
			c, ok := clients[i]
			if !ok || (phase > 0 && fromServer[i] == nil) {
				continue
			}
			msg, err := c.Phase(phase, fromServer[i])
			if err != nil {
				log.Fatal(err)
			}
			if err := server.Receive(i, msg); err != nil {
				log.Fatal(err)
			}
		}
		out, done, err := server.Next()
		if err != nil {
			log.Fatal(err)
		}
		if done {
			break
		}
		fromServer = out
	}
	sum, err := server.Result()
	if err != nil {
		log.Fatal(err)
	}
	fmt.Println("contributors:", sum.Contributors)
	fmt.Printf("weighted sum: [%.2f %.2f]\n", sum.Values[0], sum.Values[1])
	fmt.Println("weight:", sum.Weights[0])
	fmt.Printf("mean: [%.2f %.2f]\n", sum.Values[0]/sum.Weights[0], sum.Values[1]/sum.Weights[0])
	// Output:
	// contributors: [1 2]
	// weighted sum: [12.50 1.25]
	// weight: 40
	// mean: [0.31 0.03]
}
