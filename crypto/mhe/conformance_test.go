package mhe_test

import (
	"fmt"
	"sync"
	"testing"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/agg/aggtest"
	"github.com/fedweave/fedweave/crypto/mhe"
	"github.com/fedweave/fedweave/crypto/quant"
)

// federation runs the conformance suite's cohorts as mhe federations: for each cohort size it
// runs a real key set-up (mhe.RunSetup, the same state machines the server and the clients run
// over gRPC) the first time a server for that size is made, and then gives the server only the
// public set-up and each client only its own key material. The suite makes a round's server
// before its clients, so a client belongs to the federation of the last server made.
type federation struct {
	cfg       mhe.Config
	maxWeight uint64

	mu    sync.Mutex
	rings map[int]mhe.KeyRing
	last  int
}

func threshold(n int) int { return n/2 + 1 }

func (f *federation) ring(n int) (mhe.KeyRing, error) {
	f.mu.Lock()
	defer f.mu.Unlock()
	if r, ok := f.rings[n]; ok {
		return r, nil
	}
	_, kms, err := mhe.RunSetup(mhe.SetupConfig{
		Task: fmt.Sprintf("aggtest/%d", n), Members: n, Threshold: threshold(n), MaxWeight: f.maxWeight,
	})
	if err != nil {
		return nil, err
	}
	if f.rings == nil {
		f.rings = map[int]mhe.KeyRing{}
	}
	f.rings[n] = kms
	return kms, nil
}

func (f *federation) Name() string { return "mhe" }

func (f *federation) NewServer(p agg.Params, cohort int) (agg.Server, error) {
	if cohort < 1 {
		return nil, fmt.Errorf("a cohort of %d", cohort)
	}
	r, err := f.ring(cohort)
	if err != nil {
		return nil, err
	}
	f.mu.Lock()
	f.last = cohort
	f.mu.Unlock()
	return mhe.New(f.cfg, r[0].Public()).NewServer(p, cohort)
}

func (f *federation) NewClient(p agg.Params, index int, in agg.Input) (agg.Client, error) {
	f.mu.Lock()
	n := f.last
	f.mu.Unlock()
	if n == 0 {
		n = 5
	}
	r, err := f.ring(n)
	if err != nil {
		return nil, err
	}
	var keys mhe.Keys = r // for an index outside the cohort, let New say so
	if index >= 1 && index <= len(r) {
		keys = r[index-1]
	}
	return mhe.New(f.cfg, keys).NewClient(p, index, in)
}

func TestConformance(t *testing.T) {
	// The suite's values lie in [-1, 1), its weights are whole numbers up to 1000, and its
	// cohorts have at most 17 clients: with Clip 1 nothing is clipped, and each client's
	// stochastic rounding is off by less than one step times its weight.
	const cohortMax, weightMax = 17, 1000
	cfg := mhe.Config{Quant: quant.Config{Clip: 1}}
	l, err := quant.NewLayout(cfg.Quant, []uint8{0}, 1, cohortMax, weightMax)
	if err != nil {
		t.Fatal(err)
	}
	aggtest.TestProtocol(t, &federation{cfg: cfg, maxWeight: weightMax}, aggtest.Options{
		Tolerance:    l.ErrorBound(cohortMax*weightMax) + 1e-9,
		MaxDropPhase: 1,
		Threshold:    threshold,
		HeaderLen:    88, // magic, version, type, phase, round, layout hash, key set id, member, count
	})
}
