package server_test

import (
	"context"
	"encoding/hex"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/policy"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// TestSharingPolicyOnTheWire: a client whose sharing policy excludes images trains on records
// that have images, and what the server receives from it (a plaintext update, with secure
// none) gives the image encoder zero weight and zero change, while a client without that
// policy, on records with images, sends both; and its Join does not declare images.
func TestSharingPolicyOnTheWire(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	received := map[string][]byte{} // by org
	srv, err := f.StartServer(server.Config{Task: testTask(1, 2)}, server.Options{
		OnUpdate: func(principal string, round uint64, msg []byte) {
			p, err := pki.ParsePrincipal(principal)
			if err != nil || round != 1 {
				t.Errorf("update from %q for round %d", principal, round)
				return
			}
			mu.Lock()
			received[p.Org] = msg
			mu.Unlock()
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()

	data := partition(2, 80)
	for i, d := range data {
		if n := d.ModalityCounts()[dataset.Image]; n == 0 {
			t.Fatalf("client %d has no images to withhold", i)
		}
	}
	noImages := &client.SharingPolicy{Modalities: []string{"text", "tabular"}}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	var wg sync.WaitGroup
	errs := make(chan error, 2)
	for i, org := range []string{"restricted", "control"} {
		id, err := f.Identity(org, pki.RoleClient, "node")
		if err != nil {
			t.Fatal(err)
		}
		cfg := client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: f.Pool(), Source: client.DatasetSource(data[i]), Seed: uint64(i)}
		if org == "restricted" {
			cfg.Sharing = noImages
		}
		c, err := client.New(cfg)
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs <- c.Run(ctx)
		}()
	}
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		if err != nil {
			t.Fatal(err)
		}
	}

	// Decode what arrived, as the server's plaintext protocol does.
	m, err := models.New(srv.Spec(), 0)
	if err != nil {
		t.Fatal(err)
	}
	p := agg.Params{Round: 1, NumValues: m.NumParams(), NumGroups: models.NumGroups, Groups: models.ParamGroups(m.Layout())}
	raw, _ := hex.DecodeString(m.LayoutHash())
	copy(p.LayoutHash[:], raw)
	// group reports a group's weight and how many of its values are not zero.
	group := func(org string, g int) (weight float64, nonzero, size int) {
		mu.Lock()
		msg := received[org]
		mu.Unlock()
		if msg == nil {
			t.Fatalf("no update from %s on the wire", org)
		}
		in, err := agg.DecodePlain(p, msg)
		if err != nil {
			t.Fatalf("%s's update: %v", org, err)
		}
		for i, v := range in.Values {
			if int(p.Groups[i]) == g {
				size++
				if v != 0 {
					nonzero++
				}
			}
		}
		return in.Weights[g], nonzero, size
	}
	if w, nz, n := group("restricted", models.GroupImage); w != 0 || nz != 0 || n == 0 {
		t.Errorf("the restricted client's image encoder on the wire: weight %v, %d of %d values not zero", w, nz, n)
	}
	if w, nz, _ := group("restricted", models.GroupText); w == 0 || nz == 0 {
		t.Errorf("the restricted client's text encoder: weight %v, %d values not zero: it should still train", w, nz)
	}
	if w, nz, _ := group("control", models.GroupImage); w == 0 || nz == 0 {
		t.Errorf("the control client's image encoder: weight %v, %d values not zero: the test shows nothing", w, nz)
	}

	// Its Join declared no image.
	admin, err := f.Identity("restricted", pki.RoleAdmin, "alice")
	if err != nil {
		t.Fatal(err)
	}
	joins := map[string]string{}
	for _, ev := range auditEvents(t, ctx, dial(t, srv.Addr, admin, f)) {
		if ev.Type == policy.EventJoin {
			org := strings.Split(ev.Principal, "/")[4]
			joins[org] = ev.Details["modalities"]
		}
	}
	if joins["restricted"] != "text tabular" || joins["control"] != "text image tabular" {
		t.Errorf("modalities declared at Join: %v", joins)
	}
}
