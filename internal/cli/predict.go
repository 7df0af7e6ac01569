package cli

import (
	"bytes"
	"context"
	"encoding/base64"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io"
	"net"
	"os"
	"path/filepath"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/explain"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/server"
)

// recordHelp describes --input; both usages share it.
const recordHelp = `The record (--input FILE) is one JSON object in the form of a manifest line, label optional:

	{"id": "r1", "text": "sudden sharp pain", "image": "iVBORw0KGgo...",
	 "tabular": {"age": 41, "income": 52000, "score_a": 12.5, "score_b": 4, "visits": 3, "ratio": 0.61}}

image is a PNG of exactly the model's size (16x16 for the demo's synthetic data), base64-encoded,
or the path of such a PNG file relative to FILE. tabular, when given, names every field of the
model. A record may lack any modality but not all of them.

The model is the latest committed one that is not tainted, or --round N. With --server ADDR it
is asked of a running server's inference service, with a reader's certificate (--ca, --cert,
--key) of a member org; with --dir DIR it is read from the directory "fedweave demo --dir DIR"
left (the server store DIR/server and its key DIR/keys/master.key), which no running process
may hold.`

const predictUsage = `usage: fedweave predict --input FILE (--server ADDR --ca FILE --cert FILE --key FILE | --dir DIR) [--round N]

Predict asks a federation's model for one record's class and prints, as JSON, the label, the
probability of each class, and how much each modality the record carries contributed: exact
Shapley values over the modalities (masking each one as missing, 2^m evaluations of the
model), which sum to value_all - value_none, the probability of the predicted class with all
of the record's modalities and with none. Gate weights are the fusion head's own weighing of
the modalities (gated and attention heads); features are the tabular fields as the model read
them (standardised with its statistics). "fedweave explain" says more.

` + recordHelp + `

Example:

	$ fedweave demo --dir demo
	$ fedweave predict --dir demo --input examples/records/full.json
	{
	  "task": "demo",
	  "round": 5,
	  "id": "example-1",
	  "label": "amber",
	  "probabilities": {"amber":0.9385948,"birch":0.0226802,"cedar":0.0260928,"dune":0.0126322},
	  "explained_class": "amber",
	  "value_all": 0.9385948,
	  "value_none": 0.2456493,
	  "modality_shapley": {"image":0.1223231,"tabular":0.1032544,"text":0.4673681},
	  "gate_weights": {"image":0.3735983,"tabular":0.1267519,"text":0.4996498},
	  "features": [
	    {"name":"age","value":49.989803,"standardized":-0.0090535},
	    ...
	  ]
	}
	$ fedweave predict --server agg.acme.example:7443 --ca pki/ca.crt --cert app.crt --key app.key --input record.json
`

const explainUsage = `usage: fedweave explain --input FILE (--server ADDR --ca FILE --cert FILE --key FILE | --dir DIR) [--heatmap PNG] [--class NAME]

Explain prints what "fedweave predict" prints and, within each modality, what drove the
prediction, as JSON:

  features          each tabular field's Shapley value, estimated by sampling --samples
                    permutations (antithetic pairs) with the field at its mean as baseline,
                    with the estimate's standard error (std_err); they sum to value_all -
                    value_tabular_baseline
  tokens            each word the model read and the drop of the probability when it is left
                    out (occlusion); truncated_tokens counts words past the model's length
  saliency          the image's occlusion map: a patch of the image's mean slides over it, each
                    pixel gets the mean drop of the probability; --grid prints its values and
                    --heatmap writes it as a PNG, the image in gray and the saliency in red

Every number explains the probability of the predicted class, or of --class NAME.

` + recordHelp + `

Example:

	$ fedweave explain --dir demo --input examples/records/full.json --heatmap saliency.png
	{
	  ...
	  "features": [
	    {"name":"income","value":-5956.402,"standardized":-1.9841067,"attribution":0.0458127,"std_err":0.0051625},
	    ...
	  ],
	  "value_tabular_baseline": 0.7972217,
	  "samples": 32,
	  "tokens": [
	    {"token":"stable","importance":0.1035293},
	    ...
	  ],
	  "saliency": {"height":16,"width":16,"patch":4,"stride":2}
	}
	fedweave explain: wrote saliency.png
`

var predictCmd = &Command{
	Name:    "predict",
	Summary: "predict one record's class with a federation's model",
	Usage:   predictUsage,
	Flags:   func(fs *flag.FlagSet) RunFunc { return inferFlags(fs, false) },
}

