// Package client is the fedweave SDK that partner organisations embed: it joins a federation's
// task, trains on the partner's own records when the server opens a round, and sends back only
// its protected update.
//
// Start with New and Run:
//
//	c, err := client.New(client.Config{
//		Server: "agg.example.org:7443", Task: "triage",
//		CertFile: "org-a.crt", KeyFile: "org-a.key", CAFile: "ca.crt",
//		Source: client.ManifestSource("records.jsonl", dataset.ManifestOptions{}),
//	})
//	...
//	err = c.Run(ctx) // returns when the task is complete
//
// Records come from a Source, read once at start; the client holds out a local test split and
// reports, each round, how the global model it received does on it. The records never leave
// the client: what leaves is the change of the model's parameters and, per parameter group (see
// models.GroupOf), how many records fed it, protected by the task's aggregation protocol. The connection is mutual
// TLS with the partner's certificate; when the server goes away, Run reconnects with backoff and
// rejoins the next round.
//
// The partner's own sharing policy (Config.Sharing, see SharingPolicy) says which federations,
// tasks and purposes it takes part in and which modalities may contribute; the client enforces
// it before it trains and before any byte about its records leaves.
//
// Updates are protected as the task says: "secagg" (SecAgg+, crypto/secagg: the client checks
// every neighbour's signed key advertisement against the federation CA) or "none".
//
// Records may also live in an encrypted local store (Config.Store, see OpenStore): the client
// imports its Source into the store and trains from the store, and an erasure of a data
// subject (Store.EraseSubject, "fedweave client erase") takes effect from the next round on.
//
// Under "mhe" (crypto/mhe, threshold BGV), the client takes part in the task's key set-up and
// encrypts its update under the collective key; the server decrypts only the sum, with the
// help of t clients (see mhe.go).
package client

import (
	"context"
	"crypto/x509"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math"
	"net"
	"strings"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/crypto/secagg"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/models"
)

// ChunkSize is the largest payload the client puts in one message.
const ChunkSize = 1 << 20

// Source supplies a partner's records.
type Source interface {
	Records(ctx context.Context) (*dataset.Dataset, error)
}

// SourceFunc adapts a function to Source.
type SourceFunc func(ctx context.Context) (*dataset.Dataset, error)

func (f SourceFunc) Records(ctx context.Context) (*dataset.Dataset, error) { return f(ctx) }

// DatasetSource serves records already in memory.
func DatasetSource(d *dataset.Dataset) Source {
	return SourceFunc(func(context.Context) (*dataset.Dataset, error) { return d, nil })
}

// ManifestSource reads a JSONL manifest (see dataset.LoadManifest).
func ManifestSource(path string, opt dataset.ManifestOptions) Source {
	return SourceFunc(func(context.Context) (*dataset.Dataset, error) { return dataset.LoadManifest(path, opt) })
}

// Config configures a client.
type Config struct {
	Server     string // host:port of the aggregation server
	ServerName string // name its certificate must carry; default: the host of Server
	Task       string

	// The partner's identity and the federation CA: either loaded already, or files.
	Identity                  *pki.Identity
	CAPool                    *x509.CertPool
	CertFile, KeyFile, CAFile string

	Source Source
	// Store, if set, is the partner's encrypted record store: the records of Source (which may
	// then be nil) are imported into it, the client trains on the store's records, and reloads
	// them before a round when they changed (an erasure). The caller opens and closes it.
	Store    *Store
	TestFrac float64 // share of records held out for local evaluation; default 0.2
	Seed     uint64  // the local split and model initialisation

	// Sharing is the partner's sharing policy; nil allows every federation, task, purpose and
	// modality.
	Sharing *SharingPolicy
	// Ledger is the partner's privacy ledger (see Ledger), charged with every update sent
	// under differential privacy. nil: the one kept in Store, or, without a Store, one in
	// memory for this client alone.
	Ledger *Ledger

	Logger *slog.Logger // nil: discard
	// OnRound, if set, is called at each stage of a round ("start", "trained", "end").
	OnRound func(RoundEvent)
}

