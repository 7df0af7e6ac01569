package cli

import (
	"bytes"
	"context"
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/server"
)

// exampleConfig returns the config in usage that starts with the line first: the lines
// indented by a tab from there on, without the tab.
func exampleConfig(t *testing.T, usage, first string) string {
	t.Helper()
	_, rest, ok := strings.Cut(usage, "\n\t"+first+"\n")
	if !ok {
		t.Fatalf("usage has no example config starting with %q", first)
	}
	var b strings.Builder
	b.WriteString(first + "\n")
	for line := range strings.Lines(rest) {
		if !strings.HasPrefix(line, "\t") {
			break
		}
		b.WriteString(line[1:])
	}
	return b.String()
}

func writeFile(t *testing.T, name, content string) string {
	t.Helper()
	path := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(path, []byte(content), 0o644); err != nil {
		t.Fatal(err)
	}
	return path
}

// TestServerExampleConfig: the config in "fedweave server -h" loads as it is, and its model
// fits the synthetic data that "fedweave client" generates.
func TestServerExampleConfig(t *testing.T) {
	text := exampleConfig(t, serverUsage, `federation: acme               # the name given to "fedweave ca init"`)
	cfg, err := loadServerConfig(writeFile(t, "server.yaml", text), "")
	if err != nil {
		t.Fatalf("the example config does not load: %v\n%s", err, text)
	}
	if cfg.Task.Name != "triage" || cfg.Task.RoundTimeout.Duration != 5*time.Minute || cfg.Task.Model.Image == nil || cfg.MetricsListen == "" {
		t.Errorf("the example config loads as %+v", cfg)
	}
	m, err := models.New(cfg.Task.Model, 1)
	if err != nil {
		t.Fatal(err)
	}
	if _, err := m.Encode(dataset.Synthetic(dataset.SyntheticConfig{N: 20, Seed: 1})); err != nil {
		t.Errorf("the example model does not fit the synthetic data: %v", err)
	}
}

// TestClientExampleConfigs: both configs in "fedweave client -h" load as they are.
func TestClientExampleConfigs(t *testing.T) {
	text := exampleConfig(t, clientUsage, "server: agg.acme.example:7443  # host:port of the aggregation server")
	cfg, err := loadClientConfig(writeFile(t, "client.yaml", text), "")
	if err != nil {
		t.Fatalf("the example config does not load: %v\n%s", err, text)
	}
	if cfg.Data != "records.jsonl" || cfg.TLS.Key != "node1.key" || cfg.Seed != 7 || cfg.ImageSize != 16 {
		t.Errorf("the example config loads as %+v", cfg)
	}

	var synth strings.Builder
	for line := range strings.Lines(text) {
		if !strings.HasPrefix(line, "data:") && !strings.HasPrefix(line, "tabular_csv:") && !strings.HasPrefix(line, "image_size:") {
			synth.WriteString(line)
		}
	}
	synth.WriteString(exampleConfig(t, clientUsage, "data: synthetic"))
	cfg, err = loadClientConfig(writeFile(t, "client.yaml", synth.String()), "")
	if err != nil {
		t.Fatalf("the synthetic example does not load: %v\n%s", err, synth.String())
	}
	if s := cfg.Synthetic; s == nil || *s != (syntheticPartition{Records: 4000, Seed: 1, Part: 0, Parts: 3}) {
		t.Errorf("the synthetic example loads as %+v", s)
	}
}

