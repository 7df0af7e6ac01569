package server_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/policy"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// TestEraseOrg: under SecAgg+, orgx contributes to rounds 2 and 3; its erasure taints
// checkpoints 2 and 3 (refused for download at once), rolls the model back to checkpoint 1,
// shreds the tainted checkpoints' keys, and the task retrains rounds 4 and 5 without orgx. The
// signed receipt is in the audit log, which verifies after the server stops.
func TestEraseOrg(t *testing.T) {
	dir := t.TempDir()
	f, err := servertest.NewFederation(dir, "consortium")
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	data := partition(3, 60)
	reader, err := f.Identity("orga", pki.RoleReader, "r")
	if err != nil {
		t.Fatal(err)
	}
	alice, err := f.Identity("orgb", pki.RoleAdmin, "alice")
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	errs := make([]error, 3)

	task := testTask(3, 2)
	task.Secure = "secagg"
	var srv *servertest.Running
	var erased *pb.Erasure
	var downloadsBefore int
	var mu sync.Mutex
	run := func(i int, org string) {
		id, err := f.Identity(org, pki.RoleClient, "node")
		if err != nil {
			t.Error(err)
			return
		}
		c, err := client.New(client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: f.Pool(), Source: client.DatasetSource(data[i]), Seed: uint64(i)})
		if err != nil {
			t.Error(err)
			return
		}
		wg.Add(1)
		go func() {
			defer wg.Done()
			errs[i] = c.Run(ctx)
		}()
	}
	srv, err = f.StartServer(server.Config{Task: task}, server.Options{OnRound: func(rec server.RoundRecord) {
		switch rec.Round {
		case 1: // orgx joins for rounds 2 and 3
			run(2, "orgx")
			for deadline := time.Now().Add(20 * time.Second); srv.Connected() < 3; time.Sleep(10 * time.Millisecond) {
				if time.Now().After(deadline) {
					t.Error("orgx did not connect")
					return
				}
			}
		case 3:
			conn := dial(t, srv.Addr, reader, f)
			for _, r := range []uint64{2, 3} {
				if _, _, err := download(ctx, conn, "triage", r); err != nil {
					t.Errorf("download %d before the erasure: %v", r, err)
				}
				downloadsBefore++
			}
			e, err := pb.NewAdminClient(dial(t, srv.Addr, alice, f)).EraseOrg(ctx, &pb.EraseOrgRequest{Org: "orgx"})
			if err != nil {
				t.Errorf("EraseOrg: %v", err)
				return
			}
			mu.Lock()
			erased = e
			mu.Unlock()
			// At once: the tainted checkpoints are refused, the latest model is checkpoint 1.
			for _, r := range []uint64{2, 3} {
				_, _, err := download(ctx, conn, "triage", r)
				if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "forbid-tainted-models") {
					t.Errorf("download %d after the erasure: %v", r, err)
				}
			}
			if got, _, err := download(ctx, conn, "triage", 0); err != nil || got != 1 {
				t.Errorf("the latest model after the erasure: round %d, %v", got, err)
			}
		}
	}})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	run(0, "orga")
	run(1, "orgb")
	for srv.Connected() < 2 {
		time.Sleep(10 * time.Millisecond)
	}
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	for i, err := range errs {
		switch {
		case i == 2 && !errors.Is(err, client.ErrRefused):
			t.Errorf("orgx's client after the erasure: %v, want ErrRefused", err)
		case i < 2 && err != nil:
			t.Errorf("client %d: %v", i, err)
		}
	}
	mu.Lock()
	e := erased
	mu.Unlock()
	if e == nil {
		t.Fatal("no erasure")
	}
	if !slices.Equal(e.GetTainted(), []uint64{2, 3}) || e.GetHeadBefore() != 3 || e.GetRolledBackTo() != 1 || e.GetRoundsToRetrain() != 2 ||
		e.GetState() != "done" || !slices.Equal(e.GetShredded(), []uint64{2, 3}) || int(e.GetDownloads()) != downloadsBefore {
		t.Errorf("erasure: %+v", e)
	}

	// The lineage: rounds 4 and 5 retrain from checkpoint 1, without orgx.
	hist, err := srv.History()
	if err != nil {
		t.Fatal(err)
	}
	if len(hist) != 5 {
		t.Fatalf("%d rounds, want 5", len(hist))
	}
	for _, r := range hist {
		hasX := slices.ContainsFunc(r.Participants, func(p string) bool { return strings.Contains(p, "/org/orgx/") })
		if !r.Committed || hasX != (r.Round == 2 || r.Round == 3) {
			t.Errorf("round %d: committed %v, participants %v", r.Round, r.Committed, r.Participants)
		}
	}
	if p := hist[3].Parent; p == nil || *p != 1 {
		t.Errorf("round 4 started from %v, want checkpoint 1", p)
	}
	if head, _ := srv.Params(); head != 5 {
		t.Errorf("head %d, want 5", head)
	}
	st, err := srv.Erasures("orgx")
	if err != nil || len(st) != 1 || st[0].Retrained != 2 || st[0].Head != 5 {
		t.Errorf("status: %+v, %v", st, err)
	}
	resp, err := pb.NewAdminClient(dial(t, srv.Addr, alice, f)).ErasureStatus(ctx, &pb.ErasureStatusRequest{})
	if err != nil || len(resp.GetErasures()) != 1 || resp.GetErasures()[0].GetRoundsRetrained() != 2 {
		t.Errorf("ErasureStatus: %v, %v", resp, err)
	}
	if _, _, err := download(ctx, dial(t, srv.Addr, reader, f), "triage", 5); err != nil {
		t.Errorf("the retrained model: %v", err)
	}

	// The receipt: in the audit log, signed by the server.
	var receipt *policy.Event
	for _, ev := range auditEvents(t, ctx, dial(t, srv.Addr, alice, f)) {
		if ev.Type == policy.EventErasure && ev.Details["kind"] == "receipt" {
			receipt = &ev
		}
	}
	if receipt == nil {
		t.Fatal("no receipt in the audit log")
	}
	rc, err := server.VerifyReceipt([]byte(receipt.Details["receipt"]), e.GetSignature(), srv.Identity.Key.Public())
	if err != nil || rc.Org != "orgx" || rc.RolledBackTo != 1 || len(rc.Remains) == 0 || !strings.Contains(strings.Join(rc.Remains, " "), "physical disk blocks") {
		t.Errorf("receipt: %+v, %v", rc, err)
	}
	if string(e.GetReceipt()) != receipt.Details["receipt"] {
		t.Error("the status's receipt is not the audit log's")
	}

	// After the server stops: the log verifies, and the tainted checkpoints are gone.
	srv.Close()
	keyFile := filepath.Join(dir, "keys", "master.key")
	db, err := store.Open(store.Options{Dir: filepath.Join(dir, "server"), KeyFile: keyFile, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := policy.VerifyLog(db, srv.Identity.Key.Public()); err != nil {
		t.Errorf("audit verify: %v", err)
	}
	db.Scan([]byte("task/triage/ckpt"), func(k, _ []byte) error {
		if strings.HasSuffix(string(k), "/00000000000000000002") || strings.HasSuffix(string(k), "/00000000000000000003") {
			t.Errorf("%s is left", k)
		}
		return nil
	})
	db.Close()
	if _, err := server.OpenCheckpoint(filepath.Join(dir, "server"), keyFile, "triage", 2); !errors.Is(err, server.ErrTainted) {
		t.Errorf("offline checkpoint 2: %v", err)
	}
	if c, err := server.OpenCheckpoint(filepath.Join(dir, "server"), keyFile, "triage", 0); err != nil || c.Round != 5 {
		t.Errorf("offline latest checkpoint: %v", err)
	}
}

// TestEraseOrgResumes: an erasure interrupted after its rollback is finished by the next
// start of the server: the tainted checkpoints are shredded, the receipt written, and the
// rollback holds.
func TestEraseOrgResumes(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.StartServer(server.Config{Task: testTask(2, 3)}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wg, errs := startClients(t, ctx, f, srv.Addr, partition(3, 40))
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
	server.SimulateEraseCrash(true)
	_, err = srv.EraseOrg("orgc", "fedweave://consortium/org/orga/admin/alice")
	server.SimulateEraseCrash(false)
	if err == nil {
		t.Fatal("the simulated crash did not happen")
	}
	srv.Close()

	again, err := f.StartServer(server.Config{Task: testTask(2, 3)}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer again.Close()
	st, err := again.Erasures("orgc")
	if err != nil || len(st) != 1 {
		t.Fatalf("erasures: %+v, %v", st, err)
	}
	e := st[0]
	if e.State != "done" || !slices.Equal(e.Tainted, []uint64{1, 2}) || !slices.Equal(e.Shredded, []uint64{1, 2}) ||
		e.RolledBackTo != 0 || e.Retrain != 2 || e.Head != 0 || len(e.Receipt) == 0 {
		t.Errorf("the resumed erasure: %+v", e)
	}
	if _, err := server.VerifyReceipt(e.Receipt, e.Signature, again.Identity.Key.Public()); err != nil {
		t.Error(err)
	}
	select {
	case <-again.Done():
		t.Error("the task counts as complete after its rounds were rolled back")
	default:
	}
}

// TestRetention: with retention.checkpoints 2, only the two newest committed checkpoints (and
// checkpoint 0) stay; the older ones are gone, their keys shredded, and the audit log says so.
func TestRetention(t *testing.T) {
	dir := t.TempDir()
	f, err := servertest.NewFederation(dir, "consortium")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.StartServer(server.Config{Task: testTask(4, 2), Retention: server.RetentionConfig{Checkpoints: 2}}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	wg, _ := startClients(t, ctx, f, srv.Addr, partition(2, 40))
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	reader, _ := f.Identity("orga", pki.RoleReader, "r")
	conn := dial(t, srv.Addr, reader, f)
	for r, want := range map[uint64]codes.Code{1: codes.NotFound, 2: codes.NotFound, 3: codes.OK, 4: codes.OK} {
		if _, _, err := download(ctx, conn, "triage", r); status.Code(err) != want {
			t.Errorf("download %d: %v, want %v", r, err, want)
		}
	}
	var rounds []string
	for _, ev := range auditEvents(t, ctx, dial(t, srv.Addr, mustAdmin(t, f), f)) {
		if ev.Type == policy.EventErasure && ev.Details["kind"] == "retention" {
			rounds = append(rounds, ev.Details["rounds"])
		}
	}
	if strings.Join(rounds, ",") != "1,2" {
		t.Errorf("retention events: %q", rounds)
	}
}

func mustAdmin(t *testing.T, f *servertest.Federation) *pki.Identity {
	t.Helper()
	id, err := f.Identity("orga", pki.RoleAdmin, "alice")
	if err != nil {
		t.Fatal(err)
	}
	return id
}