// RoundEvent reports a stage of a round to Config.OnRound.
type RoundEvent struct {
	Round     uint64
	Stage     string         // "start": parameters received; "trained": update sent; "end": round closed
	Eval      models.Metrics // the received global model on the local test split (from "start" on)
	Train     models.TrainStats
	Committed bool // at "end"
}

// Client is one partner's participation in a task.
type Client struct {
	cfg   Config
	log   *slog.Logger
	train *dataset.Dataset
	test  *dataset.Dataset
	// storeGen is the Store's generation the records were loaded at.
	storeGen uint64
	mhe      mheKeys // key material of the mhe key sets this client is in (mhe.go)
	// commitment to the training records, sent with each evaluation report (lineage.go)
	commitment commitment
}

// Errors Run returns.
var (
	// ErrRefused: the server refused this client for good (not a member of the federation, no
	// such task, a role that may not train).
	ErrRefused = errors.New("client: refused by the server")
)

// New checks the configuration, loads the identity and reads the records.
func New(cfg Config) (*Client, error) {
	if cfg.Server == "" || cfg.Task == "" || (cfg.Source == nil && cfg.Store == nil) {
		return nil, fmt.Errorf("client: Server, Task and Source (or Store) are required")
	}
	if cfg.TestFrac == 0 {
		cfg.TestFrac = 0.2
	}
	if !(cfg.TestFrac > 0 && cfg.TestFrac < 1) {
		return nil, fmt.Errorf("client: TestFrac must be between 0 and 1, got %g", cfg.TestFrac)
	}
	if cfg.Identity == nil {
		id, err := pki.LoadIdentity(cfg.CertFile, cfg.KeyFile)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		cfg.Identity = id
	}
	if cfg.CAPool == nil {
		pool, err := pki.LoadPool(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("client: %w", err)
		}
		cfg.CAPool = pool
	}
	if cfg.ServerName == "" {
		host, _, err := net.SplitHostPort(cfg.Server)
		if err != nil {
			return nil, fmt.Errorf("client: server address %q: %w", cfg.Server, err)
		}
		cfg.ServerName = host
	}
	log := cfg.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if cfg.Ledger == nil {
		if cfg.Store != nil {
			l, err := OpenLedger(cfg.Store)
			if err != nil {
				return nil, err
			}
			cfg.Ledger = l
		} else {
			cfg.Ledger = NewLedger()
		}
	}
	c := &Client{cfg: cfg, log: log.With("client", cfg.Identity.Principal.URI())}
	c.mhe.store = cfg.Store
	return c, nil
}

// Run takes part in the task until it is complete (nil), ctx ends (ctx's error), the server
// refuses the client for good (ErrRefused), or the sharing policy does not allow taking part
// (ErrNotShared). Lost connections are retried with backoff.
func (c *Client) Run(ctx context.Context) error {
	if err := c.cfg.Sharing.checkTask(c.cfg.Identity.Principal.Federation, c.cfg.Task); err != nil {
		return err
	}
	d, err := c.records(ctx)
	if err != nil {
		return fmt.Errorf("client: read records: %w", err)
	}
	if err := d.Validate(); err != nil {
		return fmt.Errorf("client: records: %w", err)
	}
	if d = c.cfg.Sharing.Strip(d); len(d.Records) == 0 {
		return fmt.Errorf("%w: none of the records has a modality it shares", ErrNotShared)
	}
	c.train, c.test = dataset.Split(d, c.cfg.TestFrac, c.cfg.Seed)
	conn, err := grpc.NewClient(c.cfg.Server,
		grpc.WithTransportCredentials(credentials.NewTLS(pki.ClientTLS(c.cfg.Identity, c.cfg.CAPool, c.cfg.ServerName))),
		grpc.WithDefaultCallOptions(grpc.MaxCallRecvMsgSize(ChunkSize+64<<10)),
	)
	if err != nil {
		return fmt.Errorf("client: %w", err)
	}
	defer conn.Close()
	api := pb.NewFederationClient(conn)
	backoff := 100 * time.Millisecond
	handshakes := 0 // failed TLS handshakes in a row
	for {
		started := time.Now()
		done, err := c.session(ctx, api)
		if done {
			return nil
		}
		if time.Since(started) > time.Minute {
			backoff = 100 * time.Millisecond // a long session ended: start the backoff afresh
		}
		if ctx.Err() != nil {
			return ctx.Err()
		}
		if errors.Is(err, ErrNotShared) || errors.Is(err, errNoRecords) {
			return err
		}
		switch status.Code(err) {
		case codes.Unauthenticated, codes.PermissionDenied, codes.NotFound:
			return fmt.Errorf("%w: %v", ErrRefused, status.Convert(err).Message())
		case codes.Unavailable:
			// A server that is down refuses the connection; one whose certificate does not
			// verify (another CA, another name) fails the handshake every time.
			if strings.Contains(status.Convert(err).Message(), "handshake failed") {
				if handshakes++; handshakes >= 3 {
					return fmt.Errorf("%w: the TLS handshake with the server failed: %v", ErrRefused, status.Convert(err).Message())
				}
			} else {
				handshakes = 0
			}
		}
		if err != nil && !errors.Is(err, errRetry) {
			c.log.Warn("round channel closed; reconnecting", "err", err, "backoff", backoff)
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 5*time.Second)
	}
}

