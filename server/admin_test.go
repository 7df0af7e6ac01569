package server_test

import (
	"context"
	"errors"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/policy"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

const suspendOrgB = `// orgb trains no more until further notice.
@id("suspend-orgb")
forbid (principal, action in Action::"Train", resource)
when { principal.org == Org::"orgb" };
`

// TestPolicyChangeTakesEffect: a forbid applied through the admin service denies orgb's next
// Join at once and ends its open round channel before the next cohort; the change is a new
// version, a rollback restores the old set as another, each is in the audit log, and the log
// verifies with the server's key after the server stops.
func TestPolicyChangeTakesEffect(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	srv, err := f.StartServer(server.Config{Task: testTask(1, 3)}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	ids := map[string]*pki.Identity{}
	for _, org := range []string{"orga", "orgb"} {
		if ids[org], err = f.Identity(org, pki.RoleClient, "node"); err != nil {
			t.Fatal(err)
		}
	}
	alice, err := f.Identity("orga", pki.RoleAdmin, "alice")
	if err != nil {
		t.Fatal(err)
	}
	adminConn := dial(t, srv.Addr, alice, f)
	admin := pb.NewAdminClient(adminConn)
	join := func(org string) error {
		_, err := pb.NewFederationClient(dial(t, srv.Addr, ids[org], f)).Join(ctx, &pb.JoinRequest{Task: "triage", Records: 1})
		return err
	}
	if err := join("orgb"); err != nil {
		t.Fatalf("orgb before the change: %v", err)
	}

	// orgb's round channel is open while the server waits for a cohort (it needs 3).
	stream, err := pb.NewFederationClient(dial(t, srv.Addr, ids["orgb"], f)).Participate(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&pb.ClientMessage{Body: &pb.ClientMessage_Hello{Hello: &pb.Hello{Task: "triage"}}}); err != nil {
		t.Fatal(err)
	}
	for deadline := time.Now().Add(10 * time.Second); srv.Connected() != 1; time.Sleep(10 * time.Millisecond) {
		if time.Now().After(deadline) {
			t.Fatal("orgb's round channel did not open")
		}
	}
	rctx, stopRun := context.WithCancel(ctx)
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(rctx) }()

	v, err := admin.ApplyPolicy(ctx, &pb.ApplyPolicyRequest{Text: []byte(suspendOrgB)})
	if err != nil {
		t.Fatal(err)
	}
	if v.GetNumber() != 2 || v.GetChange() != "apply" || v.GetPolicies() != 8 || !strings.HasSuffix(v.GetAuthor(), "/admin/alice") {
		t.Errorf("applied: %+v", v)
	}
	err = join("orgb")
	if status.Code(err) != codes.PermissionDenied || !strings.Contains(status.Convert(err).Message(), "denied by policy suspend-orgb") {
		t.Errorf("orgb after the forbid: %v", err)
	}
	if err := join("orga"); err != nil {
		t.Errorf("orga after orgb's suspension: %v", err)
	}
	if _, err := stream.Recv(); status.Code(err) != codes.PermissionDenied {
		t.Errorf("orgb's open round channel: %v, want PermissionDenied", err)
	}
	stopRun()
	if err := <-ran; !errors.Is(err, context.Canceled) {
		t.Errorf("Run: %v", err)
	}

	// A set that would lock the admins out is refused; nothing changes.
	_, err = admin.ApplyPolicy(ctx, &pb.ApplyPolicyRequest{Text: []byte(suspendOrgB), Replace: true})
	if status.Code(err) != codes.FailedPrecondition {
		t.Errorf("a lock-out: %v", err)
	}
	_, err = admin.ApplyPolicy(ctx, &pb.ApplyPolicyRequest{Text: []byte(`@id("x") forbid (principal, action, resource) when { resource.taintd };`)})
	if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), "taintd") {
		t.Errorf("a typo: %v", err)
	}

	v, err = admin.RollbackPolicy(ctx, &pb.RollbackPolicyRequest{Version: 1})
	if err != nil {
		t.Fatal(err)
	}
	if v.GetNumber() != 3 || v.GetChange() != "rollback" || v.GetFrom() != 1 || v.GetPolicies() != 7 {
		t.Errorf("rolled back: %+v", v)
	}
	if err := join("orgb"); err != nil {
		t.Errorf("orgb after the rollback: %v", err)
	}
	list, err := admin.ListPolicies(ctx, &pb.ListPoliciesRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if len(list.GetVersions()) != 3 || list.GetCurrent().GetNumber() != 3 || slices.Contains(list.GetIds(), "suspend-orgb") {
		t.Errorf("list: current %v, %d versions, ids %v", list.GetCurrent(), len(list.GetVersions()), list.GetIds())
	}
	got, err := admin.GetPolicy(ctx, &pb.GetPolicyRequest{Id: "suspend-orgb", Version: 2})
	if err != nil || got.GetText() != suspendOrgB {
		t.Errorf("version 2's suspend-orgb: %q, %v", got.GetText(), err)
	}

	// The audit log: the three versions, orgb's denial with the forbid that decided it, the
	// end of its round channel, and the joins.
	var changes []string
	denied := 0
	for _, ev := range auditEvents(t, ctx, adminConn) {
		switch ev.Type {
		case policy.EventPolicyChange:
			changes = append(changes, ev.Details["version"]+":"+ev.Details["change"])
		case policy.EventDenial:
			if strings.Contains(ev.Principal, "/orgb/") && ev.Details["policies"] == "suspend-orgb" {
				denied++
			}
		}
	}
	if !slices.Equal(changes, []string{"1:apply", "2:apply", "3:rollback"}) {
		t.Errorf("policy changes in the audit log: %v", changes)
	}
	if denied != 2 { // the Join, and the round channel
		t.Errorf("%d denials of orgb by suspend-orgb in the audit log, want 2", denied)
	}

	// Stopped, the server has signed the whole log; it verifies with its certificate's key.
	pub := srv.Identity.Key.Public()
	srv.Close()
	kf, err := servertest.KeyFile(filepath.Join(f.Dir, "keys"))
	if err != nil {
		t.Fatal(err)
	}
	st, err := store.Open(store.Options{Dir: filepath.Join(f.Dir, "server"), KeyFile: kf, ReadOnly: true})
	if err != nil {
		t.Fatal(err)
	}
	defer st.Close()
	rep, err := policy.VerifyLog(st, pub)
	if err != nil {
		t.Fatalf("audit verify: %v", err)
	}
	if rep.Checkpoints == 0 || rep.Unsigned != 0 || rep.Size < 8 {
		t.Errorf("audit verify: %+v", rep)
	}
}

