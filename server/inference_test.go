package server_test

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"image/png"
	"io"
	"math"
	"net/http"
	"slices"
	"strings"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/explain"
	"github.com/fedweave/fedweave/server"
	"github.com/fedweave/fedweave/server/servertest"
)

// inferenceFederation starts a server whose task has committed rounds (1 client), with the
// inference service's HTTPS API on loopback and small limits, and returns it with its
// federation. The server is closed when the test ends.
func inferenceFederation(t *testing.T, rounds int, serve server.ServeConfig) (*servertest.Federation, *servertest.Running) {
	t.Helper()
	f, err := servertest.NewFederation(t.TempDir(), "consortium")
	if err != nil {
		t.Fatal(err)
	}
	task := testTask(rounds, 1)
	task.Classes, task.TabularFields = dataset.SyntheticClasses, dataset.SyntheticTabularFields
	srv, err := f.StartServer(server.Config{Task: task, HTTPListen: "127.0.0.1:0", Serve: serve}, server.Options{})
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { srv.Close() })
	ctx, cancel := context.WithTimeout(context.Background(), 2*time.Minute)
	defer cancel()
	wg, errs := startClients(t, ctx, f, srv.Addr, partition(1, 80))
	if err := srv.Run(ctx); err != nil {
		t.Fatal(err)
	}
	wg.Wait()
	if err := <-errs; err != nil {
		t.Fatal(err)
	}
	return f, srv
}

// records returns synthetic records in the inference service's JSON form.
func records(t testing.TB, n int) [][]byte {
	t.Helper()
	d := dataset.Synthetic(dataset.SyntheticConfig{N: n, Seed: 42})
	out := make([][]byte, n)
	for i := range d.Records {
		b, err := dataset.EncodeRecord(&d.Records[i], &d.Schema)
		if err != nil {
			t.Fatal(err)
		}
		out[i] = b
	}
	return out
}

// reader issues a reader certificate of a member org (or of an outsider) and dials the server.
func readerConn(t *testing.T, f *servertest.Federation, srv *servertest.Running, name string, member bool) (*pki.Identity, *grpc.ClientConn) {
	t.Helper()
	issue := f.Identity
	org := "orga"
	if !member {
		issue, org = f.NonMemberIdentity, "outsider"
	}
	id, err := issue(org, pki.RoleReader, name)
	if err != nil {
		t.Fatal(err)
	}
	return id, dial(t, srv.Addr, id, f)
}

// httpsClient speaks HTTPS as id, trusting the federation's CA.
func httpsClient(id *pki.Identity, f *servertest.Federation) *http.Client {
	return &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{TLSClientConfig: pki.ClientTLS(id, f.Pool(), "127.0.0.1")}}
}

// httpAddr waits for the server's HTTPS listener.
func httpAddr(t *testing.T, srv *servertest.Running) string {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for srv.HTTPAddr() == "" {
		if time.Now().After(deadline) {
			t.Fatal("the inference HTTPS API did not start")
		}
		time.Sleep(10 * time.Millisecond)
	}
	return srv.HTTPAddr()
}

func post(t *testing.T, c *http.Client, url string, body []byte) (int, []byte) {
	t.Helper()
	resp, err := c.Post(url, "application/json", bytes.NewReader(body))
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		t.Fatal(err)
	}
	return resp.StatusCode, b
}