var errRetry = errors.New("client: retry")

// session joins and takes part in rounds over one stream. done reports that the task is
// complete.
func (c *Client) session(ctx context.Context, api pb.FederationClient) (done bool, err error) {
	if err := c.checkTerms(ctx, api); err != nil {
		return false, err
	}
	counts := c.modalityCounts()
	join, err := api.Join(ctx, &pb.JoinRequest{Task: c.cfg.Task, Modalities: counts, Records: uint64(len(c.train.Records))})
	if err != nil {
		return false, err
	}
	if err := c.cfg.Sharing.checkTerms(join.GetFederation(), join.GetTask(), join.GetPurpose()); err != nil {
		return false, err
	}
	var spec models.Spec
	if err := json.Unmarshal(join.GetModelSpec(), &spec); err != nil {
		return false, fmt.Errorf("client: the server's model spec: %w", err)
	}
	m, err := models.New(spec, c.cfg.Seed)
	if err != nil {
		return false, fmt.Errorf("client: the server's model spec: %w", err)
	}
	if m.LayoutHash() != join.GetLayoutHash() {
		return false, fmt.Errorf("client: the server's layout hash %.12s does not match its spec (%.12s)", join.GetLayoutHash(), m.LayoutHash())
	}
	if err := supported(join.GetSecure()); err != nil {
		return false, err
	}
	train, err := m.Encode(c.train)
	if err != nil {
		return false, fmt.Errorf("client: local records do not fit the task's model: %w", err)
	}
	test, err := m.Encode(c.test)
	if err != nil {
		return false, fmt.Errorf("client: local records do not fit the task's model: %w", err)
	}

	sctx, cancel := context.WithCancel(ctx)
	defer cancel()
	stream, err := api.Participate(sctx)
	if err != nil {
		return false, err
	}
	if err := stream.Send(&pb.ClientMessage{Body: &pb.ClientMessage_Hello{Hello: &pb.Hello{Task: c.cfg.Task}}}); err != nil {
		return false, err
	}
	c.log.Info("joined", "task", c.cfg.Task, "next_round", join.GetNextRound())
	r := &round{c: c, m: m, train: train, test: test, secure: join.GetSecure(), stream: stream, groups: models.ParamGroups(m.Layout())}
	for {
		msg, err := stream.Recv()
		if err == io.EOF {
			return false, errRetry
		}
		if err != nil {
			return false, err
		}
		switch body := msg.Body.(type) {
		case *pb.ServerMessage_Done:
			c.log.Info("task complete", "rounds", body.Done.GetRounds())
			return true, nil
		case *pb.ServerMessage_Start:
			if err := r.start(body.Start); err != nil {
				return false, err
			}
		case *pb.ServerMessage_Params:
			if err := r.params(ctx, body.Params); err != nil {
				return false, err
			}
		case *pb.ServerMessage_Phase:
			if err := r.phase(body.Phase); err != nil {
				return false, err
			}
		case *pb.ServerMessage_End:
			e := body.End
			c.log.Info("round end", "round", e.GetRound(), "committed", e.GetCommitted())
			c.event(RoundEvent{Round: e.GetRound(), Stage: "end", Committed: e.GetCommitted()})
			r.agg = nil
		}
	}
}

