package cli

import (
	"context"
	"encoding/json"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"math"
	"net"
	"os"
	"path/filepath"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/server"
)

const serverUsage = `usage: fedweave server --config FILE [--listen ADDR] [--addr-file FILE] [--timeout DURATION] [--serve] [--v]

Server runs the aggregation server of a federation for one training task, as its operator
does: it accepts the partners' clients over mutual TLS, opens a round once task.min_clients of
them are connected, combines their updates into the next global model, and writes every
committed round to its encrypted store in dir. It logs one line per round on stderr and, when
task.rounds rounds are committed and the clients have been told, prints the final round and
the store, and exits.

Stopped early (Ctrl-C), it keeps what was committed: run it again with the same config to
resume from the last committed round. A config whose model differs from the one in the store
is refused; use a new dir or task name for a new model.

The store's master key is read from key_file. If that file does not exist, server creates it
(mode 0600) and says so: back it up and keep it apart from dir, since without it the store
cannot be read. Beside it, server keeps the envelope root key and the keyring of the store
(for key_file keys/server.key: keys/server.root and keys/server.keyring), created with the
store: every checkpoint is sealed under a data key of its own, which retention and erasure
("fedweave erase") shred. Keep the three key files out of the store's backups.

The config is YAML (or JSON); an unknown field is an error. Relative paths are relative to the
directory fedweave runs in. A complete config, whose model fits the synthetic data of
"fedweave client" (data: synthetic):

	federation: acme               # the name given to "fedweave ca init"
	listen: ":7443"                # gRPC with mutual TLS
	metrics_listen: 127.0.0.1:9090 # Prometheus /metrics over plain HTTP; omit to turn it off
	# http_listen: ":8443"         # the inference service over HTTPS too (POST /v1/predict,
	                               # /v1/explain), same mutual TLS and policies; omit: gRPC only
	dir: state/server              # the encrypted store: checkpoints and round history
	key_file: keys/server.key      # the store's master key, created if missing
	tls:
	  ca: pki/ca.crt               # the federation's CA
	  cert: agg.crt                # from "fedweave ca issue --role server"
	  key: agg.key
	task:
	  name: triage                 # clients ask for the task by this name
	  purpose: research            # what it trains for, as policies and partners' sharing policies see it
	  rounds: 5                    # rounds to commit
	  min_clients: 2               # a round needs this many contributions
	  clients_per_round: 0         # cohort size; 0: every connected client
	  secure: secagg               # protection of updates: secagg (SecAgg+, the server learns only
	                               # the sum), mhe (threshold BGV: one key set-up, then t clients
	                               # help decrypt the sum) or none (plaintext, for debugging)
	  secagg: {kem: x25519}        # k neighbours (0: all), t shares, kem x25519 or hybrid,
	                               # quant {bits: 16, clip: 1}
	  # mhe: {threshold: 2, max_weight: 0, quant: {bits: 16}}
	                               # for secure: mhe; threshold 0: a majority, at most min_clients;
	                               # max_weight 0: from the clients' declared records
	  # dp:                        # differential privacy, epsilon per round in the round history
	  #   max_epsilon: 8           # the task stops before a round would pass it (0: no limit)
	  #   delta: 1e-5
	  #   record: {noise_multiplier: 1, clip: 1, sample_rate: 0.05}
	  #                            # DP-SGD in every client: a guarantee per record, any secure
	  #   partner: {noise_multiplier: 1, clip: 10}
	  #                            # Skellam noise under secagg: a guarantee per partner; it needs
	  #                            # cohorts of hundreds to keep the model useful
	  strategy: fedavg             # fedavg, fedprox (with prox_mu), fedadam or fedyogi (with server_lr)
	  local_epochs: 1
	  batch_size: 64
	  optimizer: adam              # the clients' local optimizer: adam or sgd
	  modality_dropout: 0.2        # chance of hiding each modality of a training sample
	  seed: 1
	  round_timeout: 5m            # time for the cohort's updates, local training included
	  phase_timeout: 30s           # time for every later protocol phase
	  model:                       # the global model; every client's records must fit it
	    classes: 4                 # number of labels
	    dim: 32                    # width of each modality's embedding
	    hidden: 64                 # width of the fusion head's hidden layer
	    fusion: gated              # concat, gated, attention or late
	    text: {buckets: 2048, max_len: 24, embed_dim: 32, filters: 48, kernel: 3, attention: 32}
	    image: {c: 1, h: 16, w: 16, conv1: 8, conv2: 16}   # channels, height, width (multiples of 4)
	    tabular: {fields: 6, hidden: 64}                   # fields: number of tabular columns
	  classes: [amber, birch, cedar, dune]                 # the labels' names, for inference
	  tabular_fields: [age, income, score_a, score_b, visits, ratio]  # the columns' names
	serve:                         # limits of the inference service (gRPC and HTTPS)
	  max_request_bytes: 1048576   # largest record (at most 1 MiB)
	  rate_per_second: 20          # calls a second per caller (token bucket) ...
	  burst: 40                    # ... and how many at once
	  workers: 0                   # records evaluated at once; 0: one per CPU
	policy:                        # who may do what: cedar policies, deny by default
	  members: [hospital-a, hospital-b]  # the orgs that are members of the federation
	  # dir: policies              # a .cedarschema and .cedar files (default: the built-in ones)
	  # entities: entities.json    # instead of members: entity data, as examples/policies/entities.json
	retention:                     # optional: how much the server keeps
	  checkpoints: 10              # the newest 10 committed checkpoints (0: all); older ones are
	                               # deleted and their keys shredded

Leave out the encoder of a modality that no partner has. Unset task fields take defaults:
name default, purpose research, rounds 5, min_clients 2, secure secagg, strategy fedavg,
local_epochs 1, batch_size 64, optimizer adam, round_timeout 5m, phase_timeout 30s; the rest 0.

Every call is decided by the policies (see "fedweave policy -h"): the built-in ones let the
clients of member orgs train, the readers of member orgs download the committed models, and
the admins of member orgs change the policies and read the audit log; everything else is
denied, and the server logs each denial. The policies of policy.dir seed the store on the first
start; from then on the set in force is the store's, changed with "fedweave policy apply".
Joins, rounds, policy changes, denials and model downloads go to the audit log in the store
("fedweave audit").

While it runs, the server also serves its committed models to the readers of member orgs: the
Inference service (Predict and Explain, "fedweave predict -h") over gRPC on listen, and over
HTTPS on http_listen when set, always the latest model that is not tainted unless a round is
named. With --serve it goes on serving them after the task is complete, until interrupted.

--addr-file is for scripts and tests: with listen 127.0.0.1:0 the system picks a free port,
and server writes the address it listens on to the file, where "fedweave client --server
@FILE" finds it.

Example:

	$ fedweave ca init --dir pki --federation acme
	$ fedweave ca issue --dir pki --org acme --role server --name agg --dns agg.acme.example --out agg
	$ fedweave server --config server.yaml
	fedweave server: created the store's master key keys/server.key: back it up, apart from state/server
	time=... level=INFO msg=serving federation=acme task=triage address=[::]:7443 rounds=5 min_clients=2
	time=... level=INFO msg=round round=1 committed=true participants=3 dropped=0 eval_accuracy=0.2533 seconds=4.1
	...
	task triage complete: round 5 committed, 5 of 5 rounds
	store: state/server
`