var explainCmd = &Command{
	Name:    "explain",
	Summary: "explain one prediction: modalities, fields, words and image regions",
	Usage:   explainUsage,
	Flags:   func(fs *flag.FlagSet) RunFunc { return inferFlags(fs, true) },
}

const readerHint = `give --server ADDR --ca FILE --cert FILE --key FILE with a reader's certificate of a member org ("fedweave ca issue --role reader"), or --dir DIR of a demo`

func inferFlags(fs *flag.FlagSet, explaining bool) RunFunc {
	input := fs.String("input", "", "JSON `file` with one record (see above)")
	srv := fs.String("server", "", "`address` of a running server (host:port, or @FILE to read it from FILE)")
	serverName := fs.String("server-name", "", "`name` the server's certificate must carry (default: the host of --server)")
	ca := fs.String("ca", "", "the federation's CA certificate `file` (with --server)")
	cert := fs.String("cert", "", "a reader's certificate `file` (with --server)")
	key := fs.String("key", "", "the reader's key `file` (with --server)")
	dir := fs.String("dir", "", "`directory` a \"fedweave demo --dir\" run left, to predict without a server")
	task := fs.String("task", "", "`name` of the task (default: the server's, or the store's only one)")
	round := fs.Uint64("round", 0, "committed `round` whose model to use (default: the latest that is not tainted)")
	var class, heatmap *string
	var samples *int
	var seed *uint64
	var grid *bool
	if explaining {
		class = fs.String("class", "", "explain the probability of this class `name` instead of the predicted one")
		samples = fs.Int("samples", explain.DefaultSamples, "`number` of permutations sampled for the tabular fields")
		seed = fs.Uint64("seed", 0, "`seed` of the sampled permutations")
		heatmap = fs.String("heatmap", "", "write the image's saliency map as a PNG to `file`")
		grid = fs.Bool("grid", false, "print the saliency map's values too")
	}
	return func(ctx context.Context, env *Env, args []string) error {
		switch {
		case len(args) > 0:
			return Usagef("unexpected argument %q", args[0])
		case *input == "":
			return Hint(Usagef("--input is required"), "give --input FILE, a JSON file with one record")
		case *srv != "" && *dir != "":
			return Usagef("--server and --dir exclude each other: ask a server, or read a demo's directory")
		case *srv == "" && *dir == "":
			return Hint(Usagef("say where the model is: --server or --dir"), readerHint)
		}
		q := inferQuery{task: *task, round: *round, explain: explaining}
		if explaining {
			if *samples < 4 || *samples > server.MaxExplainSamples {
				return Usagef("--samples must be from 4 to %d, got %d", server.MaxExplainSamples, *samples)
			}
			q.class, q.samples, q.seed = *class, *samples, *seed
		}
		var err error
		if q.record, err = readRecordFile(*input); err != nil {
			return err
		}
		var res explain.Result
		if *dir != "" {
			res, err = inferOffline(*dir, q)
		} else {
			rf := readerFlags{server: *srv, serverName: *serverName, ca: *ca, cert: *cert, key: *key}
			res, err = inferOnline(ctx, env, rf, q)
		}
		if err != nil {
			return err
		}
		png := res.HeatmapPNG
		res.HeatmapPNG = nil
		if res.Saliency != nil && (grid == nil || !*grid) {
			res.Saliency.Values = nil
		}
		if err := printResult(env.Stdout, res); err != nil {
			return err
		}
		if heatmap != nil && *heatmap != "" {
			if png == nil {
				return Hint(errors.New("--heatmap: the record has no image, so there is no saliency map"), "give a record with an image")
			}
			if err := os.WriteFile(*heatmap, png, 0o644); err != nil {
				return Hint(err, "check that the directory of --heatmap exists and is writable")
			}
			fmt.Fprintf(env.Stderr, "fedweave explain: wrote %s\n", *heatmap)
		}
		return nil
	}
}

// inferQuery is one predict or explain request.
type inferQuery struct {
	task    string
	round   uint64
	record  []byte
	explain bool
	class   string
	samples int
	seed    uint64
}