func (c *Client) event(e RoundEvent) {
	if c.cfg.OnRound != nil {
		c.cfg.OnRound(e)
	}
}

func (c *Client) modalityCounts() []*pb.ModalityCount {
	var n [dataset.NumModalities]uint64
	for _, r := range c.train.Records {
		for _, m := range dataset.Modalities {
			if r.Has(m) {
				n[m]++
			}
		}
	}
	var out []*pb.ModalityCount
	for _, m := range dataset.Modalities {
		if n[m] > 0 {
			out = append(out, &pb.ModalityCount{Modality: m.String(), Records: n[m]})
		}
	}
	return out
}

// supported refuses a protection this client cannot take part in.
func supported(secure string) error {
	switch secure {
	case "none", "secagg", "mhe":
		return nil
	}
	return fmt.Errorf("%w: the task asks for %q protection, which this client does not support yet", ErrRefused, secure)
}

// protocolFor returns the client's side of the round's aggregation protocol, from the task's
// protection and the settings the round carries, wrapped by the partner's sharing policy.
func (c *Client) protocolFor(secure string, settings []byte) (agg.Protocol, error) {
	var proto agg.Protocol
	switch secure {
	case "none":
		proto = agg.Plain{}
	case "secagg":
		var cfg secagg.Config
		if err := json.Unmarshal(settings, &cfg); err != nil {
			return nil, fmt.Errorf("client: the round's secagg settings: %w", err)
		}
		// Neighbours' key advertisements are checked against the federation CA: a server
		// that forges one is caught here, not trusted.
		proto = secagg.New(cfg, secagg.FromPKI(c.cfg.Identity), secagg.PKIVerifier(c.cfg.CAPool, c.cfg.Identity.Principal.Federation))
	case "mhe":
		var err error
		if proto, err = c.mheProtocol(settings); err != nil {
			return nil, err
		}
	default:
		return nil, supported(secure)
	}
	return c.cfg.Sharing.protect(proto), nil
}

// round is the client's state in the round in progress.
type round struct {
	c           *Client
	m           *models.Model
	train, test *models.Encoded
	secure      string // the task's protection
	stream      pb.Federation_ParticipateClient
	groups      []uint8

	cur    *pb.RoundStart
	buf    []byte
	chunks uint32
	agg    agg.Client
	phaseB []byte
	phaseN uint32
}

func (r *round) start(s *pb.RoundStart) error {
	if r.isMHESetup(s) {
		return r.startSetup(s)
	}
	if s.GetLayoutHash() != r.m.LayoutHash() {
		return fmt.Errorf("client: round %d is for another model layout", s.GetRound())
	}
	if s.GetNumParams() != uint64(r.m.NumParams()) || s.GetParamChunks() == 0 {
		return fmt.Errorf("client: round %d announces %d parameters in %d chunks, the model has %d", s.GetRound(), s.GetNumParams(), s.GetParamChunks(), r.m.NumParams())
	}
	r.cur, r.buf, r.chunks, r.agg = s, r.buf[:0], 0, nil
	return nil
}

func (r *round) params(ctx context.Context, p *pb.ParamsChunk) error {
	s := r.cur
	if s == nil || p.GetRound() != s.GetRound() || p.GetIndex() != r.chunks || p.GetTotal() != s.GetParamChunks() {
		return fmt.Errorf("client: parameter chunk out of order")
	}
	r.buf = append(r.buf, p.GetData()...)
	r.chunks++
	if r.chunks < s.GetParamChunks() {
		return nil
	}
	if len(r.buf) != 4*r.m.NumParams() {
		return fmt.Errorf("client: round %d sent %d bytes of parameters, want %d", s.GetRound(), len(r.buf), 4*r.m.NumParams())
	}
	global := make([]float32, r.m.NumParams())
	for i := range global {
		global[i] = math.Float32frombits(binary.LittleEndian.Uint32(r.buf[4*i:]))
	}
	if err := r.m.SetParams(global, s.GetLayoutHash()); err != nil {
		return fmt.Errorf("client: round %d: %w", s.GetRound(), err)
	}
	return r.trainAndSend(ctx, s, global)
}

