package policy

import (
	"fmt"
	"testing"
	"time"
)

// benchFederation has 10,000 entities: 1 federation, 200 orgs (150 members), 99 tasks,
// 2,500 models and 7,200 checkpoints.
func benchFederation() Federation {
	f := Federation{Name: "acme"}
	for i := range 200 {
		f.Orgs = append(f.Orgs, Org{Name: fmt.Sprintf("org-%d", i), Region: "eu", Member: i < 150, Consent: []string{"diagnosis"}})
	}
	for i := range 99 {
		f.Tasks = append(f.Tasks, Task{Name: fmt.Sprintf("task-%d", i), Purpose: "diagnosis", Modalities: []string{"text", "image", "tabular"}})
	}
	for i := range 2500 {
		f.Models = append(f.Models, Model{Name: fmt.Sprintf("model-%d", i), Task: fmt.Sprintf("task-%d", i%99), Round: int64(i), Released: i%2 == 0})
	}
	for i := range 7200 {
		f.Checkpoints = append(f.Checkpoints, ModelCheckpoint{Name: fmt.Sprintf("ckpt-%d", i), Model: fmt.Sprintf("model-%d", i%2500),
			Task: fmt.Sprintf("task-%d", i%2500%99), Round: int64(i), Released: true, Tainted: i%7 == 0})
	}
	return f
}

// BenchmarkDecide measures one decision with the default policy set and 10,000 entities,
// over a mix of requests: a member client joining a task, a reader using a released model, a
// reader refused a tainted checkpoint, and a non-member refused.
func BenchmarkDecide(b *testing.B) {
	e := mustEntities(b, benchFederation())
	if e.Len() != 10000 {
		b.Fatalf("%d entities, want 10000", e.Len())
	}
	a, err := New(nil, nil, e)
	if err != nil {
		b.Fatal(err)
	}
	reqs := []Request{
		{Principal: mustPrincipal(b, "fedweave://acme/org/org-7/client/n"), Action: "Join", Resource: Ref{"Task", "task-42"},
			Context: map[string]any{"modalities": []string{"text", "image"}}},
		{Principal: mustPrincipal(b, "fedweave://acme/org/org-9/reader/r"), Action: "Infer", Resource: Ref{"Model", "model-1234"}},
		{Principal: mustPrincipal(b, "fedweave://acme/org/org-9/reader/r"), Action: "DownloadModel", Resource: Ref{"Checkpoint", "ckpt-700"}},
		{Principal: mustPrincipal(b, "fedweave://acme/org/org-170/client/n"), Action: "SubmitUpdate", Resource: Ref{"Task", "task-3"}},
	}
	want := []bool{true, true, false, false}
	for i, r := range reqs {
		if d := a.Decide(r); d.Allow != want[i] || len(d.Errors) > 0 {
			b.Fatalf("request %d: %v %q", i, d, d.Errors)
		}
	}
	b.ReportAllocs()
	start := time.Now()
	n := 0
	for b.Loop() {
		a.Decide(reqs[n%len(reqs)])
		n++
	}
	b.ReportMetric(float64(time.Since(start).Nanoseconds())/1e3/float64(n), "µs/decision")
}