// checkResult checks what every answer must satisfy: a known label with the largest
// probability, probabilities that sum to 1, modality Shapley values that sum to
// value_all - value_none, and fields named after the schema.
func checkResult(t *testing.T, r explain.Result, explained bool) {
	t.Helper()
	if !slices.Contains(dataset.SyntheticClasses, r.Label) || r.ExplainedClass != r.Label {
		t.Errorf("label %q, explained %q", r.Label, r.ExplainedClass)
	}
	sum, top := 0.0, 0.0
	for _, p := range r.Probabilities {
		sum += p
		top = max(top, p)
	}
	if math.Abs(sum-1) > 1e-5 || r.Probabilities[r.Label] != top || r.ValueAll != r.Probabilities[r.Label] {
		t.Errorf("probabilities %v (sum %g), label %s, value_all %g", r.Probabilities, sum, r.Label, r.ValueAll)
	}
	phi := 0.0
	for _, v := range r.ModalityShapley {
		phi += v
	}
	if len(r.ModalityShapley) != 3 || math.Abs(phi-(r.ValueAll-r.ValueNone)) > 1e-5 {
		t.Errorf("modality Shapley %v sum to %g, value_all - value_none = %g", r.ModalityShapley, phi, r.ValueAll-r.ValueNone)
	}
	if len(r.GateWeights) != 3 {
		t.Errorf("gate weights %v", r.GateWeights)
	}
	if len(r.Features) != len(dataset.SyntheticTabularFields) || r.Features[1].Name != "income" {
		t.Fatalf("features %+v", r.Features)
	}
	if !explained {
		if r.Features[0].Attribution != nil || r.Tokens != nil || r.HeatmapPNG != nil {
			t.Errorf("a prediction with explanations: %+v", r)
		}
		return
	}
	fsum := 0.0
	for _, f := range r.Features {
		if f.Attribution == nil || f.StdErr == nil || *f.StdErr < 0 {
			t.Fatalf("feature %+v", f)
		}
		fsum += *f.Attribution
	}
	if r.ValueTabularBaseline == nil || math.Abs(fsum-(r.ValueAll-*r.ValueTabularBaseline)) > 1e-5 {
		t.Errorf("field attributions sum to %g, want value_all - value_tabular_baseline", fsum)
	}
	if len(r.Tokens) == 0 || r.Saliency == nil || r.Saliency.Height != 16 || len(r.Saliency.Values) != 256 {
		t.Errorf("tokens %v, saliency %+v", r.Tokens, r.Saliency)
	}
	img, err := png.Decode(bytes.NewReader(r.HeatmapPNG))
	if err != nil || img.Bounds().Dx() != 256 {
		t.Errorf("heatmap: %v", err)
	}
}

