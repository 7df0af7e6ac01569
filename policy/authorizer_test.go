package policy

import (
	"fmt"
	"slices"
	"strings"
	"sync"
	"testing"
)

// TestAuthorizationMatrix decides every role x action x resource of the example federation
// with the default policies: the cells in allowed are allowed, every other cell is denied.
func TestAuthorizationMatrix(t *testing.T) {
	a, err := New(nil, nil, mustEntities(t, exampleFederation))
	if err != nil {
		t.Fatal(err)
	}
	principals := []string{
		"fedweave://acme/org/hospital-a/client/node1",
		"fedweave://acme/org/hospital-b/client/node2",
		"fedweave://acme/org/clinic-c/client/node3", // valid certificate, not a member
		"fedweave://acme/org/hospital-a/reader/app",
		"fedweave://acme/org/clinic-c/reader/app",
		"fedweave://acme/org/hospital-a/admin/alice",
		"fedweave://acme/org/clinic-c/admin/carol",
		"fedweave://acme/org/hospital-a/server/agg",
		"fedweave://acme/org/nowhere/client/n", // an org the data does not know
		"fedweave://other/org/hospital-a/client/node1",
	}
	resources := []Ref{
		{"Task", "triage"}, {"Task", "unknown"},
		{"Model", "triage-v3"}, {"Model", "triage-v4"}, {"Checkpoint", "triage-v3-r7"},
		{"Federation", "acme"}, {"Federation", "other"},
		{"Org", "hospital-a"}, {"Org", "clinic-c"},
	}
	allowed := map[string][]string{}
	allow := func(principal string, actions []string, resources ...string) {
		for _, act := range actions {
			for _, r := range resources {
				allowed[principal] = append(allowed[principal], act+" "+r)
			}
		}
	}
	train := []string{"Join", "SubmitUpdate", "ReportEval"}
	use := []string{"DownloadModel", "Infer", "Explain"}
	admin := []string{"ReadPolicy", "ChangePolicy", "ReadAudit", "ManageRetention", "RequestErasure"}
	allow("fedweave://acme/org/hospital-a/client/node1", train, `Task::"triage"`)
	allow("fedweave://acme/org/hospital-b/client/node2", train, `Task::"triage"`)
	allow("fedweave://acme/org/hospital-a/reader/app", use, `Model::"triage-v3"`)
	allow("fedweave://acme/org/hospital-a/admin/alice", admin, `Federation::"acme"`)
	allow("fedweave://acme/org/hospital-a/admin/alice", []string{"RequestErasure"}, `Org::"hospital-a"`, `Org::"clinic-c"`)

	actions := DefaultSchema().Actions()
	cells := 0
	for _, uri := range principals {
		p := mustPrincipal(t, uri)
		for _, act := range actions {
			for _, r := range resources {
				cells++
				want := slices.Contains(allowed[uri], act+" "+r.String())
				name := fmt.Sprintf("%s/%s/%s", strings.TrimPrefix(uri, "fedweave://"), act, r)
				d := a.Decide(Request{Principal: p, Action: act, Resource: r})
				if d.Allow != want {
					t.Errorf("%s: got %v, want allow=%v", name, d, want)
				}
				if d.Allow && len(d.Reasons) == 0 {
					t.Errorf("%s: allowed without a reason", name)
				}
			}
		}
	}
	if cells != len(principals)*11*len(resources) {
		t.Errorf("decided %d cells", cells)
	}
}

