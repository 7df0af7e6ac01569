package cli

import (
	"context"
	"crypto/x509"
	"errors"
	"flag"
	"fmt"
	"io/fs"
	"log/slog"
	"net"
	"os"
	"reflect"
	"strings"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/fedweave/fedweave/client"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
)

const clientUsage = `usage: fedweave client --config FILE [--server ADDR|@FILE] [--timeout DURATION] [--v]
       fedweave client erase --subject ID (--config FILE | --store DIR --keys DIR) [--rotate]
       fedweave client budget (--config FILE | --store DIR --keys DIR) [--delta D]

Client takes part in a federation's training task for a partner organisation: it reads the
partner's records, connects to the aggregation server with the partner's certificate (mutual
TLS), and, each round, evaluates the global model it receives on a local test split, trains it
on the local records and sends back only the weighted change of the model's parameters. The
records never leave. It prints one line per round on stderr and exits when the server says the
task is complete. When the connection breaks, it reconnects and rejoins the next round.

The config is YAML (or JSON); an unknown field is an error. Relative paths are relative to the
directory fedweave runs in. A complete config:

	server: agg.acme.example:7443  # host:port of the aggregation server
	server_name: agg.acme.example  # name the server's certificate must carry; default: the host of server
	task: triage                   # the task's name in the server's config
	tls:
	  ca: pki/ca.crt               # the federation's CA
	  cert: node1.crt              # from "fedweave ca issue --role client"
	  key: node1.key
	data: records.jsonl            # the partner's records: a JSONL manifest, or synthetic
	tabular_csv: fields.csv        # optional: tabular fields joined to the manifest's records by id
	image_size: 16                 # side that images are resized to: the model's image h and w (default 28)
	test_frac: 0.2                 # share of the records held out to evaluate the global model
	seed: 7                        # the local test split, initialisation and shuffling
	sharing: sharing.yaml          # optional: the partner's own sharing policy
	store:                         # optional: keep the records in an encrypted store, train from it
	  dir: state/records           # the store: badger encryption, records sealed per data subject
	  keys: keys/records           # its keys (master.key, root.key, keyring), created if missing;
	                               # keep them apart from dir and out of its backups

data: synthetic stands for a partner's share of fedweave's synthetic data, so that a tutorial
runs several clients without files: that many records are generated from the synthetic seed
(the same for every client), split among parts clients with label skew (Dirichlet, alpha
0.5), and this client takes part number part (from 0), with the modalities a partner of that
number has (part 0 all three, part 1 text and tabular, part 2 image and tabular, part 3 text
and image, then again):

	data: synthetic
	synthetic: {records: 4000, seed: 1, part: 0, parts: 3}

The sharing policy is the partner's own rule, whatever the federation's policies say: which
federations and tasks the client takes part in, which modalities of its records may
contribute, and which purposes it accepts (an omitted list allows everything, an empty one
nothing). The client checks the task's purpose with the server before it joins, removes the
other modalities from its records before it trains, and sends zero change and zero weight for
their encoders:

	federations: [acme]
	tasks: [triage]
	modalities: [text, tabular]    # no image leaves this site
	purposes: [research, diagnosis]

With a store, the client imports the records of data into it (skipping erased subjects) and
trains on the store's records; the data subject of a record is its id. "fedweave client erase
--subject ID" erases a subject: its data key is shredded (a copy of the store taken before the
erasure cannot yield its records, even with the store's keys) and its records are deleted; the
store remembers the subject's pseudonym, so that its records are not imported again while data
still has them. --rotate also moves the other subjects' keys to a new keyring epoch, so that no
copy of the store from before opens with the current keys at all. Stop the client first: a store
is used by one process at a time.

Under differential privacy (the task's dp: section) the client keeps a privacy ledger: the
Rényi-DP cost of every update it sends, computed on its side from the round's parameters, per
record (DP-SGD) and per partner (distributed noise), composed over rounds and over every task
that uses the same store. "max_epsilon: 4" (and optionally "delta: 1e-6") in the sharing
policy is the partner's budget: the client stops before an update that would take a unit past
it. "fedweave client budget" prints the ledger: for each unit, the epsilon over all tasks
(the curves composed, less than the sum of the tasks' epsilons), then each task's, with the
number of updates sent.

The server address may also be @FILE: the address is read from FILE, as "fedweave server
--addr-file FILE" writes it, waiting up to a minute for the file to appear (for scripts and
tests).

Example:

	$ fedweave ca issue --dir pki --principal fedweave://acme/org/hospital-a/client/node1 --out node1
	$ fedweave client --config client.yaml
	fedweave client: records.jsonl: 1200 records (text, image, tabular)
	round 1: global model accuracy 0.2417 on 240 local test records; trained: loss 1.2093, 1874 samples/s
	round 2: global model accuracy 0.5208 on 240 local test records; trained: loss 0.8911, 1902 samples/s
	...
	task triage complete: this client took part in 5 rounds
	$ fedweave client erase --subject patient-0017 --config client.yaml
	subject erased: 1 record deleted, its data key shredded
`

