package policy_test

import (
	"crypto/ed25519"
	"fmt"
	"os"
	"path/filepath"

	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/policy"
)

// A server decides each call with the default policies over its federation's data, and logs
// what the audit log keeps.
func Example() {
	fed := policy.Federation{
		Name: "acme",
		Orgs: []policy.Org{
			{Name: "hospital-a", Region: "eu", Member: true},
			{Name: "clinic-c", Region: "eu"}, // registered, not a member
		},
		Tasks:  []policy.Task{{Name: "triage", Purpose: "diagnosis", Modalities: []string{"text", "image"}}},
		Models: []policy.Model{{Name: "triage-v3", Task: "triage", Round: 12, Released: true}},
		Checkpoints: []policy.ModelCheckpoint{
			{Name: "triage-v3-r7", Model: "triage-v3", Task: "triage", Round: 7, Released: true, Tainted: true},
		},
	}
	entities, err := fed.Entities()
	if err != nil {
		panic(err)
	}
	auth, err := policy.New(nil, nil, entities) // the default schema and policies
	if err != nil {
		panic(err)
	}

	dir, _ := os.MkdirTemp("", "fedweave-example")
	defer os.RemoveAll(dir)
	keyFile := filepath.Join(dir, "master.key")
	if err := store.NewKeyFile(keyFile); err != nil {
		panic(err)
	}
	st, err := store.Open(store.Options{Dir: filepath.Join(dir, "db"), KeyFile: keyFile})
	if err != nil {
		panic(err)
	}
	defer st.Close()
	_, serverKey, _ := ed25519.GenerateKey(nil)
	log := policy.NewAuditLog(st, policy.Ed25519Signer(serverKey))

	for _, r := range []struct{ principal, action, resource string }{
		{"fedweave://acme/org/hospital-a/client/node1", "Join", `Task::"triage"`},
		{"fedweave://acme/org/clinic-c/client/node3", "Join", `Task::"triage"`},
		{"fedweave://acme/org/hospital-a/reader/app", "DownloadModel", `Model::"triage-v3"`},
		{"fedweave://acme/org/hospital-a/reader/app", "DownloadModel", `Checkpoint::"triage-v3-r7"`},
		{"fedweave://acme/org/hospital-a/reader/app", "SubmitUpdate", `Task::"triage"`},
	} {
		p, _ := pki.ParsePrincipal(r.principal)
		res, _ := policy.ParseRef(r.resource)
		req := policy.Request{Principal: p, Action: r.action, Resource: res}
		d := auth.Decide(req)
		fmt.Printf("%s %s %s: %v\n", p.Org+"/"+string(p.Role), r.action, r.resource, d)
		if ev, ok := policy.AuditEvent(req, d); ok {
			if _, err := log.Append(ev); err != nil {
				panic(err)
			}
		}
	}
	cp, err := log.Checkpoint()
	if err != nil {
		panic(err)
	}
	rep, err := policy.VerifyLog(st, serverKey.Public().(ed25519.PublicKey))
	fmt.Printf("audit log: %d entries, checkpoint of size %d, verified: %v\n", rep.Size, cp.Size, err == nil)
	// Output:
	// hospital-a/client Join Task::"triage": ALLOW member-clients-train
	// clinic-c/client Join Task::"triage": DENY
	// hospital-a/reader DownloadModel Model::"triage-v3": ALLOW member-readers-use-released-models
	// hospital-a/reader DownloadModel Checkpoint::"triage-v3-r7": DENY forbid-tainted-models
	// hospital-a/reader SubmitUpdate Task::"triage": DENY
	// audit log: 5 entries, checkpoint of size 5, verified: true
}