func TestDecisionReasons(t *testing.T) {
	fed := exampleFederation
	fed.Orgs = append(slices.Clone(fed.Orgs), Org{Name: "lab-d", Region: "eu", Member: true, Consent: []string{"research"}})
	a, err := New(nil, nil, mustEntities(t, fed))
	if err != nil {
		t.Fatal(err)
	}
	tests := []struct {
		name      string
		principal string
		action    string
		resource  Ref
		context   map[string]any
		want      string // Decision.String()
		errs      string // in Errors
	}{
		{name: "member client joins", principal: "fedweave://acme/org/hospital-a/client/n1", action: "Join", resource: Ref{"Task", "triage"},
			want: "ALLOW member-clients-train"},
		{name: "non-member client", principal: "fedweave://acme/org/clinic-c/client/n3", action: "Join", resource: Ref{"Task", "triage"},
			want: "DENY"},
		{name: "reader of released model", principal: "fedweave://acme/org/hospital-b/reader/r", action: "Infer", resource: Ref{"Model", "triage-v3"},
			want: "ALLOW member-readers-use-released-models"},
		{name: "reader of tainted checkpoint", principal: "fedweave://acme/org/hospital-b/reader/r", action: "DownloadModel", resource: Ref{"Checkpoint", "triage-v3-r7"},
			want: "DENY forbid-tainted-models"},
		{name: "reader cannot submit", principal: "fedweave://acme/org/hospital-a/reader/r", action: "SubmitUpdate", resource: Ref{"Task", "triage"},
			want: "DENY", errs: "a Reader cannot SubmitUpdate: only a Client can"},
		{name: "purpose not consented", principal: "fedweave://acme/org/lab-d/client/n", action: "Join", resource: Ref{"Task", "triage"},
			want: "DENY forbid-training-without-consent"},
		{name: "modalities of the task", principal: "fedweave://acme/org/hospital-b/client/n", action: "Join", resource: Ref{"Task", "triage"},
			context: map[string]any{"modalities": []string{"text", "image"}}, want: "ALLOW member-clients-train"},
		{name: "modality outside the task", principal: "fedweave://acme/org/hospital-b/client/n", action: "Join", resource: Ref{"Task", "triage"},
			context: map[string]any{"modalities": []any{"text", "audio"}}, want: "DENY forbid-modalities-outside-task"},
		{name: "context of the wrong type", principal: "fedweave://acme/org/hospital-b/client/n", action: "Join", resource: Ref{"Task", "triage"},
			context: map[string]any{"modalities": "text"}, want: "DENY", errs: "context"},
		{name: "context not in the schema", principal: "fedweave://acme/org/hospital-b/client/n", action: "Join", resource: Ref{"Task", "triage"},
			context: map[string]any{"round": 3}, want: "DENY", errs: "context"},
		{name: "context that has no cedar value", principal: "fedweave://acme/org/hospital-b/client/n", action: "Join", resource: Ref{"Task", "triage"},
			context: map[string]any{"modalities": 1.5}, want: "DENY", errs: "not an integer"},
		{name: "unknown action", principal: "fedweave://acme/org/hospital-a/admin/a", action: "Frobnicate", resource: Ref{"Federation", "acme"},
			want: "DENY", errs: `unknown action "Frobnicate"`},
		{name: "action group is not an action", principal: "fedweave://acme/org/hospital-a/admin/a", action: "Administer", resource: Ref{"Federation", "acme"},
			want: "DENY", errs: "unknown action"},
		{name: "wrong resource type", principal: "fedweave://acme/org/hospital-a/client/n1", action: "Join", resource: Ref{"Model", "triage-v3"},
			want: "DENY", errs: "Join is not done to a Model resource, but to a Task"},
		{name: "another federation's principal", principal: "fedweave://other/org/hospital-a/client/n1", action: "Join", resource: Ref{"Task", "triage"},
			want: "DENY", errs: "registered with"},
		{name: "missing model", principal: "fedweave://acme/org/hospital-a/reader/r", action: "Infer", resource: Ref{"Model", "nosuch"},
			want: "DENY", errs: "member-readers-use-released-models"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			d := a.Decide(Request{Principal: mustPrincipal(t, tt.principal), Action: tt.action, Resource: tt.resource, Context: tt.context})
			if d.String() != tt.want {
				t.Errorf("got %v, want %s (errors %q)", d, tt.want, d.Errors)
			}
			if got := strings.Join(d.Errors, "\n"); tt.errs != "" && !strings.Contains(got, tt.errs) || tt.errs == "" && got != "" {
				t.Errorf("errors %q, want %q", got, tt.errs)
			}
		})
	}
}

// A forbid that cannot be evaluated denies what a permit allows.
func TestForbidInErrorFailsClosed(t *testing.T) {
	ps, err := ParsePolicies("p.cedar", []byte(`
@id("readers")
permit (principal is Reader, action == Action::"Infer", resource);
@id("tainted")
forbid (principal, action == Action::"Infer", resource) when { resource.tainted };
`))
	if err != nil {
		t.Fatal(err)
	}
	a, err := New(nil, ps, mustEntities(t, exampleFederation))
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Principal: mustPrincipal(t, "fedweave://acme/org/hospital-a/reader/r"), Action: "Infer", Resource: Ref{"Model", "triage-v3"}}
	if d := a.Decide(req); d.String() != "ALLOW readers" {
		t.Errorf("known model: %v %q", d, d.Errors)
	}
	req.Resource.ID = "nosuch"
	d := a.Decide(req)
	if d.String() != "DENY tainted" || len(d.Errors) != 1 || !strings.HasPrefix(d.Errors[0], "tainted: ") {
		t.Errorf("unknown model: %v %q, want DENY tainted with its error", d, d.Errors)
	}
}

