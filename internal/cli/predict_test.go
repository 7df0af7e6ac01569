package cli

import (
	"bytes"
	"context"
	"encoding/json"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/explain"
	"github.com/fedweave/fedweave/fusion"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// TestPredictOnline runs fedweave predict and explain against a real server on loopback, with
// certificate files as a reader would have them: a member's reader gets answers, an
// outsider's is refused with a hint; an image may be given as a PNG file beside the record.
func TestPredictOnline(t *testing.T) {
	dir := t.TempDir()
	f, err := servertest.NewFederation(dir, "consortium")
	if err != nil {
		t.Fatal(err)
	}
	d := dataset.Synthetic(dataset.SyntheticConfig{N: 80, Seed: 5})
	task := server.TaskConfig{
		Name: "triage", Rounds: 1, MinClients: 1, Secure: "none", LocalEpochs: 1, BatchSize: 32, Seed: 1,
		RoundTimeout: server.Duration{Duration: 20 * time.Second}, Model: models.DefaultSpec(d.Schema, fusion.Attention, true),
		Classes: d.Schema.Classes, TabularFields: d.Schema.TabularFields,
	}
	srv, err := f.StartServer(server.Config{Task: task}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	id, err := f.Identity("orga", pki.RoleClient, "node")
	if err != nil {
		t.Fatal(err)
	}
	c, err := client.New(client.Config{Server: srv.Addr, Task: "triage", Identity: id, CAPool: f.Pool(), Source: client.DatasetSource(d)})
	if err != nil {
		t.Fatal(err)
	}
	go c.Run(ctx)
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}

	issue := func(org, name string) string {
		prefix := filepath.Join(dir, name)
		if err := f.CA.IssueFiles(pki.Principal{Federation: "consortium", Org: org, Role: pki.RoleReader, Name: name}, pki.IssueOptions{Validity: time.Hour}, prefix); err != nil {
			t.Fatal(err)
		}
		return prefix
	}
	if _, err := f.Identity("orga", pki.RoleReader, "unused"); err != nil { // orga is a member
		t.Fatal(err)
	}
	app, outsider := issue("orga", "app"), issue("outsider", "app2")
	caFile := filepath.Join(dir, "ca", "ca.crt")

	// The record with its image as a PNG file beside it.
	rec := d.Records[0]
	png, err := dataset.EncodeImagePNG(rec.Image)
	if err != nil {
		t.Fatal(err)
	}
	if err := os.WriteFile(filepath.Join(dir, "img.png"), png, 0o644); err != nil {
		t.Fatal(err)
	}
	noImage := rec
	noImage.Image = nil
	body, err := dataset.EncodeRecord(&noImage, &d.Schema)
	if err != nil {
		t.Fatal(err)
	}
	body = append(bytes.TrimSuffix(body, []byte("}")), []byte(`,"image":"img.png"}`)...)
	input := filepath.Join(dir, "record.json")
	if err := os.WriteFile(input, body, 0o644); err != nil {
		t.Fatal(err)
	}

	run := func(args ...string) (int, string, string) {
		var out, errb bytes.Buffer
		env := &Env{Stdout: &out, Stderr: &errb}
		code := env.run(ctx, args)
		return code, out.String(), errb.String()
	}
	online := func(cmd, who string) []string {
		return []string{cmd, "--server", srv.Addr, "--ca", caFile, "--cert", who + ".crt", "--key", who + ".key", "--input", input}
	}

	code, out, errs := run(online("predict", app)...)
	if code != 0 {
		t.Fatalf("predict: exit %d\n%s", code, errs)
	}
	var res explain.Result
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatalf("predict printed no JSON: %v\n%s", err, out)
	}
	if res.Round != 1 || len(res.ModalityShapley) != 3 || len(res.GateWeights) != 3 || len(res.Features) != 6 || res.Features[0].Name != "age" {
		t.Errorf("predict printed %+v", res)
	}

	heat := filepath.Join(dir, "heat.png")
	code, out, errs = run(append(online("explain", app), "--heatmap", heat, "--samples", "8")...)
	if code != 0 {
		t.Fatalf("explain: exit %d\n%s", code, errs)
	}
	res = explain.Result{}
	if err := json.Unmarshal([]byte(out), &res); err != nil {
		t.Fatal(err)
	}
	if res.Samples != 8 || len(res.Tokens) == 0 || res.Saliency == nil || res.Features[0].Attribution == nil {
		t.Errorf("explain printed %+v", res)
	}
	if b, err := os.ReadFile(heat); err != nil || !bytes.HasPrefix(b, []byte("\x89PNG")) {
		t.Errorf("heatmap: %v", err)
	}

	code, _, errs = run(online("predict", outsider)...)
	if code != 1 || !strings.Contains(errs, `fedweave: error: the server refused: permission denied: Infer on Model::"triage/1": no policy permits this`) ||
		!strings.Contains(errs, "fedweave: hint: the inference service answers readers of member orgs") {
		t.Errorf("an outsider's reader: exit %d\n%s", code, errs)
	}
	code, _, errs = run(append(online("explain", app), "--class", "oak")...)
	if code != 1 || !strings.Contains(errs, `fedweave: error: class: unknown class "oak"`) {
		t.Errorf("unknown class: exit %d\n%s", code, errs)
	}
}
