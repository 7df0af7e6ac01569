package server_test

import (
	"context"
	"encoding/binary"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"math"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/policy"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// dial opens a gRPC connection to addr that speaks as id over mutual TLS.
func dial(t *testing.T, addr string, id *pki.Identity, f *servertest.Federation) *grpc.ClientConn {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(id, f.Pool(), "127.0.0.1"))))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return conn
}

// download fetches a committed model and returns its round and parameters.
func download(ctx context.Context, conn *grpc.ClientConn, task string, round uint64) (uint64, []float32, error) {
	stream, err := pb.NewFederationClient(conn).DownloadModel(ctx, &pb.DownloadRequest{Task: task, Round: round})
	if err != nil {
		return 0, nil, err
	}
	var data []byte
	var got uint64
	for i := uint32(0); ; i++ {
		m, err := stream.Recv()
		if err == io.EOF {
			break
		}
		if err != nil {
			return 0, nil, err
		}
		if m.GetIndex() != i || (i == 0 && (m.GetLayoutHash() == "" || len(m.GetModelSpec()) == 0)) {
			return 0, nil, fmt.Errorf("chunk %d: %+v", i, m)
		}
		got = m.GetRound()
		data = append(data, m.GetData()...)
	}
	params := make([]float32, len(data)/4)
	for i := range params {
		params[i] = math.Float32frombits(binary.LittleEndian.Uint32(data[4*i:]))
	}
	return got, params, nil
}

// auditEvents returns every entry of the server's audit log, read through the admin service.
func auditEvents(t *testing.T, ctx context.Context, conn *grpc.ClientConn) []policy.Event {
	t.Helper()
	resp, err := pb.NewAdminClient(conn).TailAudit(ctx, &pb.TailAuditRequest{N: 1000})
	if err != nil {
		t.Fatalf("tail the audit log: %v", err)
	}
	var out []policy.Event
	for _, e := range resp.GetEntries() {
		var ev policy.Event
		if err := json.Unmarshal(e.GetEvent(), &ev); err != nil {
			t.Fatal(err)
		}
		out = append(out, ev)
	}
	return out
}