var serverCmd = &Command{
	Name:    "server",
	Summary: "run the aggregation server of a federation (operator)",
	Usage:   serverUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		config := flags.String("config", "", "the server's config `file`, YAML or JSON (required)")
		listen := flags.String("listen", "", "`address` to listen on, instead of the config's listen")
		addrFile := flags.String("addr-file", "", "write the address the server listens on to `file` (removed at exit), for scripts and tests")
		timeout := flags.Duration("timeout", 0, "give up when the task is not complete after this `duration`; 0: no limit")
		verbose := flags.Bool("v", false, "log the server's events (clients joining, rounds starting) besides one line per round")
		serve := flags.Bool("serve", false, "go on serving the inference service after the task is complete, until interrupted")
		return func(ctx context.Context, env *Env, args []string) error {
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *config == "":
				return Usagef("--config is required: the server's config file")
			case *timeout < 0:
				return Usagef("--timeout must not be negative, got %v", *timeout)
			}
			if *addrFile != "" {
				// A file from an earlier run must not send clients to an old address.
				if err := os.Remove(*addrFile); err != nil && !errors.Is(err, fs.ErrNotExist) {
					return Hint(err, "pass an --addr-file you can write")
				}
			}
			cfg, err := loadServerConfig(*config, *listen)
			if err != nil {
				return err
			}
			return runServer(ctx, env, cfg, serverRun{addrFile: *addrFile, timeout: *timeout, verbose: *verbose, serve: *serve})
		}
	},
}