// printResult writes the result as JSON: one member of the object a line, an array of objects
// (features, tokens) one element a line, everything else compact.
func printResult(w io.Writer, res explain.Result) error {
	b, err := json.Marshal(res)
	if err != nil {
		return err
	}
	var members []json.RawMessage
	dec := json.NewDecoder(bytes.NewReader(b))
	if _, err := dec.Token(); err != nil { // {
		return err
	}
	var out bytes.Buffer
	out.WriteString("{\n")
	for dec.More() {
		key, err := dec.Token()
		if err != nil {
			return err
		}
		var raw json.RawMessage
		if err := dec.Decode(&raw); err != nil {
			return err
		}
		if len(members) > 0 {
			out.WriteString(",\n")
		}
		members = append(members, raw)
		k, _ := json.Marshal(key)
		fmt.Fprintf(&out, "  %s: ", k)
		var elems []json.RawMessage
		if bytes.HasPrefix(raw, []byte("[{")) && json.Unmarshal(raw, &elems) == nil {
			out.WriteString("[\n")
			for i, e := range elems {
				out.WriteString("    ")
				out.Write(e)
				if i < len(elems)-1 {
					out.WriteString(",")
				}
				out.WriteString("\n")
			}
			out.WriteString("  ]")
			continue
		}
		out.Write(raw)
	}
	out.WriteString("\n}\n")
	_, err = w.Write(out.Bytes())
	return err
}

// readRecordFile reads --input: one JSON object. An image given as the path of a PNG file is
// read and inlined; everything else is checked by the decoder that reads the record.
func readRecordFile(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, Hint(fmt.Errorf("--input: %w", err), "give --input FILE, a JSON file with one record")
	}
	if len(b) > server.MaxServeRequestBytes {
		return nil, fmt.Errorf("--input %s: %d bytes, more than a record may have (%d)", path, len(b), server.MaxServeRequestBytes)
	}
	var fields map[string]json.RawMessage
	if json.Unmarshal(b, &fields) != nil {
		return b, nil // the decoder says what is wrong
	}
	var img string
	if json.Unmarshal(fields["image"], &img) != nil || !strings.HasSuffix(strings.ToLower(img), ".png") {
		return b, nil
	}
	if filepath.IsAbs(img) || !filepath.IsLocal(filepath.FromSlash(img)) {
		return nil, fmt.Errorf("--input %s: image path %q must be relative to the file's directory, inside it", path, img)
	}
	raw, err := os.ReadFile(filepath.Join(filepath.Dir(path), filepath.FromSlash(img)))
	if err != nil {
		return nil, Hint(fmt.Errorf("--input %s: image: %w", path, err), "image is a base64 PNG, or the path of a PNG file relative to --input")
	}
	fields["image"], _ = json.Marshal(base64.StdEncoding.EncodeToString(raw))
	return json.Marshal(fields)
}

// recordHint is the hint for a record the model refuses.
const recordHint = `the record is one JSON object as in "fedweave predict -h"; its image a PNG of the model's size and its tabular fields all of the model's`

// inferOffline answers from a demo directory's server store.
func inferOffline(dir string, q inferQuery) (explain.Result, error) {
	storeDir, keyFile := filepath.Join(dir, "server"), filepath.Join(dir, "keys", "master.key")
	if _, err := os.Stat(storeDir); err != nil {
		return explain.Result{}, Hint(fmt.Errorf("--dir %s: no server store in it", dir), `run "fedweave demo --dir `+dir+`" first`)
	}
	c, err := server.OpenCheckpoint(storeDir, keyFile, q.task, q.round)
	switch {
	case errors.Is(err, store.ErrLocked):
		return explain.Result{}, Hint(fmt.Errorf("--dir %s: the store is in use by another process", dir), "wait for the demo or server that holds it to end, or ask the running server with --server")
	case errors.Is(err, server.ErrTainted):
		return explain.Result{}, Hint(err, "omit --round for the latest model that may be served")
	case errors.Is(err, server.ErrNoModel):
		return explain.Result{}, Hint(err, "a model is committed at the end of each round of a demo or a server")
	case err != nil:
		return explain.Result{}, err
	}
	m, err := c.Model()
	if err != nil {
		return explain.Result{}, err
	}
	rec, err := dataset.DecodeRecord(q.record, &c.Schema)
	if err != nil {
		return explain.Result{}, Hint(fmt.Errorf("record: %w", err), recordHint)
	}
	opt := explain.Options{Samples: q.samples, Seed: q.seed}
	var e *explain.Explanation
	switch {
	case !q.explain:
		e, err = explain.Modalities(m, &rec)
	case q.class != "":
		k := -1
		for i, name := range c.Schema.Classes {
			if name == q.class {
				k = i
			}
		}
		if k < 0 {
			return explain.Result{}, Usagef("--class %q: the model's classes are %s", q.class, strings.Join(c.Schema.Classes, ", "))
		}
		e, err = explain.ExplainClass(m, &rec, k, opt)
	default:
		e, err = explain.Explain(m, &rec, opt)
	}
	if errors.Is(err, explain.ErrNoModality) {
		return explain.Result{}, Hint(fmt.Errorf("record: it carries none of the model's modalities"), recordHint)
	}
	if err != nil {
		return explain.Result{}, err
	}
	res, err := explain.NewResult(m, &c.Schema, &rec, e, q.samples, q.explain)
	if err != nil {
		return explain.Result{}, err
	}
	res.Task, res.Round = c.Task, c.Round
	return res, nil
}