// Decisions run while the policies and entities are swapped: each sees one state or the
// other (run with -race).
func TestSwapWhileDeciding(t *testing.T) {
	a, err := New(nil, nil, mustEntities(t, exampleFederation))
	if err != nil {
		t.Fatal(err)
	}
	left := exampleFederation
	left.Orgs = []Org{{Name: "hospital-a", Region: "eu"}, exampleFederation.Orgs[1], exampleFederation.Orgs[2]}
	without := mustEntities(t, left)
	with := mustEntities(t, exampleFederation)
	deny, err := ParsePolicies("none.cedar", []byte(`@id("nobody") forbid (principal, action, resource);`))
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Principal: mustPrincipal(t, "fedweave://acme/org/hospital-a/client/n1"), Action: "Join", Resource: Ref{"Task", "triage"}}
	var wg sync.WaitGroup
	stop := make(chan struct{})
	for range 4 {
		wg.Go(func() {
			for {
				select {
				case <-stop:
					return
				default:
				}
				d := a.Decide(req)
				if len(d.Errors) > 0 || d.Allow && d.Reasons[0] != "member-clients-train" {
					t.Errorf("decision %v %q", d, d.Errors)
					return
				}
			}
		})
	}
	for i := range 200 {
		e, ps := with, DefaultPolicies()
		if i%2 == 1 {
			e = without
		}
		if i%3 == 2 {
			ps = deny
		}
		if err := a.SetEntities(e); err != nil {
			t.Fatal(err)
		}
		if err := a.SetPolicies(ps); err != nil {
			t.Fatal(err)
		}
	}
	close(stop)
	wg.Wait()
	if err := a.SetPolicies(DefaultPolicies()); err != nil {
		t.Fatal(err)
	}
	if err := a.SetEntities(without); err != nil {
		t.Fatal(err)
	}
	if d := a.Decide(req); d.Allow {
		t.Errorf("after hospital-a left: %v", d)
	}
}

func TestActionForMethod(t *testing.T) {
	for method, want := range map[string]string{
		"/fedweave.v1.Federation/Join":          "Join",
		"/fedweave.v1.Federation/Participate":   "SubmitUpdate",
		"/fedweave.v1.Federation/DescribeTask":  "Join",
		"/fedweave.v1.Federation/DownloadModel": "DownloadModel",
		"/fedweave.v1.Admin/ListPolicies":       "ReadPolicy",
		"/fedweave.v1.Admin/GetPolicy":          "ReadPolicy",
		"/fedweave.v1.Admin/CheckPolicy":        "ReadPolicy",
		"/fedweave.v1.Admin/ApplyPolicy":        "ChangePolicy",
		"/fedweave.v1.Admin/RemovePolicy":       "ChangePolicy",
		"/fedweave.v1.Admin/RollbackPolicy":     "ChangePolicy",
		"/fedweave.v1.Admin/TailAudit":          "ReadAudit",
		"/fedweave.v1.Admin/EraseOrg":           "RequestErasure",
		"/fedweave.v1.Admin/ErasureStatus":      "ReadAudit",
		"/fedweave.v1.Inference/Predict":        "Infer",
		"/fedweave.v1.Inference/Explain":        "Explain",
	} {
		got, ok := ActionForMethod(method)
		if !ok || got != want {
			t.Errorf("ActionForMethod(%s) = %q, %v", method, got, ok)
		}
		if !slices.Contains(DefaultSchema().Actions(), got) {
			t.Errorf("%s maps to %s, which the schema lacks", method, got)
		}
	}
	if _, ok := ActionForMethod("/fedweave.v1.Federation/Nosuch"); ok {
		t.Error("an unknown method has an action")
	}
}

func TestAuditEvent(t *testing.T) {
	p := mustPrincipal(t, "fedweave://acme/org/hospital-a/reader/r")
	ev, ok := AuditEvent(Request{Principal: p, Action: "Infer", Resource: Ref{"Model", "m"}}, Decision{Allow: true, Reasons: []string{"x"}})
	if ok {
		t.Errorf("an allowed Infer is logged: %+v", ev)
	}
	ev, ok = AuditEvent(Request{Principal: p, Action: "DownloadModel", Resource: Ref{"Model", "m"}}, Decision{Allow: true, Reasons: []string{"x"}})
	if !ok || ev.Type != EventModelDownload || ev.Decision != "allow" || ev.Resource != `Model::"m"` || ev.Details["policies"] != "x" {
		t.Errorf("download: %+v", ev)
	}
	ev, ok = AuditEvent(Request{Principal: p, Action: "Infer", Resource: Ref{"Model", "m"}}, Decision{Reasons: []string{"forbid-tainted-models"}})
	if !ok || ev.Type != EventDenial || ev.Principal != p.URI() || ev.Details["policies"] != "forbid-tainted-models" {
		t.Errorf("denial: %+v", ev)
	}
}

func TestPrincipalRef(t *testing.T) {
	for uri, want := range map[string]string{
		"fedweave://acme/org/hospital-a/client/node1": `Client::"hospital-a/node1"`,
		"fedweave://acme/org/hospital-a/admin/alice":  `Admin::"hospital-a/alice"`,
		"fedweave://acme/org/b/reader/app":            `Reader::"b/app"`,
		"fedweave://acme/org/acme/server/agg":         `Server::"acme/agg"`,
	} {
		if got := PrincipalRef(mustPrincipal(t, uri)).String(); got != want {
			t.Errorf("PrincipalRef(%s) = %s, want %s", uri, got, want)
		}
	}
}