// serverRun holds the flags of a server run besides the config.
type serverRun struct {
	addrFile string
	timeout  time.Duration
	verbose  bool
	serve    bool // serve inference after the task, until ctx is done
}

// loadServerConfig reads and checks the config, with errors that name the field at fault.
func loadServerConfig(path, listen string) (server.Config, error) {
	cfg, err := server.LoadConfig(path)
	if err != nil {
		return cfg, configError("server", path, err, reflect.TypeFor[server.Config]())
	}
	if listen != "" {
		cfg.Listen = listen
	}
	var missing []string
	if cfg.Listen == "" {
		missing = append(missing, `listen: required: the address to serve on, such as ":7443" (or use --listen)`)
	}
	if cfg.KeyFile == "" {
		missing = append(missing, "key_file: required: the store's master key file (created if missing)")
	}
	for f, v := range map[string]string{"tls.ca": cfg.TLS.CA, "tls.cert": cfg.TLS.Cert, "tls.key": cfg.TLS.Key} {
		if v == "" {
			missing = append(missing, f+": required")
		}
	}
	if len(missing) > 0 {
		slices.Sort(missing)
		return cfg, Hint(fmt.Errorf("%s: %s", path, strings.Join(missing, "; ")), configHint("server"))
	}
	return cfg, nil
}

func runServer(ctx context.Context, env *Env, cfg server.Config, run serverRun) error {
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: slog.LevelInfo}))
	// Without --v, the server itself speaks only of what goes wrong (refused messages, aborted
	// rounds); the round lines below say the rest.
	level := slog.LevelWarn
	if run.verbose {
		level = slog.LevelDebug
	}
	srvLog := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))

	if err := ensureKeyFile(env, cfg.KeyFile, cfg.Dir); err != nil {
		return err
	}
	srv, err := server.New(cfg, server.Options{
		Logger: srvLog,
		OnRound: func(r server.RoundRecord) {
			attrs := []any{"round", r.Round, "committed", r.Committed, "participants", len(r.Participants), "dropped", r.Dropped}
			if r.Refused > 0 {
				attrs = append(attrs, "refused", r.Refused)
			}
			attrs = append(attrs, "eval_accuracy", round4(r.EvalAccuracy), "seconds", math.Round(r.Seconds*100)/100)
			if !r.Committed {
				log.Warn("round", append(attrs, "reason", r.Reason)...)
				return
			}
			log.Info("round", attrs...)
		},
	})
	if err != nil {
		return serverStartError(err)
	}
	defer srv.Close()

	lis, err := net.Listen("tcp", cfg.Listen)
	if err != nil {
		return Hint(fmt.Errorf("listen on %s: %w", cfg.Listen, err),
			"is another server using the address? change listen in the config, or pass --listen")
	}
	served := make(chan error, 1)
	go func() { served <- srv.Serve(lis) }()
	addr := lis.Addr().String()
	if run.addrFile != "" {
		if err := writeAddrFile(run.addrFile, addr); err != nil {
			return Hint(err, "pass an --addr-file in a directory you can write")
		}
		defer os.Remove(run.addrFile)
	}
	t := cfg.Task
	log.Info("serving", "federation", cfg.Federation, "task", t.Name, "address", addr, "rounds", t.Rounds, "min_clients", t.MinClients)

	rctx, cancel := context.WithCancel(ctx)
	defer cancel()
	if run.timeout > 0 {
		rctx, cancel = context.WithTimeout(rctx, run.timeout)
		defer cancel()
	}
	ran := make(chan error, 1)
	go func() { ran <- srv.Run(rctx) }()
	select {
	case err = <-ran:
	case err = <-served:
		// Serve stopped before the task was done: its error, such as a metrics_listen in use.
		cancel()
		<-ran
		if err == nil {
			err = errors.New("the server stopped serving")
		}
		return Hint(err, "check listen and metrics_listen in the config")
	}
	committed, _ := srv.Params()
	if err != nil {
		switch {
		case ctx.Err() != nil:
			fmt.Fprintf(env.Stderr, "fedweave server: stopped; the store keeps round %d: run again to resume\n", committed)
			return ctx.Err()
		case errors.Is(err, context.DeadlineExceeded):
			return Hint(fmt.Errorf("the task is not complete after --timeout %v: last committed round %d", run.timeout, committed),
				"check that the clients connect (fedweave client logs why they cannot); the store keeps the committed rounds: run again to resume")
		}
		return err
	}

	// Give the clients a moment to receive the end of the task before the streams close.
	grace := time.Now().Add(2 * time.Second)
	for srv.Connected() > 0 && time.Now().Before(grace) {
		time.Sleep(20 * time.Millisecond)
	}
	fmt.Fprintf(env.Stdout, "task %s complete: round %d committed, %d of %d rounds\n", t.Name, committed, t.Rounds, t.Rounds)
	fmt.Fprintf(env.Stdout, "store: %s\n", cfg.Dir)
	if run.serve {
		return serveAfterTask(ctx, env, srv, committed)
	}
	return srv.Shutdown(2 * time.Second)
}