// readerFlags reach a running server's inference service.
type readerFlags struct {
	server, serverName, ca, cert, key string
}

// inferCallTimeout bounds one call of the inference service.
const inferCallTimeout = 30 * time.Second

func inferOnline(ctx context.Context, env *Env, rf readerFlags, q inferQuery) (explain.Result, error) {
	var missing []string
	for _, f := range []struct{ name, v string }{{"--ca", rf.ca}, {"--cert", rf.cert}, {"--key", rf.key}} {
		if f.v == "" {
			missing = append(missing, f.name)
		}
	}
	if len(missing) > 0 {
		return explain.Result{}, Hint(Usagef("%s required to reach a running server", strings.Join(missing, ", ")), readerHint)
	}
	id, err := pki.LoadIdentity(rf.cert, rf.key)
	if err != nil {
		return explain.Result{}, Hint(fmt.Errorf("--cert and --key: %w", err), `issue a reader certificate with "fedweave ca issue --role reader ..."`)
	}
	pool, err := pki.LoadPool(rf.ca)
	if err != nil {
		return explain.Result{}, Hint(fmt.Errorf("--ca: %w", err), "--ca is the federation's ca.crt")
	}
	addr := rf.server
	if file, ok := strings.CutPrefix(addr, "@"); ok {
		if addr, err = readAddrFile(ctx, env, file, time.Minute); err != nil {
			return explain.Result{}, err
		}
	}
	name := rf.serverName
	if name == "" {
		host, _, err := net.SplitHostPort(addr)
		if err != nil {
			return explain.Result{}, Usagef("--server %q is not host:port", addr)
		}
		name = host
	}
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(id, pool, name))))
	if err != nil {
		return explain.Result{}, err
	}
	defer conn.Close()
	cctx, cancel := context.WithTimeout(ctx, inferCallTimeout)
	defer cancel()
	api := pb.NewInferenceClient(conn)
	if !q.explain {
		p, err := api.Predict(cctx, &pb.PredictRequest{Task: q.task, Round: q.round, Record: q.record})
		if err != nil {
			return explain.Result{}, inferError(err, addr)
		}
		return server.PredictionResult(p), nil
	}
	e, err := api.Explain(cctx, &pb.ExplainRequest{Task: q.task, Round: q.round, Record: q.record, Class: q.class, Samples: uint32(q.samples), Seed: q.seed})
	if err != nil {
		return explain.Result{}, inferError(err, addr)
	}
	return server.ExplanationResult(e), nil
}

// inferError turns a call's status into an error with a hint.
func inferError(err error, addr string) error {
	st, ok := status.FromError(err)
	if !ok {
		return err
	}
	msg := st.Message()
	switch st.Code() {
	case codes.PermissionDenied:
		return Hint(fmt.Errorf("the server refused: %s", msg), "the inference service answers readers of member orgs, for released models that are not tainted: "+readerHint)
	case codes.InvalidArgument:
		return Hint(errors.New(msg), recordHint)
	case codes.ResourceExhausted:
		return Hint(errors.New(msg), "wait a moment: the server limits how often each caller may ask (serve.rate_per_second)")
	case codes.NotFound:
		return Hint(errors.New(msg), "omit --task and --round for the server's latest model")
	case codes.Unauthenticated:
		return Hint(fmt.Errorf("the server refused the certificate: %s", msg), readerHint)
	case codes.Unavailable, codes.DeadlineExceeded:
		return Hint(fmt.Errorf("cannot reach the server at %s: %s", addr, msg),
			"check that the server runs at --server, that --ca is the federation's CA and --cert one of its certificates")
	}
	return errors.New(msg)
}
