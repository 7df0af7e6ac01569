package policy

import (
	"bytes"
	"errors"
	"strings"
	"sync"
	"testing"
)

func TestPolicyStore(t *testing.T) {
	st := newTestStore(t)
	log := NewAuditLog(st, testSigner())
	ps, err := NewPolicyStore(st, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := ps.Current(); !errors.Is(err, ErrNoVersion) {
		t.Fatalf("Current() of an empty store: %v", err)
	}
	const admin = "fedweave://acme/org/hospital-a/admin/alice"

	v1, err := ps.Apply(DefaultPolicies().Text(), admin)
	if err != nil {
		t.Fatal(err)
	}
	if v1.Number != 1 || v1.Author != admin || v1.Change != "apply" || v1.Policies.Len() != DefaultPolicies().Len() {
		t.Errorf("v1 = %+v", v1)
	}

	// A set with a typo is refused and changes nothing.
	typo := []byte("@id(\"x\")\nforbid (principal, action, resource)\nwhen { resource.taintd };\n")
	_, err = ps.Apply(typo, admin)
	var verr *ValidationError
	if !errors.As(err, &verr) || !strings.Contains(err.Error(), "3:17: policy \"x\": attribute `taintd`") {
		t.Errorf("Apply of a typo: %v", err)
	}
	if cur, err := ps.Current(); err != nil || cur.Number != 1 {
		t.Errorf("after a refused Apply, Current() = %+v, %v", cur, err)
	}

	v2, err := ps.Remove("forbid-tainted-models", admin)
	if err != nil {
		t.Fatal(err)
	}
	if v2.Number != 2 || v2.Change != "remove" || v2.Removed != "forbid-tainted-models" || v2.Policies.Len() != v1.Policies.Len()-1 {
		t.Errorf("v2 = %+v", v2)
	}
	if _, err := ps.Remove("nosuch", admin); err == nil {
		t.Error("removing a policy that is not there succeeded")
	}

	v3, err := ps.Rollback(1, admin)
	if err != nil {
		t.Fatal(err)
	}
	if v3.Number != 3 || v3.Change != "rollback" || v3.From != 1 || v3.SHA256 != v1.SHA256 || !bytes.Equal(v3.Policies.Text(), v1.Policies.Text()) {
		t.Errorf("v3 = %+v", v3)
	}
	if _, err := ps.Rollback(9, admin); !errors.Is(err, ErrNoVersion) {
		t.Errorf("Rollback(9): %v", err)
	}

	list, err := ps.List()
	if err != nil || len(list) != 3 {
		t.Fatalf("List() = %d versions, %v", len(list), err)
	}
	for i, v := range list {
		if v.Number != uint64(i+1) {
			t.Errorf("List()[%d] is version %d", i, v.Number)
		}
	}
	got, err := ps.Get(2)
	if err != nil || got.SHA256 != v2.SHA256 || got.Policies.Len() != v2.Policies.Len() {
		t.Errorf("Get(2) = %+v, %v", got, err)
	}

	// Each change is in the audit log, and the log verifies.
	entries, err := log.Entries(0, 3)
	if err != nil {
		t.Fatal(err)
	}
	for i, want := range []string{"apply", "remove", "rollback"} {
		ev := entries[i].Event
		if ev.Type != EventPolicyChange || ev.Principal != admin || ev.Details["change"] != want || ev.Details["version"] != []string{"1", "2", "3"}[i] {
			t.Errorf("audit entry %d = %+v", i, ev)
		}
	}
	if entries[1].Event.Details["removed"] != "forbid-tainted-models" || entries[2].Event.Details["from"] != "1" {
		t.Errorf("audit details: %+v, %+v", entries[1].Event.Details, entries[2].Event.Details)
	}
	if n, _ := log.Size(); n != 3 {
		t.Errorf("the log holds %d entries, want 3 (refused changes are not logged)", n)
	}
	if _, err := log.Checkpoint(); err != nil {
		t.Fatal(err)
	}
	if _, err := VerifyLog(st, testSigner().Public()); err != nil {
		t.Error(err)
	}

	// The version in force drives an Authorizer.
	a, err := New(nil, v2.Policies, mustEntities(t, exampleFederation))
	if err != nil {
		t.Fatal(err)
	}
	req := Request{Principal: mustPrincipal(t, "fedweave://acme/org/hospital-a/reader/r"), Action: "Infer", Resource: Ref{"Checkpoint", "triage-v3-r7"}}
	if d := a.Decide(req); !d.Allow {
		t.Errorf("without forbid-tainted-models: %v", d)
	}
	cur, _ := ps.Current()
	if err := a.SetPolicies(cur.Policies); err != nil {
		t.Fatal(err)
	}
	if d := a.Decide(req); d.String() != "DENY forbid-tainted-models" {
		t.Errorf("after the rollback: %v", d)
	}
}

// Concurrent changes and appends each get their own version and index.
func TestPolicyStoreConcurrent(t *testing.T) {
	st := newTestStore(t)
	log := NewAuditLog(st, testSigner())
	ps, err := NewPolicyStore(st, nil, log)
	if err != nil {
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	for range 4 {
		wg.Go(func() {
			for range 5 {
				if _, err := ps.Apply(DefaultPolicies().Text(), "fedweave://acme/org/a/admin/x"); err != nil {
					t.Error(err)
				}
				if _, err := log.Append(Event{Type: EventRound}); err != nil {
					t.Error(err)
				}
			}
		})
	}
	wg.Wait()
	if cur, err := ps.Current(); err != nil || cur.Number != 20 {
		t.Errorf("Current() = %d, %v; want version 20", cur.Number, err)
	}
	if n, _ := log.Size(); n != 40 {
		t.Errorf("log size %d, want 40", n)
	}
	if _, err := VerifyLog(st, testSigner().Public()); err != nil {
		t.Error(err)
	}
	if _, err := NewPolicyStore(st, nil, NewAuditLog(newTestStore(t), nil)); err == nil {
		t.Error("a policy store with a log in another store")
	}
}
