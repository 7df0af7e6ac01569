package server_test

import (
	"context"
	"encoding/base64"
	"encoding/hex"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/internal/lineage"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/policy"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// TestRoundLineage: every committed round's record carries, for every participant, a
// commitment to its dataset version whose signature verifies with the participant's
// certificate, bound to the task, the round and the layout hash.
func TestRoundLineage(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.StartServer(server.Config{Task: testTask(2, 2)}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	certs := map[string]*pki.Identity{}
	var wg sync.WaitGroup
	for i, d := range partition(2, 40) {
		id, err := f.Identity("org"+string(rune('a'+i)), pki.RoleClient, "node")
		if err != nil {
			t.Fatal(err)
		}
		certs[id.Principal.URI()] = id
		c, err := client.New(client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: f.Pool(), Source: client.DatasetSource(d), Seed: uint64(i)})
		if err != nil {
			t.Fatal(err)
		}
		wg.Add(1)
		go func() { defer wg.Done(); _ = c.Run(ctx) }()
	}
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	hist, err := srv.History()
	if err != nil {
		t.Fatal(err)
	}
	m, err := models.New(srv.Spec(), 0)
	if err != nil {
		t.Fatal(err)
	}
	layout := m.LayoutHash()
	committed := 0
	for _, rec := range hist {
		if !rec.Committed {
			continue
		}
		committed++
		if len(rec.Lineage) != len(rec.Participants) || len(rec.Participants) != 2 {
			t.Fatalf("round %d: lineage %+v for participants %v", rec.Round, rec.Lineage, rec.Participants)
		}
		seen := map[string]bool{}
		for _, e := range rec.Lineage {
			id := certs[e.Principal]
			if id == nil {
				t.Fatalf("round %d: lineage names %s, no client of the test", rec.Round, e.Principal)
			}
			seen[e.Principal] = true
			c, err1 := hex.DecodeString(e.Commitment)
			sig, err2 := base64.StdEncoding.DecodeString(e.Signature)
			if err1 != nil || err2 != nil {
				t.Fatalf("round %d: lineage entry %+v", rec.Round, e)
			}
			if err := lineage.Verify(id.Cert.Leaf, "triage", rec.Round, layout, c, sig); err != nil {
				t.Errorf("round %d, %s: %v", rec.Round, e.Principal, err)
			}
			if lineage.Verify(id.Cert.Leaf, "triage", rec.Round+1, layout, c, sig) == nil {
				t.Errorf("round %d, %s: the signature verifies for another round", rec.Round, e.Principal)
			}
		}
		for _, p := range rec.Participants {
			if !seen[p] {
				t.Errorf("round %d: no commitment of participant %s", rec.Round, p)
			}
		}
	}
	if committed != 2 {
		t.Fatalf("%d rounds committed, want 2", committed)
	}
}

// TestCommitmentCanonical: the commitment does not depend on the records' order, and changes
// with any record's content.
func TestCommitmentCanonical(t *testing.T) {
	d := partition(1, 20)[0]
	salt, err := lineage.NewSalt()
	if err != nil {
		t.Fatal(err)
	}
	commit := func(d *dataset.Dataset) string {
		c, err := lineage.Commit(d, salt)
		if err != nil {
			t.Fatal(err)
		}
		return hex.EncodeToString(c)
	}
	a := commit(d)
	rev := *d
	rev.Records = append(rev.Records[:0:0], d.Records...)
	for i, j := 0, len(rev.Records)-1; i < j; i, j = i+1, j-1 {
		rev.Records[i], rev.Records[j] = rev.Records[j], rev.Records[i]
	}
	if commit(&rev) != a {
		t.Error("the commitment depends on the records' order")
	}
	rev.Records[0].Label++
	if commit(&rev) == a {
		t.Error("the commitment ignores a record's label")
	}
}

// TestAdminRetention: over mutual TLS, an admin sets the retention rule and a reader may not;
// the rule overrides the config's (keep all) from the next commit, so that after setting 2
// only the two newest checkpoints (and checkpoint 0) remain; the change is audited.
func TestAdminRetention(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	admin := mustAdmin(t, f)
	var addr atomic.Value
	var setErr atomic.Value
	var once sync.Once
	opt := server.Options{OnRound: func(rec server.RoundRecord) {
		if !rec.Committed {
			return
		}
		once.Do(func() {
			conn := dial(t, addr.Load().(string), admin, f)
			ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
			defer cancel()
			rule, err := pb.NewAdminClient(conn).SetRetention(ctx, &pb.SetRetentionRequest{Checkpoints: 2})
			if err == nil && (rule.GetCheckpoints() != 2 || rule.GetSource() != "admin" || rule.GetSetBy() != admin.Principal.URI()) {
				t.Errorf("SetRetention answered %v", rule)
			}
			if err != nil {
				setErr.Store(err)
			}
		})
	}}
	srv, err := f.StartServer(server.Config{Task: testTask(4, 2)}, opt)
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	addr.Store(srv.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()

	adminAPI := pb.NewAdminClient(dial(t, srv.Addr, admin, f))
	if rule, err := adminAPI.GetRetention(ctx, &pb.GetRetentionRequest{}); err != nil || rule.GetSource() != "config" || rule.GetCheckpoints() != 0 {
		t.Fatalf("GetRetention before: %v, %v", rule, err)
	}
	reader, err := f.Identity("orga", pki.RoleReader, "r")
	if err != nil {
		t.Fatal(err)
	}
	readerAPI := pb.NewAdminClient(dial(t, srv.Addr, reader, f))
	if _, err := readerAPI.SetRetention(ctx, &pb.SetRetentionRequest{Checkpoints: 1}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("a reader's SetRetention: %v, want PermissionDenied", err)
	}

	wg, _ := startClients(t, ctx, f, srv.Addr, partition(2, 40))
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err, _ := setErr.Load().(error); err != nil {
		t.Fatalf("the admin's SetRetention: %v", err)
	}
	if rule, err := adminAPI.GetRetention(ctx, &pb.GetRetentionRequest{}); err != nil || rule.GetSource() != "admin" || rule.GetCheckpoints() != 2 {
		t.Fatalf("GetRetention after: %v, %v", rule, err)
	}
	conn := dial(t, srv.Addr, reader, f)
	for r, want := range map[uint64]codes.Code{1: codes.NotFound, 2: codes.NotFound, 3: codes.OK, 4: codes.OK} {
		if _, _, err := download(ctx, conn, "triage", r); status.Code(err) != want {
			t.Errorf("download %d: %v, want %v", r, err, want)
		}
	}
	var changes, denied int
	for _, ev := range auditEvents(t, ctx, dial(t, srv.Addr, admin, f)) {
		switch {
		case ev.Type == policy.EventPolicyChange && ev.Action == "ManageRetention" && ev.Details["checkpoints"] == "2" && ev.Principal == admin.Principal.URI():
			changes++
		case ev.Type == policy.EventDenial && ev.Action == "ManageRetention" && ev.Principal == reader.Principal.URI():
			denied++
		}
	}
	if changes != 1 || denied != 1 {
		t.Errorf("audit: %d retention changes, %d denials; want 1 and 1", changes, denied)
	}
}