var clientCmd = &Command{
	Name:    "client",
	Summary: "take part in a federation's training with local records (partner)",
	Usage:   clientUsage,
	Flags: func(flags *flag.FlagSet) RunFunc {
		config := flags.String("config", "", "the client's config `file`, YAML or JSON (required)")
		serverAddr := flags.String("server", "", "`address` of the server (host:port, or @FILE to read it from FILE), instead of the config's server")
		timeout := flags.Duration("timeout", 0, "give up when the task is not complete after this `duration`; 0: no limit")
		verbose := flags.Bool("v", false, "log the client's events (joining, updates sent) besides one line per round")
		return func(ctx context.Context, env *Env, args []string) error {
			if len(args) > 0 && args[0] == "erase" {
				return runClientErase(ctx, env, *config, args[1:])
			}
			if len(args) > 0 && args[0] == "budget" {
				return runClientBudget(ctx, env, *config, args[1:])
			}
			switch {
			case len(args) > 0:
				return Usagef("unexpected argument %q", args[0])
			case *config == "":
				return Usagef("--config is required: the client's config file")
			case *timeout < 0:
				return Usagef("--timeout must not be negative, got %v", *timeout)
			}
			cfg, err := loadClientConfig(*config, *serverAddr)
			if err != nil {
				return err
			}
			if *timeout > 0 {
				tctx, cancel := context.WithTimeout(ctx, *timeout)
				defer cancel()
				err := runClient(tctx, env, cfg, *verbose)
				if ctx.Err() == nil && errors.Is(err, context.DeadlineExceeded) {
					return Hint(fmt.Errorf("the task is not complete after --timeout %v", *timeout),
						"check that the server runs and that the messages above say why the client could not take part")
				}
				return err
			}
			return runClient(ctx, env, cfg, *verbose)
		}
	},
}

// clientConfig is the config file of "fedweave client".
type clientConfig struct {
	Server     string              `json:"server"`
	ServerName string              `json:"server_name,omitempty"`
	Task       string              `json:"task"`
	TLS        clientTLS           `json:"tls"`
	Data       string              `json:"data"`
	Synthetic  *syntheticPartition `json:"synthetic,omitempty"`
	TabularCSV string              `json:"tabular_csv,omitempty"`
	ImageSize  int                 `json:"image_size,omitempty"`
	TestFrac   float64             `json:"test_frac,omitempty"`
	Seed       uint64              `json:"seed"`
	Sharing    string              `json:"sharing,omitempty"`
	Store      *clientStore        `json:"store,omitempty"`

	path string // the file it was read from
}

// clientStore names the client's encrypted record store.
type clientStore struct {
	Dir  string `json:"dir"`
	Keys string `json:"keys"`
}

type clientTLS struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// syntheticPartition is one partner's share of the synthetic data.
type syntheticPartition struct {
	Records int    `json:"records"`
	Seed    uint64 `json:"seed"`
	Part    int    `json:"part"`
	Parts   int    `json:"parts"`
}

// syntheticAlpha is the Dirichlet label skew of data: synthetic.
const syntheticAlpha = 0.5

