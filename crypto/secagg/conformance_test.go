package secagg_test

import (
	"crypto/x509"
	"fmt"
	"path/filepath"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/agg/aggtest"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/crypto/quant"
	"github.com/fedweave/fedweave/crypto/secagg"
)

// federation is a CA and the identities of the members of a cohort, issued once per test
// binary: the conformance suite plays cohorts of up to 17 clients.
type federation struct {
	name  string
	pool  *x509.CertPool
	ids   []*pki.Identity // member i holds ids[i-1]
	admin *pki.Identity   // a certificate of another role
}

func newFederation(t testing.TB, name string, members int) *federation {
	t.Helper()
	ca, err := pki.Init(filepath.Join(t.TempDir(), "ca"), name, 0)
	if err != nil {
		t.Fatal(err)
	}
	f := &federation{name: name, pool: ca.Pool()}
	issue := func(p pki.Principal) *pki.Identity {
		certPEM, keyPEM, err := ca.Issue(p, pki.IssueOptions{})
		if err != nil {
			t.Fatal(err)
		}
		id, err := pki.ParseIdentity(certPEM, keyPEM)
		if err != nil {
			t.Fatal(err)
		}
		return id
	}
	for i := 1; i <= members; i++ {
		f.ids = append(f.ids, issue(pki.Principal{Federation: name, Org: fmt.Sprintf("org%d", i), Role: pki.RoleClient, Name: "node"}))
	}
	f.admin = issue(pki.Principal{Federation: name, Org: "org1", Role: pki.RoleAdmin, Name: "alice"})
	return f
}

// cohortProtocol gives each cohort member its own identity, as the members of a real
// federation have, and can declare a bound on the weights as the server would.
type cohortProtocol struct {
	cfg       secagg.Config
	fed       *federation
	maxWeight uint64
}

func (c cohortProtocol) Name() string { return "secagg" }

func (c cohortProtocol) NewClient(p agg.Params, index int, in agg.Input) (agg.Client, error) {
	p.MaxWeight = c.maxWeight
	id := c.fed.ids[0]
	if index >= 1 && index <= len(c.fed.ids) {
		id = c.fed.ids[index-1]
	}
	return secagg.New(c.cfg, secagg.FromPKI(id), secagg.PKIVerifier(c.fed.pool, c.fed.name)).NewClient(p, index, in)
}

func (c cohortProtocol) NewServer(p agg.Params, n int) (agg.Server, error) {
	p.MaxWeight = c.maxWeight
	return secagg.New(c.cfg, nil, secagg.PKIVerifier(c.fed.pool, c.fed.name)).NewServer(p, n)
}

func TestConformance(t *testing.T) {
	fed := newFederation(t, "conformance", 17)
	// The suite's values lie in [-1, 1), its weights are whole numbers up to 1000, and its
	// cohorts have at most 17 clients. With Clip 1 nothing is clipped, and each client's
	// stochastic rounding is off by less than one step, Clip/(2^15-1) at 16 bits, times its
	// weight: at most 17·1000/32767 = 0.519 in all. Float64 rounding adds some 1e-12.
	const cohortMax, weightMax = 17, 1000
	cases := []struct {
		name      string
		cfg       secagg.Config
		maxWeight uint64
	}{
		// With no declared bound on the weights, sums are over 2^64.
		{name: "x25519/complete", cfg: secagg.Config{}},
		// With the suite's bound declared, sums of 17 clients fit 32 bits.
		{name: "x25519/complete/32-bit sums", cfg: secagg.Config{}, maxWeight: weightMax},
		// A SecAgg+ graph of 4 neighbours from 7 clients on (5 clients: the complete graph).
		// Its threshold of 7 - 5 + 3 = 5 makes the suite skip its dropouts of 3 out of 7;
		// TestExactDropouts covers sparse graphs with dropouts.
		{name: "x25519/k=4", cfg: secagg.Config{K: 4}},
		{name: "hybrid/complete", cfg: secagg.Config{KEM: "hybrid"}, maxWeight: weightMax},
		{name: "hybrid/k=4", cfg: secagg.Config{KEM: "hybrid", K: 4}},
		{name: "x25519/complete/24 bits", cfg: secagg.Config{Quant: quant.Config{Bits: 24}}, maxWeight: weightMax},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			c.cfg.Quant.Clip = 1
			bitsV := c.cfg.Quant.Bits
			if bitsV == 0 {
				bitsV = quant.DefaultBits
			}
			tolerance := cohortMax*weightMax/float64(uint64(1)<<(bitsV-1)-1) + 1e-9
			aggtest.TestProtocol(t, cohortProtocol{cfg: c.cfg, fed: fed, maxWeight: c.maxWeight}, aggtest.Options{
				Tolerance:    tolerance,
				MaxDropPhase: 3,
				Threshold:    c.cfg.Threshold,
				HeaderLen:    56, // magic, version, type, flags, round, layout hash, sender, length
			})
		})
	}
}