// TestInference serves predictions and explanations over gRPC and HTTPS with real mutual TLS:
// what readers of member orgs get, what everybody else is refused, how requests are validated
// and limited, and that a tainted model is never served.
func TestInference(t *testing.T) {
	f, srv := inferenceFederation(t, 2, server.ServeConfig{MaxRequestBytes: 4096, RatePerSecond: 20, Burst: 12})
	ctx, cancel := context.WithTimeout(context.Background(), time.Minute)
	defer cancel()
	recs := records(t, 4)
	base := "https://" + httpAddr(t, srv)

	t.Run("grpc", func(t *testing.T) {
		_, conn := readerConn(t, f, srv, "app", true)
		api := pb.NewInferenceClient(conn)
		p, err := api.Predict(ctx, &pb.PredictRequest{Record: recs[0]})
		if err != nil {
			t.Fatal(err)
		}
		if p.GetRound() != 2 || p.GetTask() != "triage" || p.GetId() != "syn-000001" {
			t.Errorf("served task %q round %d id %q, want the latest, 2", p.GetTask(), p.GetRound(), p.GetId())
		}
		if names := []string{p.GetProbabilities()[0].GetName(), p.GetModalityShapley()[0].GetName()}; names[0] != "amber" || names[1] != "text" {
			t.Errorf("order on the wire: %v", names)
		}
		checkResult(t, server.PredictionResult(p), false)
		e, err := api.Explain(ctx, &pb.ExplainRequest{Task: "triage", Round: 1, Record: recs[1], Samples: 8, Seed: 3})
		if err != nil {
			t.Fatal(err)
		}
		if e.GetPrediction().GetRound() != 1 || e.GetSamples() != 8 {
			t.Errorf("explained round %d with %d samples", e.GetPrediction().GetRound(), e.GetSamples())
		}
		checkResult(t, server.ExplanationResult(e), true)
		c, err := api.Explain(ctx, &pb.ExplainRequest{Record: recs[1], Class: "dune"})
		if err != nil || c.GetPrediction().GetExplainedClass() != "dune" {
			t.Errorf("explain class dune: %v, %v", c.GetPrediction().GetExplainedClass(), err)
		}
	})

	t.Run("https", func(t *testing.T) {
		id, _ := readerConn(t, f, srv, "web", true)
		hc := httpsClient(id, f)
		code, body := post(t, hc, base+"/v1/predict", []byte(`{"record":`+string(recs[2])+`}`))
		if code != http.StatusOK {
			t.Fatalf("predict: %d %s", code, body)
		}
		var r explain.Result
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		checkResult(t, r, false)
		code, body = post(t, hc, base+"/v1/explain", []byte(`{"round":2,"samples":8,"record":`+string(recs[3])+`}`))
		if code != http.StatusOK {
			t.Fatalf("explain: %d %s", code, body)
		}
		r = explain.Result{}
		if err := json.Unmarshal(body, &r); err != nil {
			t.Fatal(err)
		}
		checkResult(t, r, true)
		if r.Round != 2 || r.Samples != 8 {
			t.Errorf("round %d, samples %d", r.Round, r.Samples)
		}
		resp, err := hc.Get(base + "/v1/predict")
		if err != nil {
			t.Fatal(err)
		}
		resp.Body.Close()
		if resp.StatusCode != http.StatusMethodNotAllowed {
			t.Errorf("GET /v1/predict: %d", resp.StatusCode)
		}
	})

	t.Run("denied", func(t *testing.T) {
		outsider, conn := readerConn(t, f, srv, "app", false)
		_, err := pb.NewInferenceClient(conn).Predict(ctx, &pb.PredictRequest{Record: recs[0]})
		if want := `permission denied: Infer on Model::"triage/2": no policy permits this`; status.Code(err) != codes.PermissionDenied || status.Convert(err).Message() != want {
			t.Errorf("non-member reader: %v, want %q", err, want)
		}
		_, err = pb.NewInferenceClient(conn).Explain(ctx, &pb.ExplainRequest{Record: recs[0]})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "Explain on Model") {
			t.Errorf("non-member reader's Explain: %v", err)
		}
		code, body := post(t, httpsClient(outsider, f), base+"/v1/explain", []byte(`{"record":`+string(recs[0])+`}`))
		if code != http.StatusForbidden || !strings.Contains(string(body), `"code":"PermissionDenied"`) {
			t.Errorf("non-member reader over HTTPS: %d %s", code, body)
		}
		cl, err := f.Identity("orga", pki.RoleClient, "trainer")
		if err != nil {
			t.Fatal(err)
		}
		_, err = pb.NewInferenceClient(dial(t, srv.Addr, cl, f)).Predict(ctx, &pb.PredictRequest{Record: recs[0]})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("a member's training client: %v", err)
		}
		_, readerOK := readerConn(t, f, srv, "app", true)
		_, err = pb.NewInferenceClient(readerOK).Predict(ctx, &pb.PredictRequest{Round: 9, Record: recs[0]})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("a round never committed: %v", err)
		}
		_, err = pb.NewInferenceClient(readerOK).Predict(ctx, &pb.PredictRequest{Task: "other", Record: recs[0]})
		if status.Code(err) != codes.PermissionDenied {
			t.Errorf("another task: %v", err)
		}
		// No certificate at all: the handshake fails.
		anon := &http.Client{Transport: &http.Transport{TLSClientConfig: pki.ClientTLS(outsider, f.Pool(), "127.0.0.1")}}
		anon.Transport.(*http.Transport).TLSClientConfig.Certificates = nil
		if _, err := anon.Post(base+"/v1/predict", "application/json", strings.NewReader("{}")); err == nil {
			t.Error("a client without a certificate was answered")
		}
	})

	t.Run("validation", func(t *testing.T) {
		_, conn := readerConn(t, f, srv, "checker", true)
		api := pb.NewInferenceClient(conn)
		small, err := dataset.EncodeImagePNG(&dataset.ImageData{C: 1, H: 8, W: 8, Pix: make([]float32, 64)})
		if err != nil {
			t.Fatal(err)
		}
		png8 := base64.StdEncoding.EncodeToString(small)
		for _, tc := range []struct{ name, record, want string }{
			{"oversized", `{"text":"` + strings.Repeat("word ", 1000) + `"}`, "more than the limit of 4096 (serve.max_request_bytes)"},
			{"NaN", `{"tabular":{"age":NaN}}`, "record: invalid JSON"},
			{"out of range", `{"text":"x","tabular":{"age":1e39,"income":1,"score_a":1,"score_b":1,"visits":1,"ratio":1}}`, `record: tabular field "age": 1e39 is out of float32 range`},
			{"wrong image size", `{"image":"` + png8 + `"}`, `record: field "image": the image is 8x8 pixels, the model wants 16x16`},
			{"unknown field", `{"text":"x","colour":"red"}`, `record: unknown field "colour"`},
			{"unknown tabular field", `{"tabular":{"bmi":1}}`, `record: tabular field "age" missing`},
			{"no modality", `{"id":"x"}`, "record: the record has no text, image or tabular fields"},
			{"not JSON", `hello`, "record: invalid JSON"},
		} {
			t.Run(tc.name, func(t *testing.T) {
				_, err := api.Predict(ctx, &pb.PredictRequest{Record: []byte(tc.record)})
				if status.Code(err) != codes.InvalidArgument || !strings.Contains(status.Convert(err).Message(), tc.want) {
					t.Fatalf("got %v, want InvalidArgument saying %q", err, tc.want)
				}
			})
		}
		_, err = api.Explain(ctx, &pb.ExplainRequest{Record: recs[0], Class: "oak"})
		if status.Code(err) != codes.InvalidArgument || !strings.Contains(err.Error(), `unknown class "oak"`) {
			t.Errorf("unknown class: %v", err)
		}
		_, err = api.Explain(ctx, &pb.ExplainRequest{Record: recs[0], Samples: 5000})
		if status.Code(err) != codes.InvalidArgument {
			t.Errorf("5000 samples: %v", err)
		}
		web, _ := readerConn(t, f, srv, "checker-web", true)
		hc := httpsClient(web, f)
		for _, tc := range []struct {
			path, body string
			code       int
			want       string
		}{
			{"/v1/predict", `{"record":{"text":"x"},"colour":1}`, 400, `unknown field \"colour\"`},
			{"/v1/predict", `{"record":"x"}`, 400, `\"record\" must be a JSON object`},
			{"/v1/predict", `{"record":{"text":"x"},"class":"dune"}`, 400, `are for /v1/explain`},
			{"/v1/predict", ``, 400, `empty, want a JSON object`},
			{"/v1/predict", `{"record":{"text":"x"}} {}`, 400, `unexpected data after the JSON object`},
			{"/v1/explain", `{"record":{"tabular":{"age":NaN}}}`, 400, `invalid character 'N'`},
			{"/v1/explain", `{"record":{"text":"` + strings.Repeat("w", 9000) + `"}}`, 413, `body larger than 8192 bytes`},
		} {
			code, body := post(t, hc, base+tc.path, []byte(tc.body))
			if code != tc.code || !strings.Contains(string(body), tc.want) {
				t.Errorf("POST %s %.40q: %d %s, want %d saying %s", tc.path, tc.body, code, body, tc.code, tc.want)
			}
		}
	})

	t.Run("rate limit", func(t *testing.T) {
		_, conn := readerConn(t, f, srv, "flood", true)
		api := pb.NewInferenceClient(conn)
		limited := 0
		for range 30 {
			_, err := api.Predict(ctx, &pb.PredictRequest{Record: []byte(`{}`)})
			switch status.Code(err) {
			case codes.ResourceExhausted:
				limited++
				if !strings.Contains(err.Error(), "rate limit: 20 requests a second per caller") {
					t.Fatalf("message: %v", err)
				}
			case codes.InvalidArgument:
			default:
				t.Fatalf("unexpected %v", err)
			}
		}
		if limited == 0 {
			t.Error("30 calls at once, burst 12: none was limited")
		}
		// Another caller has its own bucket.
		_, other := readerConn(t, f, srv, "calm", true)
		if _, err := pb.NewInferenceClient(other).Predict(ctx, &pb.PredictRequest{Record: recs[0]}); err != nil {
			t.Errorf("another caller: %v", err)
		}
	})

	// Last: tainting is for good.
	t.Run("tainted", func(t *testing.T) {
		id, conn := readerConn(t, f, srv, "late", true)
		api := pb.NewInferenceClient(conn)
		if err := srv.TaintModels(2); err != nil {
			t.Fatal(err)
		}
		// Round 0 now means round 1, the latest model that is not tainted.
		p, err := api.Predict(ctx, &pb.PredictRequest{Record: recs[0]})
		if err != nil || p.GetRound() != 1 {
			t.Fatalf("latest servable: round %d, %v", p.GetRound(), err)
		}
		_, err = api.Predict(ctx, &pb.PredictRequest{Round: 2, Record: recs[0]})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), "forbid-tainted-models") {
			t.Errorf("tainted round 2: %v", err)
		}
		// Even with the policy that forbids it gone, the service refuses.
		admin, err := f.Identity("orga", pki.RoleAdmin, "alice")
		if err != nil {
			t.Fatal(err)
		}
		if _, err := pb.NewAdminClient(dial(t, srv.Addr, admin, f)).RemovePolicy(ctx, &pb.RemovePolicyRequest{Id: "forbid-tainted-models"}); err != nil {
			t.Fatal(err)
		}
		_, err = api.Explain(ctx, &pb.ExplainRequest{Round: 2, Record: recs[0]})
		if status.Code(err) != codes.PermissionDenied || !strings.Contains(err.Error(), `model Model::"triage/2" is tainted`) {
			t.Errorf("tainted round 2 without the forbid: %v", err)
		}
		code, body := post(t, httpsClient(id, f), base+"/v1/predict", []byte(`{"round":2,"record":`+string(recs[0])+`}`))
		if code != http.StatusForbidden || !strings.Contains(string(body), "is tainted") {
			t.Errorf("over HTTPS: %d %s", code, body)
		}
		if err := srv.TaintModels(7); err == nil {
			t.Error("a round never committed was tainted")
		}

		// Offline, from the store: the latest servable model, and the tainted one refused.
		_, want := srv.Params() // round 2's
		if err := srv.Close(); err != nil {
			t.Fatal(err)
		}
		dir, keyFile := f.Dir+"/server", f.Dir+"/keys/master.key"
		c, err := server.OpenCheckpoint(dir, keyFile, "", 0)
		if err != nil {
			t.Fatal(err)
		}
		if c.Round != 1 || c.Task != "triage" || c.Schema.TabularFields[1] != "income" || c.Schema.Classes[3] != "dune" || c.Schema.ImageH != 16 {
			t.Errorf("checkpoint %+v", c)
		}
		if slices.Equal(c.Params, want) {
			t.Error("round 1's parameters equal round 2's")
		}
		if _, err := c.Model(); err != nil {
			t.Error(err)
		}
		if _, err := server.OpenCheckpoint(dir, keyFile, "", 2); !errors.Is(err, server.ErrTainted) {
			t.Errorf("round 2 offline: %v", err)
		}
		if _, err := server.OpenCheckpoint(dir, keyFile, "nosuch", 0); err == nil {
			t.Error("an unknown task was opened")
		}
	})
}

