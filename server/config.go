package server

import (
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"os"
	"runtime"
	"time"

	"sigs.k8s.io/yaml"

	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/mhe"
	"github.com/fedweave/fedweave/crypto/secagg"
	"github.com/fedweave/fedweave/models"
)

// Config is the aggregation server's configuration, as `fedweave server --config FILE` reads it
// (YAML or JSON; unknown fields are errors, so that typos surface).
type Config struct {
	Federation    string     `json:"federation"`
	Listen        string     `json:"listen"`                   // gRPC address, e.g. "127.0.0.1:7443"
	MetricsListen string     `json:"metrics_listen,omitempty"` // Prometheus /metrics over plain HTTP; empty: off
	Dir           string     `json:"dir"`                      // state: the encrypted store
	KeyFile       string     `json:"key_file"`                 // the store's master key (see store.NewKeyFile)
	TLS           TLSFiles   `json:"tls"`
	Task          TaskConfig `json:"task"`
	// Policy says who may do what (see PolicyConfig); by default the built-in policies, and
	// no member org.
	Policy PolicyConfig `json:"policy,omitempty"`
	// HTTPListen is the address of the inference service's HTTPS API (POST /v1/predict and
	// /v1/explain, the same mutual TLS and authorization as gRPC); empty: off.
	HTTPListen string `json:"http_listen,omitempty"`
	// Serve limits the inference service (gRPC and HTTPS alike).
	Serve ServeConfig `json:"serve,omitempty"`
	// Retention says how many checkpoints the server keeps (see RetentionConfig).
	Retention RetentionConfig `json:"retention,omitempty"`
}

// ServeConfig limits the inference service. The zero value of each field picks the default
// noted.
type ServeConfig struct {
	// MaxRequestBytes bounds a request's record (and an HTTP body); default and at most
	// 1 MiB, at least 1 KiB.
	MaxRequestBytes int `json:"max_request_bytes,omitempty"`
	// RatePerSecond and Burst are a token bucket per principal: each call takes a token, the
	// bucket holds Burst tokens and refills at RatePerSecond. Defaults 20 and twice the rate
	// (at least 1). A call that finds the bucket empty gets ResourceExhausted (HTTP 429).
	RatePerSecond float64 `json:"rate_per_second,omitempty"`
	Burst         int     `json:"burst,omitempty"`
	// Workers is how many requests are evaluated at once, each on its own copy of the model;
	// default the number of CPUs. Others wait.
	Workers int `json:"workers,omitempty"`
}

// MaxServeRequestBytes is the largest ServeConfig.MaxRequestBytes: a request must fit in one
// gRPC message of the server.
const MaxServeRequestBytes = 1 << 20

func (c *ServeConfig) defaults() {
	if c.MaxRequestBytes == 0 {
		c.MaxRequestBytes = MaxServeRequestBytes
	}
	if c.RatePerSecond == 0 {
		c.RatePerSecond = 20
	}
	if c.Burst == 0 {
		c.Burst = max(1, int(math.Ceil(2*c.RatePerSecond)))
	}
	if c.Workers == 0 {
		c.Workers = runtime.GOMAXPROCS(0)
	}
}

func (c *ServeConfig) validate() []error {
	var errs []error
	if c.MaxRequestBytes < 1<<10 || c.MaxRequestBytes > MaxServeRequestBytes {
		errs = append(errs, fmt.Errorf("serve.max_request_bytes: %d is outside [1024, %d]", c.MaxRequestBytes, MaxServeRequestBytes))
	}
	if !(c.RatePerSecond > 0) || math.IsInf(c.RatePerSecond, 0) {
		errs = append(errs, fmt.Errorf("serve.rate_per_second: must be a positive number"))
	}
	if c.Burst < 1 {
		errs = append(errs, fmt.Errorf("serve.burst: must be at least 1"))
	}
	if c.Workers < 1 || c.Workers > 256 {
		errs = append(errs, fmt.Errorf("serve.workers: must be from 1 to 256"))
	}
	return errs
}

// TLSFiles name the server's certificate, key and the federation CA.
type TLSFiles struct {
	CA   string `json:"ca"`
	Cert string `json:"cert"`
	Key  string `json:"key"`
}