func TestFieldError(t *testing.T) {
	tests := []struct {
		name, yaml, want string
	}{
		{"ok", "federation: a\ntask: {rounds: 3, round_timeout: 10s}\n", ""},
		{"empty", "", ""},
		{"unknown top-level", "federaton: a\n", "unknown field federaton; the config's fields are federation, listen, metrics_listen, dir, key_file, tls, task, policy, http_listen, serve, retention"},
		{"unknown nested", "task: {model: {text: {bukets: 3}}}\n", "unknown field task.model.text.bukets; the fields of task.model.text are buckets, max_len, embed_dim, filters, kernel, attention"},
		{"string for int", "task: {rounds: many}\n", "task.rounds: got a string, want an integer"},
		{"fraction for int", "task: {rounds: 1.5}\n", "task.rounds: got 1.5, want an integer"},
		{"negative seed", "task: {seed: -1}\n", "task.seed: got -1, want a non-negative integer"},
		{"list for mapping", "tls: [a, b]\n", "tls: got a list, want a mapping of fields"},
		{"mapping for string", "federation: {name: a}\n", "federation: got a mapping, want a string"},
		{"bad duration", "task: {phase_timeout: soon}\n", `task.phase_timeout: time: invalid duration "soon"`},
		{"not a mapping", "- a\n- b\n", "the config: got a list, want a mapping of fields"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			path := writeFile(t, "server.yaml", tt.yaml)
			_, loadErr := server.LoadConfig(path)
			if tt.want == "" {
				var doc any
				if err := yaml.Unmarshal([]byte(tt.yaml), &doc); err != nil {
					t.Fatal(err)
				}
				if err := fieldError(doc, reflect.TypeFor[server.Config](), ""); err != nil {
					t.Fatalf("fieldError = %v", err)
				}
				return
			}
			if loadErr == nil {
				t.Fatal("LoadConfig accepted the config")
			}
			err := configError("server", path, loadErr, reflect.TypeFor[server.Config]())
			if want := path + ": " + tt.want; err.Error() != want {
				t.Errorf("error %q\nwant  %q", err, want)
			}
		})
	}
}

// TestServerInterrupt: Ctrl-C stops a server that waits for clients; what was committed stays.
func TestServerInterrupt(t *testing.T) {
	dir := t.TempDir()
	var out bytes.Buffer
	env := &Env{Stdin: strings.NewReader(""), Stdout: &out, Stderr: &out}
	for _, args := range [][]string{
		{"ca", "init", "--dir", filepath.Join(dir, "ca"), "--federation", "acme"},
		{"ca", "issue", "--dir", filepath.Join(dir, "ca"), "--org", "acme", "--role", "server", "--name", "agg", "--out", filepath.Join(dir, "agg")},
	} {
		if code := env.run(context.Background(), args); code != 0 {
			t.Fatalf("fedweave %v: exit status %d\n%s", args, code, &out)
		}
	}
	config := writeFile(t, "server.yaml", `
federation: acme
listen: 127.0.0.1:0
dir: `+filepath.Join(dir, "state")+`
key_file: `+filepath.Join(dir, "keys", "master.key")+`
tls: {ca: `+filepath.Join(dir, "ca", "ca.crt")+`, cert: `+filepath.Join(dir, "agg.crt")+`, key: `+filepath.Join(dir, "agg.key")+`}
task:
  model: {classes: 4, dim: 8, hidden: 8, fusion: concat, tabular: {fields: 6, hidden: 8}}
`)
	addrFile := filepath.Join(dir, "server.addr")
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	out.Reset()
	code := make(chan int, 1)
	go func() { code <- env.run(ctx, []string{"server", "--config", config, "--addr-file", addrFile}) }()
	if _, err := readAddrFile(ctx, env, addrFile, 10*time.Second); err != nil {
		t.Fatal(err)
	}
	cancel()
	if c := <-code; c != 130 {
		t.Errorf("exit status %d, want 130", c)
	}
	for _, want := range []string{"created the store's master key", "msg=serving", "stopped; the store keeps round 0: run again to resume", "fedweave: error: interrupted"} {
		if !strings.Contains(out.String(), want) {
			t.Errorf("output lacks %q:\n%s", want, &out)
		}
	}
	if _, err := os.Stat(addrFile); err == nil {
		t.Error("the address file outlives the server")
	}
}