// trainAndSend evaluates the global model, trains locally, and sends the protected update.
func (r *round) trainAndSend(ctx context.Context, s *pb.RoundStart, global []float32) error {
	c := r.c
	if err := r.refresh(ctx); err != nil {
		return err
	}
	cfg := s.GetConfig()
	part, err := roundDP(r.secure, s.GetProtocol())
	if err != nil {
		return err
	}
	rec, err := recordDP(cfg.GetDpSgd())
	if err != nil {
		return err
	}
	eval, err := r.m.Evaluate(r.test, models.PredictOptions{})
	if err != nil {
		return err
	}
	c.event(RoundEvent{Round: s.GetRound(), Stage: "start", Eval: eval})
	report := &pb.EvalReport{
		Round: s.GetRound(), Records: uint64(eval.N), Accuracy: eval.Accuracy, MacroF1: eval.MacroF1, Loss: eval.Loss,
	}
	if part != nil || rec != nil {
		// Figures on the held-out records are exact functions of them, outside the round's
		// guarantee: under DP they stay here (the lineage commitment still goes).
		report = &pb.EvalReport{Round: s.GetRound()}
	}
	c.commit(report, s.GetLayoutHash())
	if err := r.stream.Send(&pb.ClientMessage{Body: &pb.ClientMessage_Eval{Eval: report}}); err != nil {
		return err
	}
	// The round's privacy cost, computed here from its parameters (the tabular statistics
	// are released, and charged, when the model has a tabular encoder and none set), checked
	// against the budget before training; Charge checks again, atomically, before sending.
	epochs := max(int(cfg.GetLocalEpochs()), 1)
	orders := c.cfg.Ledger.Orders()
	charges := map[string][]float64{}
	normalizer := models.NormalizerUnset(r.m.Layout(), global)
	if rec != nil {
		if charges[UnitRecord], err = recordRDP(rec, epochs, normalizer, orders); err != nil {
			return fmt.Errorf("client: DP-SGD: %w", err)
		}
	}
	if part != nil {
		if charges[UnitPartner], err = partnerRDP(s.GetProtocol(), part.Clip, int(s.GetCohortSize()), r.m.NumParams(), orders); err != nil {
			return err
		}
		if rec == nil {
			// One record changes one partner's contribution: the partner guarantee covers it.
			charges[UnitRecord] = charges[UnitPartner]
		}
	}
	if err := c.cfg.Sharing.checkBudget(c.cfg.Ledger, charges); err != nil {
		return err
	}
	tc := models.TrainConfig{
		Epochs: epochs, BatchSize: int(cfg.GetBatchSize()), Optimizer: cfg.GetOptimizer(),
		LR: cfg.GetLearningRate(), Seed: cfg.GetSeed() ^ c.cfg.Seed, ModalityDropout: cfg.GetModalityDropout(),
		DP: rec,
	}
	if mu := cfg.GetProxMu(); mu > 0 {
		tc.Prox, tc.Anchor = mu, global
	}
	st, err := r.m.Train(ctx, r.train, tc)
	if err != nil {
		return fmt.Errorf("client: local training: %w", err)
	}
	weights := models.GroupWeights(r.train)
	delta := make([]float32, len(global))
	for i, v := range r.m.ParamsView() {
		delta[i] = v - global[i]
	}
	if part != nil {
		// Distributed DP: the update is clipped to the round's L2 bound and counts with
		// weight 1, as the server's accounting assumes (server.PartnerDP). Under DP-SGD alone
		// the weights stay the record counts, which DP-SGD's accounting treats as public (its
		// sampling rate is a share of them; the client declares them when it joins).
		ClipL2(delta, part.Clip)
		for g, w := range weights {
			weights[g] = min(w, 1)
		}
	}
	// Counted before it leaves: an update the ledger could not record, or that another task
	// sharing the ledger took the budget from meanwhile, is not sent.
	maxEps, budgetDelta := c.cfg.Sharing.budget()
	for _, unit := range []string{UnitRecord, UnitPartner} {
		if rdp, ok := charges[unit]; ok {
			if err := c.cfg.Ledger.Charge(c.cfg.Task, unit, rdp, maxEps, budgetDelta); errors.Is(err, ErrBudget) {
				return fmt.Errorf("%w: %w", ErrNotShared, err)
			} else if err != nil {
				return err
			}
		}
	}
	in := agg.Input{Values: delta, Weights: weights}
	var hash [32]byte
	if raw, err := hex.DecodeString(s.GetLayoutHash()); err != nil || len(raw) != len(hash) {
		return fmt.Errorf("client: round %d: malformed layout hash", s.GetRound())
	} else {
		copy(hash[:], raw)
	}
	p := agg.Params{Round: s.GetRound(), LayoutHash: hash, NumValues: r.m.NumParams(), NumGroups: models.NumGroups, Groups: r.groups, MaxWeight: s.GetMaxWeight()}
	proto, err := c.protocolFor(r.secure, s.GetProtocol())
	if err != nil {
		return err
	}
	r.agg, err = proto.NewClient(p, int(s.GetIndex()), in)
	if err != nil {
		return fmt.Errorf("client: protect update: %w", err)
	}
	out, err := r.agg.Phase(0, nil)
	if err != nil {
		return fmt.Errorf("client: protect update: %w", err)
	}
	if err := sendChunked(r.stream, s.GetRound(), 0, out); err != nil {
		return err
	}
	c.log.Info("update sent", "round", s.GetRound(), "eval_accuracy", eval.Accuracy, "train_loss", st.Loss, "samples_per_sec", int(st.SamplesPerSec))
	c.event(RoundEvent{Round: s.GetRound(), Stage: "trained", Eval: eval, Train: st})
	return nil
}