// ensureKeyFile creates the store's master key file if it does not exist.
func ensureKeyFile(env *Env, path, dir string) error {
	if _, err := os.Stat(path); err == nil || !errors.Is(err, fs.ErrNotExist) {
		return nil // store.Open reports a key file it cannot use
	}
	if err := os.MkdirAll(filepath.Dir(path), 0o700); err != nil {
		return Hint(fmt.Errorf("create the store's master key: %w", err), "set key_file to a path you can write")
	}
	if err := store.NewKeyFile(path); err != nil {
		return Hint(err, "set key_file to a path you can write")
	}
	fmt.Fprintf(env.Stderr, "fedweave server: created the store's master key %s: back it up, apart from %s\n", path, dir)
	return nil
}

// serverStartError adds a hint to an error of server.New.
func serverStartError(err error) error {
	msg := err.Error()
	switch {
	case errors.Is(err, store.ErrWrongKey):
		return Hint(err, "key_file must be the master key the store in dir was created with")
	case strings.Contains(msg, "certificate names"):
		return Hint(err, `tls.cert must be a server certificate of the config's federation: "fedweave ca issue --role server"`)
	case strings.Contains(msg, "store in"):
		return Hint(err, "the config's model differs from the task in the store")
	case strings.Contains(msg, "pki:"):
		return Hint(err, `check the files in tls: the federation's ca.crt, and a server certificate and key from "fedweave ca issue --role server"`)
	}
	return err
}

// writeAddrFile writes addr to path at once: a reader sees the whole address or no file.
func writeAddrFile(path, addr string) error {
	tmp := path + ".tmp"
	if err := os.WriteFile(tmp, []byte(addr+"\n"), 0o644); err != nil {
		return err
	}
	return os.Rename(tmp, path)
}

func round4(x float64) float64 { return math.Round(x*1e4) / 1e4 }

// Config files: both server and client read YAML with unknown fields refused. The decoders'
// own errors say little about where the problem is ("json: unknown field \"foo\"", or nothing
// at all for a bad duration), so configError decodes the file again, field by field, to name
// the one at fault.

func configHint(cmd string) string {
	return fmt.Sprintf(`see "fedweave %s -h" for an example config`, cmd)
}

// configError turns err, from loading the config file path into a value of type typ, into an
// error that names the file, the line or field at fault and what is wrong, on one line, with
// a hint at the command's example config.
func configError(cmd, path string, err error, typ reflect.Type) error {
	hint := configHint(cmd)
	if errors.Is(err, fs.ErrNotExist) {
		return Hint(fmt.Errorf("no config file %s", path), "write one: "+hint)
	}
	b, rerr := os.ReadFile(path)
	if rerr != nil {
		return Hint(rerr, "pass a --config you can read")
	}
	if typ == nil {
		return Hint(err, hint)
	}
	var doc any
	if yerr := yaml.Unmarshal(b, &doc); yerr != nil {
		return Hint(fmt.Errorf("%s", yamlMessage(path, yerr)), hint)
	}
	if ferr := fieldError(doc, typ, ""); ferr != nil {
		return Hint(fmt.Errorf("%s: %w", path, ferr), hint)
	}
	msg := strings.TrimPrefix(err.Error(), path+": ")
	return Hint(fmt.Errorf("%s: %s", path, strings.ReplaceAll(msg, "\n", "; ")), hint)
}