// loadClientConfig reads and checks a client config; serverAddr, if set, replaces its server.
func loadClientConfig(path, serverAddr string) (*clientConfig, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, configError("client", path, err, nil)
	}
	var c clientConfig
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return nil, configError("client", path, err, reflect.TypeFor[clientConfig]())
	}
	c.path = path
	if serverAddr != "" {
		c.Server = serverAddr
	}
	if c.TestFrac == 0 {
		c.TestFrac = 0.2
	}
	if err := c.validate(); err != nil {
		return nil, Hint(fmt.Errorf("%s: %s", path, strings.ReplaceAll(err.Error(), "\n", "; ")), configHint("client"))
	}
	return &c, nil
}

// validate reports every problem of the config at once.
func (c *clientConfig) validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	switch {
	case c.Server == "":
		bad("server: required: host:port of the aggregation server (or use --server)")
	case strings.HasPrefix(c.Server, "@"):
		if c.Server == "@" {
			bad("server: @ needs a file name, as in @server.addr")
		}
	default:
		if _, _, err := net.SplitHostPort(c.Server); err != nil {
			bad("server: %q is not host:port", c.Server)
		}
	}
	if c.Task == "" {
		bad("task: required: the task's name in the server's config")
	}
	if c.TLS.CA == "" || c.TLS.Cert == "" || c.TLS.Key == "" {
		bad("tls: ca, cert and key are required")
	}
	switch c.Data {
	case "":
		bad("data: required: a JSONL manifest, or synthetic")
	case "synthetic":
		s := c.Synthetic
		switch {
		case s == nil:
			bad("synthetic: required with data: synthetic, as in {records: 4000, seed: 1, part: 0, parts: 3}")
		case s.Parts < 1 || s.Parts > 1024:
			bad("synthetic.parts: must be from 1 to 1024, got %d", s.Parts)
		case s.Part < 0 || s.Part >= s.Parts:
			bad("synthetic.part: must be from 0 to %d (parts - 1), got %d", s.Parts-1, s.Part)
		case s.Records < 10*s.Parts:
			bad("synthetic.records: must be at least 10 per part, %d for %d parts; got %d", 10*s.Parts, s.Parts, s.Records)
		}
		if c.TabularCSV != "" || c.ImageSize != 0 {
			bad("tabular_csv and image_size: only with a manifest as data")
		}
	default:
		if c.Synthetic != nil {
			bad("synthetic: only with data: synthetic")
		}
	}
	if c.ImageSize < 0 || c.ImageSize > dataset.MaxImageSize {
		bad("image_size: must be from 1 to %d, got %d", dataset.MaxImageSize, c.ImageSize)
	}
	if !(c.TestFrac > 0 && c.TestFrac < 1) {
		bad("test_frac: must be between 0 and 1, got %g", c.TestFrac)
	}
	if st := c.Store; st != nil && (st.Dir == "" || st.Keys == "") {
		bad("store: dir and keys are required, as in {dir: state/records, keys: keys/records}")
	}
	return errors.Join(errs...)
}