// TaskConfig is one federated training task. Its Purpose is what the task trains for, as the
// policies (a Task's purpose, an org's consent) and the clients' sharing policies see it
// (default research).
type TaskConfig struct {
	Name            string        `json:"name"`
	Rounds          int           `json:"rounds"`            // rounds to commit
	MinClients      int           `json:"min_clients"`       // a round needs this many contributions
	ClientsPerRound int           `json:"clients_per_round"` // cohort size; 0: every connected client
	Secure          string        `json:"secure"`            // secagg (the default), mhe or none
	SecAgg          secagg.Config `json:"secagg,omitempty"`  // k, t, kem and quant for secure: secagg
	MHE             MHEConfig     `json:"mhe,omitempty"`     // threshold, max_weight and quant for secure: mhe (see mhe.go)
	Strategy        string        `json:"strategy"`          // fedavg, fedprox, fedadam, fedyogi
	// DP turns on differential privacy: DP-SGD in every client, distributed noise under
	// secure: secagg, or both (see DPConfig); nil: off.
	DP              *DPConfig   `json:"dp,omitempty"`
	ServerLR        float64     `json:"server_lr,omitempty"`
	LocalEpochs     int         `json:"local_epochs"`
	BatchSize       int         `json:"batch_size"`
	LR              float64     `json:"lr,omitempty"`
	Optimizer       string      `json:"optimizer,omitempty"`
	ProxMu          float64     `json:"prox_mu,omitempty"`
	ModalityDropout float64     `json:"modality_dropout,omitempty"`
	Seed            uint64      `json:"seed"`
	RoundTimeout    Duration    `json:"round_timeout"` // time for a cohort's first answer (training included)
	PhaseTimeout    Duration    `json:"phase_timeout"` // time for every later phase
	Purpose         string      `json:"purpose,omitempty"`
	Model           models.Spec `json:"model"`
	// Classes and TabularFields name the model's classes and tabular fields, in order, as the
	// inference service reads and writes records (the data set's schema); by default "0",
	// "1", ... and "x0", "x1", .... They are kept in the store with the task, for offline
	// prediction (OpenCheckpoint).
	Classes       []string `json:"classes,omitempty"`
	TabularFields []string `json:"tabular_fields,omitempty"`
}

// Duration is a time.Duration written as "30s" in configs.
type Duration struct{ time.Duration }

func (d Duration) MarshalJSON() ([]byte, error) { return json.Marshal(d.String()) }
func (d *Duration) UnmarshalJSON(b []byte) error {
	var s string
	if err := json.Unmarshal(b, &s); err != nil {
		return fmt.Errorf("a duration is a string such as \"30s\"")
	}
	v, err := time.ParseDuration(s)
	if err != nil {
		return err
	}
	d.Duration = v
	return nil
}

// LoadConfig reads a config file (YAML or JSON).
func LoadConfig(path string) (Config, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return Config{}, err
	}
	var c Config
	if err := yaml.UnmarshalStrict(b, &c); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	c.Defaults()
	if err := c.Validate(); err != nil {
		return Config{}, fmt.Errorf("%s: %w", path, err)
	}
	return c, nil
}

// Defaults fills unset fields with fedweave's defaults.
func (c *Config) Defaults() {
	t := &c.Task
	if t.Name == "" {
		t.Name = "default"
	}
	if t.Rounds == 0 {
		t.Rounds = 5
	}
	if t.MinClients == 0 {
		t.MinClients = 2
	}
	if t.Secure == "" {
		t.Secure = "secagg"
	}
	if t.Strategy == "" {
		t.Strategy = string(FedAvg)
	}
	if t.LocalEpochs == 0 {
		t.LocalEpochs = 1
	}
	if t.BatchSize == 0 {
		t.BatchSize = 64
	}
	if t.Optimizer == "" {
		t.Optimizer = "adam"
	}
	if t.RoundTimeout.Duration == 0 {
		t.RoundTimeout.Duration = 5 * time.Minute
	}
	if t.PhaseTimeout.Duration == 0 {
		t.PhaseTimeout.Duration = 30 * time.Second
	}
	if t.Purpose == "" {
		t.Purpose = "research"
	}
	c.Serve.defaults()
}