// phase answers a later protocol phase.
func (r *round) phase(p *pb.PhaseMessage) error {
	if r.agg == nil || r.cur == nil || p.GetRound() != r.cur.GetRound() || p.GetIndex() != r.phaseN || p.GetTotal() == 0 {
		return fmt.Errorf("client: unexpected phase message")
	}
	r.phaseB = append(r.phaseB, p.GetData()...)
	r.phaseN++
	if r.phaseN < p.GetTotal() {
		return nil
	}
	msg := r.phaseB
	r.phaseB, r.phaseN = nil, 0
	out, err := r.agg.Phase(int(p.GetPhase()), msg)
	if err != nil {
		return fmt.Errorf("client: phase %d: %w", p.GetPhase(), err)
	}
	// The round's privacy charge was computed from the cohort the round announced; the
	// protocol must run with that cohort (secagg: its neighbours message).
	if cc, ok := r.agg.(interface{ Cohort() int }); ok && cc.Cohort() != 0 && cc.Cohort() != int(r.cur.GetCohortSize()) {
		return fmt.Errorf("client: round %d announced a cohort of %d, its secure aggregation runs %d: refused", p.GetRound(), r.cur.GetCohortSize(), cc.Cohort())
	}
	return sendChunked(r.stream, p.GetRound(), int(p.GetPhase()), out)
}

func sendChunked(stream pb.Federation_ParticipateClient, round uint64, phase int, msg []byte) error {
	total := max(1, (len(msg)+ChunkSize-1)/ChunkSize)
	for i := range total {
		part := msg[i*ChunkSize : min(len(msg), (i+1)*ChunkSize)]
		if err := stream.Send(&pb.ClientMessage{Body: &pb.ClientMessage_Phase{Phase: &pb.PhaseMessage{
			Round: round, Phase: uint32(phase), Index: uint32(i), Total: uint32(total), Data: part,
		}}}); err != nil {
			return err
		}
	}
	return nil
}