// TestPolicyFromFiles: a server with the policies and entity data of examples/policies decides
// with them, and with its own task's purpose in place of the file's.
func TestPolicyFromFiles(t *testing.T) {
	f, err := servertest.NewFederation(t.TempDir(), "acme")
	if err != nil {
		t.Fatal(err)
	}
	task := testTask(1, 2)
	task.Purpose = "marketing" // hospital-a consents to diagnosis and research only
	srv, err := f.StartServer(server.Config{Task: task, Policy: server.PolicyConfig{
		Dir: "../examples/policies", Entities: "../examples/policies/entities.json",
	}}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	if err := srv.AddMembers("lab"); err == nil {
		t.Error("AddMembers with an entity file succeeded")
	}
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	for _, tc := range []struct {
		org    string
		code   codes.Code
		phrase string
	}{
		{"hospital-a", codes.PermissionDenied, "denied by policy forbid-training-without-consent"},
		{"hospital-b", codes.OK, ""},
		{"clinic-c", codes.PermissionDenied, "no policy permits this"},
	} {
		id, err := f.NonMemberIdentity(tc.org, pki.RoleClient, "node")
		if err != nil {
			t.Fatal(err)
		}
		_, err = pb.NewFederationClient(dial(t, srv.Addr, id, f)).Join(ctx, &pb.JoinRequest{Task: "triage", Records: 1})
		if status.Code(err) != tc.code || !strings.Contains(status.Convert(err).Message(), tc.phrase) {
			t.Errorf("%s joins: %v, want %v %q", tc.org, err, tc.code, tc.phrase)
		}
	}
}

func TestPolicyConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		p    server.PolicyConfig
		want string
	}{
		{server.PolicyConfig{Entities: "e.json", Members: []string{"a"}}, "policy.members: only without policy.entities"},
		{server.PolicyConfig{Members: []string{"a", "a"}}, "policy.members: a is listed twice"},
		{server.PolicyConfig{Members: []string{""}}, "policy.members: an empty org name"},
	} {
		cfg := server.Config{Federation: "f", Dir: "d", Task: testTask(1, 1), Policy: tc.p}
		cfg.Defaults()
		if err := cfg.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("%+v: %v, want %q", tc.p, err, tc.want)
		}
	}
	cfg := server.Config{Task: testTask(1, 1)}
	cfg.Defaults()
	if cfg.Task.Purpose != "research" {
		t.Errorf("default purpose %q", cfg.Task.Purpose)
	}
}