// Validate reports every problem of the config at once.
func (c *Config) Validate() error {
	var errs []error
	bad := func(format string, args ...any) { errs = append(errs, fmt.Errorf(format, args...)) }
	if c.Federation == "" {
		bad("federation: required")
	}
	if c.Dir == "" {
		bad("dir: required")
	}
	t := &c.Task
	if t.Rounds < 1 {
		bad("task.rounds: must be at least 1")
	}
	if t.MinClients < 1 {
		bad("task.min_clients: must be at least 1")
	}
	if t.ClientsPerRound != 0 && t.ClientsPerRound < t.MinClients {
		bad("task.clients_per_round: %d is below min_clients %d", t.ClientsPerRound, t.MinClients)
	}
	if _, _, err := ProtocolFor(t, nil, c.Federation); err != nil {
		bad("task.secure: %v", err)
	}
	st, err := ParseStrategy(t.Strategy)
	if err != nil {
		bad("task.strategy: %v", err)
	}
	if st == FedProx && t.ProxMu <= 0 {
		bad("task.prox_mu: fedprox needs a positive prox_mu")
	}
	if t.LocalEpochs < 1 || t.BatchSize < 1 {
		bad("task.local_epochs and task.batch_size: must be at least 1")
	}
	if !(t.ModalityDropout >= 0 && t.ModalityDropout < 1) {
		bad("task.modality_dropout: must be from 0 to below 1")
	}
	if err := t.Model.Validate(); err != nil {
		bad("task.model: %v", err)
	}
	errs = append(errs, c.Policy.validate()...)
	errs = append(errs, c.Serve.validate()...)
	errs = append(errs, c.Retention.validate()...)
	errs = append(errs, t.validateNames()...)
	return errors.Join(errs...)
}

// validateDP checks task.dp for a protection other than secagg: partner DP needs secagg.
func (t *TaskConfig) validateDP() error {
	if t.DP == nil {
		return nil
	}
	if err := t.DP.validateFor(t); err != nil {
		return err
	}
	if t.DP.Partner != nil {
		return fmt.Errorf("dp.partner: distributed noise needs secure: secagg, the task has %s (dp.record, DP-SGD in every client, works with any)", t.Secure)
	}
	return nil
}

// ProtocolFor returns the server's side of the task's aggregation protocol and the settings every
// client of a round must use with it (sent in RoundStart.protocol as JSON). pool, when set, lets
// the server check the clients' key advertisements itself; the clients always do.
func ProtocolFor(t *TaskConfig, pool *x509.CertPool, federation string) (agg.Protocol, []byte, error) {
	switch t.Secure {
	case "none":
		if err := t.validateDP(); err != nil {
			return nil, nil, err
		}
		return agg.Plain{}, nil, nil
	case "secagg":
		cfg, err := t.secaggConfig()
		if err != nil {
			return nil, nil, err
		}
		if t.SecAgg.KEM != "" && t.SecAgg.KEM != "x25519" && t.SecAgg.KEM != "hybrid" {
			return nil, nil, fmt.Errorf("secagg.kem %q: want x25519 or hybrid", t.SecAgg.KEM)
		}
		if err := t.SecAgg.Quant.Validate(); err != nil {
			return nil, nil, fmt.Errorf("secagg.quant: %w", err)
		}
		settings, err := json.Marshal(cfg)
		if err != nil {
			return nil, nil, err
		}
		var verify secagg.Verifier
		if pool != nil {
			verify = secagg.PKIVerifier(pool, federation)
		}
		return secagg.New(cfg, nil, verify), settings, nil
	case "mhe":
		// The round's protocol and settings depend on the task's key set-up: see
		// Server.roundProtocol. This one only checks the config.
		if err := t.validateDP(); err != nil {
			return nil, nil, err
		}
		if err := t.MHE.validate(t.MinClients); err != nil {
			return nil, nil, err
		}
		return mhe.New(mhe.Config{Quant: t.MHE.Quant}, nil), nil, nil
	}
	return nil, nil, fmt.Errorf("unknown protection %q (want none, secagg or mhe)", t.Secure)
}