func runClient(ctx context.Context, env *Env, cfg *clientConfig, verbose bool) error {
	level := slog.LevelWarn
	if verbose {
		level = slog.LevelDebug
	}
	log := slog.New(slog.NewTextHandler(env.Stderr, &slog.HandlerOptions{Level: level}))

	id, pool, err := clientIdentity(cfg)
	if err != nil {
		return err
	}
	src, err := clientSource(env, cfg)
	if err != nil {
		return err
	}
	var sharing *client.SharingPolicy
	if cfg.Sharing != "" {
		if sharing, err = client.LoadSharingPolicy(cfg.Sharing); err != nil {
			return Hint(fmt.Errorf("%s: sharing: %s", cfg.path, strings.TrimPrefix(err.Error(), "client: ")),
				"a sharing policy lists federations, tasks, modalities (text, image, tabular) and purposes; see \"fedweave client -h\"")
		}
		fmt.Fprintf(env.Stderr, "fedweave client: sharing policy %s: %s\n", cfg.Sharing, describeSharing(sharing))
	}
	addr := cfg.Server
	if file, ok := strings.CutPrefix(addr, "@"); ok {
		if addr, err = readAddrFile(ctx, env, file, time.Minute); err != nil {
			return err
		}
	}
	st, err := openClientStore(cfg)
	if err != nil {
		return err
	}
	if st != nil {
		defer st.Close()
	}
	rounds := 0
	c, err := client.New(client.Config{
		Server: addr, ServerName: cfg.ServerName, Task: cfg.Task,
		Identity: id, CAPool: pool,
		Source: src, Store: st, TestFrac: cfg.TestFrac, Seed: cfg.Seed, Sharing: sharing,
		Logger: log,
		OnRound: func(e client.RoundEvent) {
			switch e.Stage {
			case "trained":
				rounds++
				fmt.Fprintf(env.Stderr, "round %d: global model accuracy %.4f on %d local test records; trained: loss %.4f, %.0f samples/s\n",
					e.Round, e.Eval.Accuracy, e.Eval.N, e.Train.Loss, e.Train.SamplesPerSec)
			case "end":
				if !e.Committed {
					fmt.Fprintf(env.Stderr, "round %d: aborted by the server; the next round starts from the last committed model\n", e.Round)
				}
			}
		},
	})
	if err != nil {
		return Hint(err, `check server (host:port) in the config`)
	}
	err = c.Run(ctx)
	var h *HintError
	switch {
	case err == nil:
	case errors.As(err, &h):
		return err
	case errors.Is(err, client.ErrNotShared):
		return Hint(err, fmt.Sprintf("the partner's sharing policy (sharing: %s) decides; change it only if the partner agrees", cfg.Sharing))
	case errors.Is(err, client.ErrRefused):
		return Hint(err, fmt.Sprintf("check that the server runs a task named %q and that tls.cert is a client certificate from the federation's CA", cfg.Task))
	case strings.Contains(err.Error(), "do not fit the task's model"):
		return Hint(err, "the task's model (task.model in the server's config) must fit the records: classes, tabular fields, image size")
	default:
		return err
	}
	fmt.Fprintf(env.Stdout, "task %s complete: this client took part in %d rounds\n", cfg.Task, rounds)
	return nil
}

// clientIdentity loads the partner's certificate and the federation's CA, and checks what the
// server would check of the certificate, so that a wrong file fails here, with its name,
// rather than as a refused connection.
func clientIdentity(cfg *clientConfig) (*pki.Identity, *x509.CertPool, error) {
	certHint := `issue a client certificate with "fedweave ca issue --role client ..." (on the CA's machine)`
	id, err := pki.LoadIdentity(cfg.TLS.Cert, cfg.TLS.Key)
	if err != nil {
		return nil, nil, Hint(fmt.Errorf("%s: tls.cert and tls.key: %w", cfg.path, err), certHint)
	}
	pool, err := pki.LoadPool(cfg.TLS.CA)
	if err != nil {
		return nil, nil, Hint(fmt.Errorf("%s: tls.ca: %w", cfg.path, err), "tls.ca is the federation's ca.crt, from its admin")
	}
	if p := id.Principal; p.Role != pki.RoleClient {
		return nil, nil, Hint(fmt.Errorf("%s: tls.cert names %s, whose role %s may not train", cfg.path, p, p.Role), certHint)
	}
	opts := x509.VerifyOptions{Roots: pool, Intermediates: x509.NewCertPool(), KeyUsages: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}}
	for _, der := range id.Cert.Certificate[1:] {
		if c, err := x509.ParseCertificate(der); err == nil {
			opts.Intermediates.AddCert(c)
		}
	}
	_, err = id.Cert.Leaf.Verify(opts)
	var unknown x509.UnknownAuthorityError
	var invalid x509.CertificateInvalidError
	switch {
	case err == nil:
		return id, pool, nil
	case errors.As(err, &unknown):
		return nil, nil, Hint(fmt.Errorf("%s: tls.cert (%s) was not issued by the CA in tls.ca (%s): the server would refuse it", cfg.path, cfg.TLS.Cert, cfg.TLS.CA),
			"use the certificate that your federation's CA issued for this client, and that federation's ca.crt as tls.ca")
	case errors.As(err, &invalid) && invalid.Reason == x509.Expired:
		return nil, nil, Hint(fmt.Errorf("%s: tls.cert (%s) is not valid now: it runs from %s to %s", cfg.path, cfg.TLS.Cert,
			formatTime(id.Cert.Leaf.NotBefore), formatTime(id.Cert.Leaf.NotAfter)), "ask the federation's admin for a new certificate")
	}
	return nil, nil, Hint(fmt.Errorf("%s: tls.cert (%s): %w", cfg.path, cfg.TLS.Cert, err), certHint)
}