// TestAuthorizationMatrix runs every action against a real server as every role, with real
// certificates over mutual TLS: each allowed cell must work, each denied cell must get
// PermissionDenied and be in the audit log. The server has committed one round, so that a
// released model exists.
func TestAuthorizationMatrix(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.StartServer(server.Config{Task: testTask(1, 1)}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wg, errs := startClients(t, ctx, f, srv.Addr, partition(1, 60))
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	committed, want := srv.Params()
	if committed != 1 {
		t.Fatalf("round %d committed, want 1", committed)
	}

	type role struct {
		name string
		id   func() (*pki.Identity, error)
	}
	roles := []role{
		{"member client", func() (*pki.Identity, error) { return f.Identity("orga", pki.RoleClient, "probe") }},
		{"non-member client", func() (*pki.Identity, error) { return f.NonMemberIdentity("outsider", pki.RoleClient, "node") }},
		{"member reader", func() (*pki.Identity, error) { return f.Identity("orga", pki.RoleReader, "app") }},
		{"non-member reader", func() (*pki.Identity, error) { return f.NonMemberIdentity("outsider", pki.RoleReader, "app") }},
		{"member admin", func() (*pki.Identity, error) { return f.Identity("orga", pki.RoleAdmin, "alice") }},
		{"non-member admin", func() (*pki.Identity, error) { return f.NonMemberIdentity("outsider", pki.RoleAdmin, "eve") }},
		{"server as client", func() (*pki.Identity, error) { return srv.Identity, nil }},
	}
	type action struct {
		name string
		do   func(ctx context.Context, conn *grpc.ClientConn, roleName string) error
	}
	actions := []action{
		{"Join", func(ctx context.Context, conn *grpc.ClientConn, _ string) error {
			_, err := pb.NewFederationClient(conn).Join(ctx, &pb.JoinRequest{Task: "triage", Records: 10,
				Modalities: []*pb.ModalityCount{{Modality: "text", Records: 10}}})
			return err
		}},
		{"Participate", func(ctx context.Context, conn *grpc.ClientConn, _ string) error {
			stream, err := pb.NewFederationClient(conn).Participate(ctx)
			if err != nil {
				return err
			}
			if err := stream.Send(&pb.ClientMessage{Body: &pb.ClientMessage_Hello{Hello: &pb.Hello{Task: "triage"}}}); err != nil && !errors.Is(err, io.EOF) {
				return err
			}
			m, err := stream.Recv()
			if err != nil {
				return err
			}
			if m.GetDone() == nil { // the task is complete: an admitted client hears so
				return fmt.Errorf("unexpected %v", m)
			}
			return nil
		}},
		{"DownloadModel", func(ctx context.Context, conn *grpc.ClientConn, _ string) error {
			round, got, err := download(ctx, conn, "triage", 0)
			if err != nil {
				return err
			}
			if round != 1 || !slices.Equal(got, want) {
				return fmt.Errorf("downloaded round %d, %d values, equal to the committed model: %v", round, len(got), slices.Equal(got, want))
			}
			return nil
		}},
		{"ListPolicies", func(ctx context.Context, conn *grpc.ClientConn, _ string) error {
			resp, err := pb.NewAdminClient(conn).ListPolicies(ctx, &pb.ListPoliciesRequest{})
			if err == nil && !slices.Contains(resp.GetIds(), "member-clients-train") {
				return fmt.Errorf("list: %v", resp.GetIds())
			}
			return err
		}},
		{"ApplyPolicy", func(ctx context.Context, conn *grpc.ClientConn, roleName string) error {
			id := "matrix-" + strings.ReplaceAll(roleName, " ", "-")
			_, err := pb.NewAdminClient(conn).ApplyPolicy(ctx, &pb.ApplyPolicyRequest{Text: []byte(
				`@id("` + id + `") forbid (principal, action == Action::"Infer", resource) when { resource.tainted };`)})
			return err
		}},
		{"TailAudit", func(ctx context.Context, conn *grpc.ClientConn, _ string) error {
			resp, err := pb.NewAdminClient(conn).TailAudit(ctx, &pb.TailAuditRequest{N: 3})
			if err == nil && len(resp.GetEntries()) != 3 {
				return fmt.Errorf("tail: %d entries", len(resp.GetEntries()))
			}
			return err
		}},
	}
	// allowed[role] lists the actions the default policies allow it.
	allowed := map[string][]string{
		"member client": {"Join", "Participate"},
		"member reader": {"DownloadModel"},
		"member admin":  {"ListPolicies", "ApplyPolicy", "TailAudit"},
	}

	denied := 0
	conns := map[string]*grpc.ClientConn{}
	for _, r := range roles {
		id, err := r.id()
		if err != nil {
			t.Fatal(err)
		}
		conns[r.name] = dial(t, srv.Addr, id, f)
		for _, a := range actions {
			allow := slices.Contains(allowed[r.name], a.name)
			if !allow {
				denied++
			}
			t.Run(r.name+"/"+a.name, func(t *testing.T) {
				ctx, cancel := context.WithTimeout(ctx, 20*time.Second)
				defer cancel()
				err := a.do(ctx, conns[r.name], r.name)
				switch {
				case allow && err != nil:
					t.Fatalf("allowed, but: %v", err)
				case !allow && status.Code(err) != codes.PermissionDenied:
					t.Fatalf("want PermissionDenied, got %v", err)
				case !allow && !strings.HasPrefix(status.Convert(err).Message(), "permission denied: "):
					t.Fatalf("the message does not say what was denied: %v", err)
				}
			})
		}
	}

	// What a denial tells the caller: the action, the resource and why, nothing of others.
	ctx2, cancel2 := context.WithTimeout(ctx, 20*time.Second)
	defer cancel2()
	_, err = pb.NewFederationClient(conns["non-member client"]).Join(ctx2, &pb.JoinRequest{Task: "triage"})
	if got, want := status.Convert(err).Message(), `permission denied: Join on Task::"triage": no policy permits this`; got != want {
		t.Errorf("non-member's Join: %q, want %q", got, want)
	}
	_, _, err = download(ctx2, conns["member reader"], "triage", 7)
	if status.Code(err) != codes.PermissionDenied {
		t.Errorf("a reader asked for a round that was never committed: %v", err)
	}
	_, err = pb.NewFederationClient(conns["server as client"]).Join(ctx2, &pb.JoinRequest{Task: "triage"})
	if msg := status.Convert(err).Message(); !strings.Contains(msg, "a Server cannot Join") {
		t.Errorf("the server's own certificate: %q", msg)
	}

	// Every denial is in the audit log, and so is every allowed join and download.
	events := auditEvents(t, ctx2, conns["member admin"])
	count := map[policy.EventType]int{}
	for _, ev := range events {
		count[ev.Type]++
		if ev.Type == policy.EventModelDownload && ev.Resource != `Model::"triage/1"` {
			t.Errorf("download event for %s", ev.Resource)
		}
	}
	if count[policy.EventDenial] < denied+2 {
		t.Errorf("%d denials in the audit log, want at least %d", count[policy.EventDenial], denied+2)
	}
	if count[policy.EventJoin] < 2 || count[policy.EventModelDownload] != 1 || count[policy.EventRound] != 1 || count[policy.EventPolicyChange] != 2 {
		t.Errorf("audit log counts: %v", count)
	}
	if n := srv.Connected(); n != 0 {
		t.Errorf("%d round channels open after the task", n)
	}
}

// TestSharingPolicyRefusesTerms: a client whose sharing policy excludes the task's purpose, or
// the federation, never joins: Run fails with ErrNotShared and the server sees no Join.
func TestSharingPolicyRefusesTerms(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	task := testTask(1, 1)
	task.Purpose = "marketing"
	srv, err := f.StartServer(server.Config{Task: task}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		org     string
		sharing client.SharingPolicy
		phrase  string
	}{
		{"orga", client.SharingPolicy{Purposes: []string{"research", "diagnosis"}}, `trains for "marketing"`},
		{"orgb", client.SharingPolicy{Federations: []string{"other"}}, `federation "consortium"`},
		{"orgc", client.SharingPolicy{Tasks: []string{"other"}}, `task "triage"`},
	} {
		id, err := f.Identity(tc.org, pki.RoleClient, "node")
		if err != nil {
			t.Fatal(err)
		}
		c, err := client.New(client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: f.Pool(),
			Source: client.DatasetSource(partition(1, 30)[0]), Sharing: &tc.sharing})
		if err != nil {
			t.Fatal(err)
		}
		if err := c.Run(ctx); !errors.Is(err, client.ErrNotShared) || !strings.Contains(err.Error(), tc.phrase) {
			t.Errorf("%s: Run = %v, want ErrNotShared saying %s", tc.org, err, tc.phrase)
		}
	}
	admin, err := f.Identity("orga", pki.RoleAdmin, "alice")
	if err != nil {
		t.Fatal(err)
	}
	for _, ev := range auditEvents(t, ctx, dial(t, srv.Addr, admin, f)) {
		if ev.Type == policy.EventJoin || ev.Type == policy.EventDenial {
			t.Errorf("the server saw a call of a client that its sharing policy holds back: %+v", ev)
		}
	}
	if n := srv.Connected(); n != 0 {
		t.Errorf("%d round channels open", n)
	}
}