// TestInferenceConfig: the serve limits are checked with the rest of the config.
func TestInferenceConfig(t *testing.T) {
	for _, tc := range []struct {
		change func(*server.Config)
		want   string
	}{
		{func(c *server.Config) { c.Serve.MaxRequestBytes = 2 << 20 }, "serve.max_request_bytes"},
		{func(c *server.Config) { c.Serve.RatePerSecond = -1 }, "serve.rate_per_second"},
		{func(c *server.Config) { c.Serve.Workers = 1000 }, "serve.workers"},
		{func(c *server.Config) { c.Task.Classes = []string{"a", "b"} }, "task.classes: 2 names, the model has 4"},
		{func(c *server.Config) { c.Task.TabularFields = []string{"a", "a", "b", "c", "d", "e"} }, `task.tabular_fields: names must be non-empty and unique, "a" is not`},
	} {
		c := server.Config{Federation: "f", Dir: "d", Task: testTask(1, 1)}
		tc.change(&c)
		c.Defaults()
		if err := c.Validate(); err == nil || !strings.Contains(err.Error(), tc.want) {
			t.Errorf("got %v, want an error about %s", err, tc.want)
		}
	}
	c := server.Config{Federation: "f", Dir: "d", Task: testTask(1, 1)}
	c.Defaults()
	if err := c.Validate(); err != nil || c.Serve.MaxRequestBytes != 1<<20 || c.Serve.RatePerSecond != 20 || c.Serve.Burst != 40 || c.Serve.Workers < 1 {
		t.Errorf("defaults %+v: %v", c.Serve, err)
	}
}