// clientSource returns the partner's records as the config names them.
func clientSource(env *Env, cfg *clientConfig) (client.Source, error) {
	if cfg.Data == "synthetic" {
		s := cfg.Synthetic
		d := dataset.Synthetic(dataset.SyntheticConfig{N: s.Records, Seed: s.Seed})
		parts := dataset.DirichletPartition(d.Labels(), len(d.Schema.Classes), s.Parts, syntheticAlpha, s.Seed)
		avail := dataset.StandardAvailabilities(s.Parts)[s.Part]
		share := dataset.ApplyAvailability(d.Subset(parts[s.Part]), avail)
		fmt.Fprintf(env.Stderr, "fedweave client: synthetic data, part %d of %d: %d records (%s)\n",
			s.Part, s.Parts, len(share.Records), strings.Join(avail.Names(), ", "))
		return client.DatasetSource(share), nil
	}
	if _, err := os.Stat(cfg.Data); errors.Is(err, fs.ErrNotExist) {
		return nil, Hint(fmt.Errorf("%s: data: no such file %s", cfg.path, cfg.Data), "data is a JSONL manifest of the partner's records, or synthetic")
	}
	manifest := client.ManifestSource(cfg.Data, dataset.ManifestOptions{TabularCSV: cfg.TabularCSV, ImageSize: cfg.ImageSize})
	return client.SourceFunc(func(ctx context.Context) (*dataset.Dataset, error) {
		d, err := manifest.Records(ctx)
		if err != nil {
			return nil, Hint(err, "fix the line named above; the manifest format is in the dataset package documentation")
		}
		var mods []string
		counts := d.ModalityCounts()
		for _, m := range dataset.Modalities {
			if counts[m] > 0 {
				mods = append(mods, m.String())
			}
		}
		fmt.Fprintf(env.Stderr, "fedweave client: %s: %d records (%s)\n", cfg.Data, len(d.Records), strings.Join(mods, ", "))
		return d, nil
	}), nil
}

// readAddrFile waits up to wait for file to hold an address, as "fedweave server --addr-file"
// writes it, and returns the address.
func readAddrFile(ctx context.Context, env *Env, file string, wait time.Duration) (string, error) {
	deadline := time.Now().Add(wait)
	for {
		b, err := os.ReadFile(file)
		if addr := strings.TrimSpace(string(b)); err == nil && addr != "" {
			if _, _, err := net.SplitHostPort(addr); err != nil {
				return "", Hint(fmt.Errorf("server: %s holds %q, not host:port", file, addr), `the file is written by "fedweave server --addr-file"`)
			}
			return addr, nil
		}
		if err != nil && !errors.Is(err, fs.ErrNotExist) {
			return "", err
		}
		if time.Now().After(deadline) {
			return "", Hint(fmt.Errorf("server: no address in %s after %v", file, wait), `start "fedweave server --addr-file`+
				" "+file+`" first, or give the server's host:port`)
		}
		select {
		case <-ctx.Done():
			return "", ctx.Err()
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// describeSharing says what a sharing policy allows, on one line.
func describeSharing(p *client.SharingPolicy) string {
	list := func(what string, names []string) string {
		switch {
		case names == nil:
			return what + " any"
		case len(names) == 0:
			return what + " none"
		}
		return what + " " + strings.Join(names, ", ")
	}
	return strings.Join([]string{
		list("federations", p.Federations), list("tasks", p.Tasks),
		list("modalities", p.Modalities), list("purposes", p.Purposes),
	}, "; ")
}