var yamlLine = regexp.MustCompile(`^line (\d+): `)

// yamlMessage shortens an error of sigs.k8s.io/yaml to "path:line: what".
func yamlMessage(path string, err error) string {
	msg := err.Error()
	for _, p := range []string{"error converting YAML to JSON: ", "yaml: ", "unmarshal errors:"} {
		msg = strings.TrimPrefix(msg, p)
	}
	msg = strings.Join(strings.Fields(strings.ReplaceAll(msg, "\n", " ")), " ")
	if m := yamlLine.FindStringSubmatch(msg); m != nil {
		return path + ":" + m[1] + ": " + msg[len(m[0]):]
	}
	return path + ": " + msg
}

var jsonUnmarshaler = reflect.TypeFor[json.Unmarshaler]()

// fieldError returns the first problem of doc, a config decoded generically (maps, lists,
// float64s, strings, bools, nil), as a value of type t: an unknown field, or a field whose
// value does not decode. path is the dotted name of doc in the config. It returns nil when
// every field decodes, in which case what is wrong, if anything, is a value that decodes but
// fails validation.
func fieldError(doc any, t reflect.Type, path string) error {
	for t.Kind() == reflect.Pointer {
		t = t.Elem()
	}
	if doc == nil {
		return nil
	}
	if t.Kind() != reflect.Struct || reflect.PointerTo(t).Implements(jsonUnmarshaler) {
		b, err := json.Marshal(doc)
		if err != nil {
			return nil
		}
		if err := json.Unmarshal(b, reflect.New(t).Interface()); err != nil {
			return fmt.Errorf("%s: %s", fieldName(path), decodeMessage(err))
		}
		return nil
	}
	m, ok := doc.(map[string]any)
	if !ok {
		return fmt.Errorf("%s: got %s, want a mapping of fields", fieldName(path), jsonWord(doc))
	}
	fields := map[string]reflect.Type{}
	var names []string
	for i := range t.NumField() {
		f := t.Field(i)
		name, _, _ := strings.Cut(f.Tag.Get("json"), ",")
		if !f.IsExported() || name == "-" {
			continue
		}
		if name == "" {
			name = f.Name
		}
		fields[name] = f.Type
		names = append(names, name)
	}
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.Sort(keys)
	for _, k := range keys {
		p := k
		if path != "" {
			p = path + "." + k
		}
		ft, ok := fields[k]
		if !ok {
			where := "the config's fields are"
			if path != "" {
				where = "the fields of " + path + " are"
			}
			return fmt.Errorf("unknown field %s; %s %s", p, where, strings.Join(names, ", "))
		}
		if err := fieldError(m[k], ft, p); err != nil {
			return err
		}
	}
	return nil
}

func fieldName(path string) string {
	if path == "" {
		return "the config"
	}
	return path
}

// decodeMessage says why a value did not decode, without the decoder's Go type names.
func decodeMessage(err error) string {
	var te *json.UnmarshalTypeError
	if errors.As(err, &te) {
		got := te.Value
		switch {
		case strings.HasPrefix(got, "number "):
			got = strings.TrimPrefix(got, "number ")
		case got == "object":
			got = "a mapping"
		case got == "array":
			got = "a list"
		case got == "bool":
			got = "true or false"
		default:
			got = "a " + got
		}
		return fmt.Sprintf("got %s, want %s", got, typeWord(te.Type))
	}
	return err.Error()
}

func typeWord(t reflect.Type) string {
	switch t.Kind() {
	case reflect.Int, reflect.Int8, reflect.Int16, reflect.Int32, reflect.Int64:
		return "an integer"
	case reflect.Uint, reflect.Uint8, reflect.Uint16, reflect.Uint32, reflect.Uint64:
		return "a non-negative integer"
	case reflect.Float32, reflect.Float64:
		return "a number"
	case reflect.String:
		return "a string"
	case reflect.Bool:
		return "true or false"
	case reflect.Struct, reflect.Map:
		return "a mapping"
	case reflect.Slice, reflect.Array:
		return "a list"
	}
	return t.String()
}

func jsonWord(v any) string {
	switch v.(type) {
	case []any:
		return "a list"
	case string:
		return "a string"
	case float64:
		return "a number"
	case bool:
		return "true or false"
	}
	return "a value"
}
