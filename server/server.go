// Package server is fedweave's aggregation server: a round coordinator, the federation's gRPC
// service, the strategies that turn an aggregate into the next global model, and the encrypted
// store of checkpoints and round history.
//
// Start with New (from a Config, as `fedweave server` does), then Serve on a listener and Run
// the task. A round is a small state machine:
//
//	select cohort -> configure (RoundStart, parameters in chunks) -> collect (one or more
//	protocol phases, each with a deadline) -> aggregate -> commit (or abort)
//
// The cohort is chosen among the connected, authenticated clients; a round needs MinClients
// contributions. Aggregation goes through an agg.Protocol, so the server learns only what the
// protocol reveals (with "none", every update; with "secagg", SecAgg+ of crypto/secagg, only the
// sum). The protocol's round state (key advertisements, encrypted shares, masked inputs) lives
// in memory for the round alone and is dropped when the round ends, committed or aborted;
// none of it is ever written to the store, so no TTL is needed to get rid of it. Clients send
// deltas with a weight per parameter group (see models.GroupOf), so that a client without a
// modality does not dilute that modality's encoder. Every client message is validated (framing, round, phase,
// size, layout hash, finite values) and a bad one ends that client's stream with a status that
// says why; it is never aggregated, and the round goes on without it. A client that drops out is
// handled by the deadline; below MinClients the round is aborted, nothing is committed, and the
// next round starts from the last committed checkpoint.
//
// Every commit (checkpoint, round record, head) is one atomic, synced store transaction, so the
// server can be killed at any moment: on restart it resumes from the last committed checkpoint.
// Each checkpoint is sealed under a data key of its own from the store's keyring (keys.go), so
// that retention (Config.Retention) and the erasure of an org (erase.go: taint by lineage, roll
// back, retrain without it, shred, signed receipt) destroy checkpoints in every copy of the store.
//
// Every call is authorized by cedar policies (authz.go, access.go; see PolicyConfig): the
// principal from the verified certificate, the action from the method, the resource from the
// request; denied calls get PermissionDenied. Joins, rounds, policy changes, denials and model
// downloads go to the audit log in the store (package policy), whose checkpoints the server
// signs with its certificate's key. The Admin service (admin.go) changes the policies at run
// time; DownloadModel serves committed models to readers, and the Inference service
// (inference.go) predicts and explains with them, over gRPC and HTTPS.
//
// With "mhe" (crypto/mhe, threshold BGV), the task runs one key set-up over the round
// channel before its first round, and the server decrypts only the sum, with the help of t
// clients (mhe.go). Not here yet: scaling out.
package server

import (
	"context"
	"crypto/x509"
	"encoding/base64"
	"encoding/binary"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"log/slog"
	"math"
	"math/rand/v2"
	"net"
	"net/http"
	"slices"
	"strings"
	"sync"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/health"
	healthpb "google.golang.org/grpc/health/grpc_health_v1"
	"google.golang.org/grpc/keepalive"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/agg"
	"github.com/fedweave/fedweave/crypto/envelope"
	"github.com/fedweave/fedweave/crypto/pki"
	lin "github.com/fedweave/fedweave/internal/lineage"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/models"
)

// ChunkSize is the largest payload of one chunk message.
const ChunkSize = 1 << 20

// Options are what a caller can pass besides the Config.
type Options struct {
	// Identity and CAPool, when set, are used instead of the files in Config.TLS.
	Identity *pki.Identity
	CAPool   *x509.CertPool
	Logger   *slog.Logger // nil: discard
	// OnRound, if set, is called after every round, committed or aborted.
	OnRound func(RoundRecord)
	// OnUpdate, if set, is called with every update (phase-0 message) a client sends on its
	// round channel, reassembled from its chunks, as received and before any check. It is for
	// tests and audits of what leaves the clients; with secure aggregation it sees only what
	// the protocol reveals to the server.
	OnUpdate func(principal string, round uint64, msg []byte)
	// RootKey, if set, is the envelope root key of the store's keyring (a KMS, say), instead of
	// the root key file beside Config.KeyFile (see KeyPaths and keys.go).
	RootKey envelope.RootKey
}

// Server coordinates one task's rounds. Create it with New.
type Server struct {
	cfg   Config
	dp    *dpState // task.dp's accounting, replayed from the round history on start; nil without DP
	opt   Options
	log   *slog.Logger
	store *store.Store
	proto agg.Protocol
	// protoSettings are the protocol's settings for clients (RoundStart.protocol).
	protoSettings []byte
	mhe           *mheState // the task's key set under "mhe" (mhe.go); used by Run alone
	strat         Update

	spec     models.Spec
	layout   *models.Layout
	hash     string
	hashRaw  [32]byte
	groups   []uint8 // parameter group of every value
	params   []float32
	optState OptState
	head     head

	grpc    *grpc.Server
	health  *health.Server
	metrics *metrics
	access  *access // policies, entity data, audit log
	rest    *atRest // keyring, erasures (keys.go, erase.go)
	infer   *inference
	http    *http.Server

	mu       sync.Mutex
	sessions map[string]*session // by principal URI
	joined   map[string]uint64   // training records each client declared at Join, by principal URI
	inbox    chan inbound
	done     chan struct{} // closed when the task is complete
	closed   bool
}

// New opens the server's store, restores the task's last committed state (or creates the task
// from the config's model spec), and prepares the gRPC service.
func New(cfg Config, opt Options) (*Server, error) {
	cfg.Defaults()
	if err := cfg.Validate(); err != nil {
		return nil, fmt.Errorf("server: config: %w", err)
	}
	strat, _ := ParseStrategy(cfg.Task.Strategy)
	log := opt.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	if opt.Identity == nil {
		id, err := pki.LoadIdentity(cfg.TLS.Cert, cfg.TLS.Key)
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		opt.Identity = id
	}
	if opt.CAPool == nil {
		pool, err := pki.LoadPool(cfg.TLS.CA)
		if err != nil {
			return nil, fmt.Errorf("server: %w", err)
		}
		opt.CAPool = pool
	}
	if p := opt.Identity.Principal; p.Role != pki.RoleServer || p.Federation != cfg.Federation {
		return nil, fmt.Errorf("server: certificate names %s, want a server of federation %q", p, cfg.Federation)
	}
	proto, protoSettings, err := ProtocolFor(&cfg.Task, opt.CAPool, cfg.Federation)
	if err != nil {
		return nil, fmt.Errorf("server: task.secure: %w", err)
	}
	st, err := store.Open(store.Options{Dir: cfg.Dir, KeyFile: cfg.KeyFile})
	if err != nil {
		return nil, fmt.Errorf("server: %w", err)
	}
	rest, err := openAtRest(&cfg, &opt, st)
	if err != nil {
		st.Close()
		return nil, err
	}
	s := &Server{
		cfg: cfg, opt: opt, log: log, store: st, rest: rest, proto: proto, protoSettings: protoSettings,
		strat:    Update{Strategy: strat, LR: cfg.Task.ServerLR},
		spec:     cfg.Task.Model,
		sessions: map[string]*session{},
		joined:   map[string]uint64{},
		inbox:    make(chan inbound, 64),
		done:     make(chan struct{}),
		metrics:  newMetrics(),
	}
	if err := s.restore(); err != nil {
		st.Close()
		return nil, err
	}
	if s.dp, err = newDPState(&cfg.Task, len(s.params)); err != nil {
		st.Close()
		return nil, fmt.Errorf("server: task.dp: %w", err)
	}
	if s.dp != nil {
		// The privacy loss of every round released before a restart still counts.
		hist, err := s.History()
		if err != nil {
			st.Close()
			return nil, fmt.Errorf("server: task.dp: read the round history: %w", err)
		}
		if err := s.dp.replay(hist); err != nil {
			st.Close()
			return nil, fmt.Errorf("server: task.dp: replay the round history: %w", err)
		}
	}
	if err := s.initAccess(); err != nil {
		st.Close()
		return nil, err
	}
	if err := s.resumeAtRest(); err != nil {
		st.Close()
		return nil, err
	}
	s.grpc = grpc.NewServer(
		grpc.Creds(credentials.NewTLS(pki.ServerTLS(opt.Identity, opt.CAPool))),
		grpc.MaxRecvMsgSize(ChunkSize+64<<10),
		grpc.KeepaliveEnforcementPolicy(keepalive.EnforcementPolicy{MinTime: 5 * time.Second, PermitWithoutStream: true}),
		// A client whose machine vanishes without closing its connection is noticed within
		// about 40 s, not only at the round's deadline.
		grpc.KeepaliveParams(keepalive.ServerParameters{Time: 30 * time.Second, Timeout: 10 * time.Second}),
		grpc.ChainUnaryInterceptor(s.authorizeUnary),
		grpc.ChainStreamInterceptor(s.authorizeStream),
	)
	pb.RegisterFederationServer(s.grpc, &service{s: s})
	pb.RegisterAdminServer(s.grpc, &adminService{s: s})
	if s.infer, err = newInference(s); err != nil {
		st.Close()
		return nil, err
	}
	pb.RegisterInferenceServer(s.grpc, &inferenceService{s: s})
	s.health = health.NewServer()
	healthpb.RegisterHealthServer(s.grpc, s.health)
	return s, nil
}

// restore loads the task's state, or creates it.
func (s *Server) restore() error {
	task := s.cfg.Task.Name
	m, err := models.New(s.spec, s.cfg.Task.Seed)
	if err != nil {
		return fmt.Errorf("server: model: %w", err)
	}
	s.layout, s.hash = m.Layout(), m.LayoutHash()
	s.groups = models.ParamGroups(s.layout)
	raw, _ := hex.DecodeString(s.hash)
	copy(s.hashRaw[:], raw)
	specJSON, _ := json.Marshal(s.spec)

	var meta taskMeta
	found, err := loadJSON(s.store, keyMeta(task), &meta)
	if err != nil {
		return fmt.Errorf("server: read task: %w", err)
	}
	if !found {
		s.params = m.Params()
		s.head = head{Round: 0, NextRound: 1}
		meta = taskMeta{Spec: specJSON, LayoutHash: s.hash, Created: time.Now().UTC()}
		return s.store.Update(func(tx *store.Tx) error {
			mb, _ := json.Marshal(meta)
			hb, _ := json.Marshal(s.head)
			if err := tx.Put(keyMeta(task), mb); err != nil {
				return err
			}
			if err := s.putCheckpoint(tx, 0, encodeCheckpoint(s.hashRaw, s.params, OptState{})); err != nil {
				return err
			}
			return tx.Put(keyHead(task), hb)
		})
	}
	if meta.LayoutHash != s.hash {
		return fmt.Errorf("server: the store in %s holds task %q with another model (layout %.12s, config has %.12s); use another dir or task name", s.cfg.Dir, task, meta.LayoutHash, s.hash)
	}
	if _, err := loadJSON(s.store, keyHead(task), &s.head); err != nil {
		return fmt.Errorf("server: read head: %w", err)
	}
	b, err := checkpointBytes(s.store, s.rest.ring, task, s.head.Round)
	if err != nil {
		return fmt.Errorf("server: read checkpoint %d: %w", s.head.Round, err)
	}
	s.params, s.optState, err = decodeCheckpoint(b, s.hashRaw, s.layout.Size())
	if err != nil {
		return fmt.Errorf("server: checkpoint %d: %w", s.head.Round, err)
	}
	if s.head.Committed >= s.cfg.Task.Rounds {
		close(s.done)
	}
	s.log.Info("resumed task", "task", task, "checkpoint", s.head.Round, "committed", s.head.Committed, "next_round", s.head.NextRound)
	return nil
}

// Serve accepts clients on lis until Close. It also serves /metrics when the config asks.
func (s *Server) Serve(lis net.Listener) error {
	if s.cfg.MetricsListen != "" {
		ml, err := net.Listen("tcp", s.cfg.MetricsListen)
		if err != nil {
			return fmt.Errorf("server: metrics: %w", err)
		}
		s.mu.Lock()
		s.http = &http.Server{Handler: s.metrics.handler(), ReadHeaderTimeout: 5 * time.Second}
		hs := s.http
		s.mu.Unlock()
		go hs.Serve(ml)
	}
	if err := s.infer.listen(); err != nil {
		return err
	}
	s.health.SetServingStatus("", healthpb.HealthCheckResponse_SERVING)
	return s.grpc.Serve(lis)
}

// Close stops the server at once: open streams are cut, nothing further is committed, and the
// store is closed. What was committed stays.
func (s *Server) Close() error {
	s.mu.Lock()
	if s.closed {
		s.mu.Unlock()
		return nil
	}
	s.closed = true
	hs := s.http
	s.mu.Unlock()
	if hs != nil {
		hs.Close()
	}
	s.infer.close()
	s.grpc.Stop()
	s.signAudit()
	return s.store.Close()
}

// Shutdown lets the calls in progress finish for up to grace (so that the clients receive what
// was sent to them, such as the end of the task), then closes the server as Close does.
func (s *Server) Shutdown(grace time.Duration) error {
	stopped := make(chan struct{})
	go func() {
		s.grpc.GracefulStop()
		close(stopped)
	}()
	select {
	case <-stopped:
	case <-time.After(grace):
	}
	return s.Close()
}

// Done is closed when the task has committed all its rounds.
func (s *Server) Done() <-chan struct{} { return s.done }

// Params returns the last committed round and a copy of its global parameters.
func (s *Server) Params() (uint64, []float32) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.head.Round, slices.Clone(s.params)
}

// Connected is the number of clients with an open round channel.
func (s *Server) Connected() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	n := 0
	for _, ss := range s.sessions {
		if ss.alive() {
			n++
		}
	}
	return n
}

// Spec returns the task's model spec.
func (s *Server) Spec() models.Spec { return s.spec }

// History returns the records of every round so far, in order.
func (s *Server) History() ([]RoundRecord, error) {
	var out []RoundRecord
	err := s.store.Scan(prefixRounds(s.cfg.Task.Name), func(_, v []byte) error {
		var r RoundRecord
		if err := json.Unmarshal(v, &r); err != nil {
			return err
		}
		out = append(out, r)
		return nil
	})
	return out, err
}

// Run drives rounds until the task has committed Config.Task.Rounds rounds, or ctx ends. An
// aborted round does not count; after three times as many attempts as rounds Run gives up.
func (s *Server) Run(ctx context.Context) error {
	t := &s.cfg.Task
	maxAttempts := 3*t.Rounds + 3
	for attempts := 0; ; attempts++ {
		s.mu.Lock()
		committed := s.head.Committed
		s.mu.Unlock()
		if committed >= t.Rounds {
			break
		}
		if attempts >= maxAttempts {
			return fmt.Errorf("server: %d rounds attempted, %d committed: giving up", attempts, committed)
		}
		if err := s.budgetLeft(); err != nil {
			// The privacy budget is spent: the last committed model is the release.
			s.finish(committed)
			s.log.Warn("task stopped: privacy budget spent", "task", t.Name, "committed", committed, "rounds", t.Rounds, "reason", err)
			return fmt.Errorf("server: task stopped after %d of %d rounds: %w", committed, t.Rounds, err)
		}
		cohort, err := s.waitForCohort(ctx)
		if err != nil {
			return err
		}
		if cohort, err = s.mheCohort(ctx, cohort); err != nil {
			return err
		}
		rec, err := s.runRound(ctx, cohort)
		if err != nil {
			return err
		}
		s.afterRound(rec)
		if s.opt.OnRound != nil {
			s.opt.OnRound(rec)
		}
	}
	s.finish(t.Rounds)
	s.log.Info("task complete", "task", t.Name, "rounds", t.Rounds)
	return nil
}

// finish ends the task for every client: no more rounds.
func (s *Server) finish(rounds int) {
	select {
	case <-s.done:
	default:
		close(s.done)
	}
	s.broadcast(&pb.ServerMessage{Body: &pb.ServerMessage_Done{Done: &pb.TaskDone{Rounds: uint64(rounds)}}})
}

// budgetLeft returns an error matching dp.ErrBudget when committing one more round, with the
// fewest contributors that can commit it, would take the task past dp.max_epsilon.
func (s *Server) budgetLeft() error {
	if s.dp == nil {
		return nil
	}
	s.mu.Lock()
	unset := models.NormalizerUnset(s.layout, s.params)
	s.mu.Unlock()
	_, err := s.dp.would(s.dp.charges(s.dp.min, unset))
	return err
}

// waitForCohort waits until at least MinClients clients are connected and returns the cohort.
func (s *Server) waitForCohort(ctx context.Context) ([]*session, error) {
	t := &s.cfg.Task
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	lastLog := time.Now()
	for {
		s.mu.Lock()
		var live []*session
		for _, ss := range s.sessions {
			if ss.alive() {
				live = append(live, ss)
			}
		}
		next := s.head.NextRound
		s.mu.Unlock()
		live = s.withoutErased(s.stillAuthorized(live))
		if len(live) >= t.MinClients {
			slices.SortFunc(live, func(a, b *session) int { return strings.Compare(a.key, b.key) })
			if t.ClientsPerRound > 0 && len(live) > t.ClientsPerRound {
				rng := rand.New(rand.NewPCG(t.Seed, next))
				rng.Shuffle(len(live), func(i, j int) { live[i], live[j] = live[j], live[i] })
				live = live[:t.ClientsPerRound]
				slices.SortFunc(live, func(a, b *session) int { return strings.Compare(a.key, b.key) })
			}
			return live, nil
		}
		if time.Since(lastLog) > 5*time.Second {
			s.log.Info("waiting for clients", "connected", len(live), "min_clients", t.MinClients)
			lastLog = time.Now()
		}
		select {
		case <-ctx.Done():
			return nil, ctx.Err()
		case <-tick.C:
		}
	}
}

// member is one cohort member during a round.
type member struct {
	s        *session
	index    int
	answered bool   // answered the current phase
	out      bool   // dropped or refused: takes no further part
	refused  bool   // refused for a bad message
	buf      []byte // chunks of the current phase message so far
	chunks   uint32 // chunks received of it
	total    uint32
	eval     *pb.EvalReport
}

// runRound runs one round with the cohort and commits or aborts it.
func (s *Server) runRound(ctx context.Context, cohort []*session) (RoundRecord, error) {
	t := &s.cfg.Task
	s.mu.Lock()
	r := s.head.NextRound
	params := slices.Clone(s.params)
	parent := s.head.Round
	s.mu.Unlock()
	start := time.Now()
	rec := RoundRecord{Round: r, Parent: &parent, Cohort: len(cohort), Started: start.UTC()}
	s.log.Info("round start", "round", r, "cohort", len(cohort))

	s.mu.Lock()
	var maxWeight uint64
	for _, ss := range cohort {
		maxWeight = max(maxWeight, s.joined[ss.key])
	}
	s.mu.Unlock()
	if s.dp != nil && t.DP.Partner != nil {
		maxWeight = 1 // partners contribute with weight 1 (see PartnerDP)
	}
	aggParams := agg.Params{Round: r, LayoutHash: s.hashRaw, NumValues: len(params), NumGroups: models.NumGroups, Groups: s.groups, MaxWeight: maxWeight}
	proto, protoSettings, err := s.roundProtocol(cohort)
	if err != nil {
		return rec, fmt.Errorf("server: round %d: %w", r, err)
	}
	var dpSGD *pb.DPSGD
	normUnset := s.dp != nil && models.NormalizerUnset(s.layout, params)
	if s.dp != nil {
		spent := s.dp.spent()
		rec.DP, rec.Epsilon, rec.Delta = &spent, s.dp.headline(&spent), s.dp.acc.Delta()
		if p := t.DP.Partner; p != nil {
			if protoSettings, err = withDP(protoSettings, p.Clip); err != nil {
				return rec, fmt.Errorf("server: round %d: %w", r, err)
			}
		}
		if rd := t.DP.Record; rd != nil {
			dpSGD = &pb.DPSGD{Clip: rd.Clip, NoiseMultiplier: rd.NoiseMultiplier, SampleRate: rd.SampleRate, NormalizerNoise: rd.normalizerNoise()}
		}
	}
	srv, err := proto.NewServer(aggParams, len(cohort))
	if err != nil {
		return rec, fmt.Errorf("server: round %d: %w", r, err)
	}
	members := make(map[*session]*member, len(cohort))
	byIndex := make(map[int]*member, len(cohort))
	chunks := chunk(float32Bytes(params))
	cfg := &pb.RoundConfig{
		Strategy: t.Strategy, LocalEpochs: uint32(t.LocalEpochs), BatchSize: uint32(t.BatchSize),
		LearningRate: t.LR, Optimizer: t.Optimizer, ProxMu: t.ProxMu, ModalityDropout: t.ModalityDropout,
		Seed: t.Seed ^ r, DpSgd: dpSGD,
	}
	for i, ss := range cohort {
		m := &member{s: ss, index: i + 1}
		members[ss], byIndex[m.index] = m, m
		ok := ss.send(&pb.ServerMessage{Body: &pb.ServerMessage_Start{Start: &pb.RoundStart{
			Round: r, Config: cfg, LayoutHash: s.hash, NumParams: uint64(len(params)),
			ParamChunks: uint32(len(chunks)), Index: uint32(m.index), CohortSize: uint32(len(cohort)),
			DeadlineMs: uint64(t.RoundTimeout.Milliseconds()), MaxWeight: maxWeight, Protocol: protoSettings,
		}}})
		for j, c := range chunks {
			ok = ok && ss.send(&pb.ServerMessage{Body: &pb.ServerMessage_Params{Params: &pb.ParamsChunk{Round: r, Index: uint32(j), Total: uint32(len(chunks)), Data: c}}})
		}
		if !ok {
			m.out = true
		}
	}

	phase := 0
	deadline := t.RoundTimeout.Duration
	maxMsg := 16*len(params) + 8*models.NumGroups + ChunkSize
	var sum agg.Sum
	for {
		if err := s.collect(ctx, r, phase, members, srv, deadline, maxMsg); err != nil {
			return rec, err
		}
		next, done, err := srv.Next()
		if err != nil {
			rec.Reason = err.Error()
			break
		}
		if done {
			sum, err = srv.Result()
			if err != nil {
				rec.Reason = err.Error()
			}
			break
		}
		phase++
		deadline = t.PhaseTimeout.Duration
		for _, m := range members {
			m.answered = true // only those sent a message must answer
		}
		for idx, msg := range next {
			m := byIndex[idx]
			if m == nil || m.out {
				continue
			}
			m.answered = false
			if !m.s.sendChunked(r, phase, msg) {
				m.out = true
			}
		}
	}

	// Lineage and figures.
	for _, idx := range sum.Contributors {
		m := byIndex[idx]
		rec.Participants = append(rec.Participants, m.s.key)
		if e := m.eval; e != nil && len(e.DatasetCommitment) > 0 {
			rec.Lineage = append(rec.Lineage, LineageEntry{
				Principal: m.s.key, Commitment: hex.EncodeToString(e.DatasetCommitment),
				Signature: base64.StdEncoding.EncodeToString(e.Signature),
			})
		}
	}
	rec.Dropped = len(cohort) - len(sum.Contributors)
	var accSum, lossSum float64
	for _, m := range members {
		if m.refused {
			rec.Refused++
		}
		if e := m.eval; e != nil && e.Records > 0 {
			rec.EvalRecords += e.Records
			accSum += e.Accuracy * float64(e.Records)
			lossSum += e.Loss * float64(e.Records)
		}
	}
	if rec.EvalRecords > 0 {
		rec.EvalAccuracy = accSum / float64(rec.EvalRecords)
		rec.EvalLoss = lossSum / float64(rec.EvalRecords)
	}
	if rec.Reason == "" && len(sum.Contributors) < t.MinClients {
		rec.Reason = fmt.Sprintf("%d of the cohort contributed, the round needs %d", len(sum.Contributors), t.MinClients)
	}
	release := s.holdCommits() // no erasure from here to the commit
	defer release()
	if rec.Reason == "" {
		rec.Reason = s.erasureVeto(&rec)
	}
	var charge *RoundDP
	if rec.Reason == "" && s.dp != nil {
		charge = s.dp.charges(len(sum.Contributors), normUnset)
		if _, err := s.dp.would(charge); err != nil {
			rec.Reason = err.Error()
		}
	}
	var next []float32
	var nextOpt OptState
	if rec.Reason == "" {
		next = slices.Clone(params)
		nextOpt = OptState{M: slices.Clone(s.optState.M), V: slices.Clone(s.optState.V)}
		if err := s.strat.Apply(s.layout, next, sum.Values, sum.Weights, &nextOpt); err != nil {
			rec.Reason = err.Error()
		}
	}
	rec.Committed = rec.Reason == ""
	if rec.Committed && s.dp != nil {
		if err := s.dp.charge(charge); err != nil {
			return rec, fmt.Errorf("server: round %d: %w", r, err)
		}
		rec.DP, rec.Epsilon = charge, s.dp.headline(charge)
	}
	rec.Seconds = time.Since(start).Seconds()
	if err := s.commit(rec, next, nextOpt); err != nil {
		return rec, err
	}
	end := &pb.RoundEnd{Round: r, Committed: rec.Committed, Participants: uint32(len(sum.Contributors))}
	if !rec.Committed {
		end.Reason = "round aborted: too few clients contributed or the aggregate was unusable; the next round starts from the last checkpoint"
	}
	for _, m := range members {
		if !m.out {
			m.s.send(&pb.ServerMessage{Body: &pb.ServerMessage_End{End: end}})
		}
	}
	s.metrics.round(rec)
	if rec.Committed {
		s.log.Info("round committed", "round", r, "participants", len(rec.Participants), "dropped", rec.Dropped, "eval_accuracy", rec.EvalAccuracy, "seconds", rec.Seconds)
	} else {
		s.log.Warn("round aborted", "round", r, "reason", rec.Reason, "dropped", rec.Dropped)
	}
	return rec, nil
}

// collect gathers the cohort's messages of one phase until every member still in has answered
// or the deadline passes.
func (s *Server) collect(ctx context.Context, r uint64, phase int, members map[*session]*member, srv agg.Server, deadline time.Duration, maxMsg int) error {
	timer := time.NewTimer(deadline)
	defer timer.Stop()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	for {
		waiting := 0
		for _, m := range members {
			if !m.out && !m.answered {
				if !m.s.alive() {
					m.out = true
					continue
				}
				waiting++
			}
		}
		if waiting == 0 {
			return nil
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-timer.C:
			for _, m := range members {
				if !m.out && !m.answered {
					m.out = true
					s.log.Info("straggler dropped", "round", r, "phase", phase, "client", m.s.key)
				}
			}
			return nil
		case <-tick.C:
		case in := <-s.inbox:
			s.handle(in, r, phase, members, srv, maxMsg)
		}
	}
}

// handle checks one client message against the round's state.
func (s *Server) handle(in inbound, r uint64, phase int, members map[*session]*member, srv agg.Server, maxMsg int) {
	m := members[in.s]
	switch body := in.msg.Body.(type) {
	case *pb.ClientMessage_Eval:
		e := body.Eval
		switch {
		case m == nil || e.Round != r:
			s.refuse(in.s, m, codes.FailedPrecondition, fmt.Sprintf("evaluation for round %d, which is not open for this client", e.Round))
		case m.eval != nil:
			s.refuse(in.s, m, codes.InvalidArgument, "a second evaluation report in one round")
		case !finite(e.Accuracy) || !finite(e.Loss) || e.Accuracy < 0 || e.Accuracy > 1:
			s.refuse(in.s, m, codes.InvalidArgument, "evaluation report with an accuracy outside [0, 1] or a non-finite loss")
		case len(e.DatasetCommitment) > 0 || len(e.Signature) > 0:
			if err := lin.Verify(in.s.cert, s.cfg.Task.Name, r, s.hash, e.DatasetCommitment, e.Signature); err != nil {
				s.metrics.rejected.WithLabelValues("bad_commitment").Inc()
				s.refuse(in.s, m, codes.InvalidArgument, "evaluation report refused: "+strings.TrimPrefix(err.Error(), "lineage: "))
				return
			}
			m.eval = e
		default:
			m.eval = e
		}
	case *pb.ClientMessage_Phase:
		p := body.Phase
		switch {
		case p.Round != r:
			s.refuse(in.s, m, codes.FailedPrecondition, fmt.Sprintf("message for round %d, the open round is %d", p.Round, r))
		case m == nil || m.out:
			s.refuse(in.s, m, codes.FailedPrecondition, fmt.Sprintf("not in the cohort of round %d", r))
		case int(p.Phase) != phase:
			s.refuse(in.s, m, codes.InvalidArgument, fmt.Sprintf("message for phase %d, the open phase is %d", p.Phase, phase))
		case m.answered:
			s.refuse(in.s, m, codes.InvalidArgument, fmt.Sprintf("a further message for phase %d, which this client has already answered or was not asked to answer", phase))
		case p.Total == 0 || p.Index != m.chunks || (m.chunks > 0 && p.Total != m.total):
			s.refuse(in.s, m, codes.InvalidArgument, fmt.Sprintf("chunk %d of %d out of order or replayed", p.Index, p.Total))
		case len(p.Data) > ChunkSize || len(m.buf)+len(p.Data) > maxMsg:
			s.refuse(in.s, m, codes.InvalidArgument, "message larger than this round allows")
		default:
			m.total = p.Total
			m.chunks++
			m.buf = append(m.buf, p.Data...)
			if m.chunks < m.total {
				return
			}
			msg := m.buf
			m.buf, m.chunks, m.total = nil, 0, 0
			m.answered = true
			if err := srv.Receive(m.index, msg); err != nil {
				s.metrics.rejected.WithLabelValues("invalid_update").Inc()
				s.refuse(in.s, m, codes.InvalidArgument, "update refused: "+err.Error())
			}
		}
	default:
		s.refuse(in.s, m, codes.InvalidArgument, "unexpected message in the middle of a round")
	}
}

// refuse ends a client's stream with a status and takes it out of the round.
func (s *Server) refuse(ss *session, m *member, code codes.Code, reason string) {
	s.log.Warn("client message refused", "client", ss.key, "code", code.String(), "reason", reason)
	if m != nil {
		m.out, m.refused = true, true
	}
	s.metrics.rejected.WithLabelValues(code.String()).Inc()
	ss.fail(status.Error(code, reason))
}

// commit persists a round atomically: the round record, the head and, when committed, the new
// checkpoint; then adopts the new parameters.
func (s *Server) commit(rec RoundRecord, params []float32, st OptState) error {
	task := s.cfg.Task.Name
	s.mu.Lock()
	h := s.head
	s.mu.Unlock()
	h.NextRound = rec.Round + 1
	if rec.Committed {
		h.Round = rec.Round
		h.Committed++
	}
	err := s.store.Update(func(tx *store.Tx) error {
		rb, _ := json.Marshal(rec)
		hb, _ := json.Marshal(h)
		if rec.Committed {
			if err := s.putCheckpoint(tx, rec.Round, encodeCheckpoint(s.hashRaw, params, st)); err != nil {
				return err
			}
		}
		if err := tx.Put(keyRound(task, rec.Round), rb); err != nil {
			return err
		}
		return tx.Put(keyHead(task), hb)
	})
	if err != nil {
		return fmt.Errorf("server: commit round %d: %w", rec.Round, err)
	}
	s.mu.Lock()
	s.head = h
	if rec.Committed {
		s.params, s.optState = params, st
	}
	s.mu.Unlock()
	return nil
}

// broadcast sends m to every connected client.
func (s *Server) broadcast(m *pb.ServerMessage) {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, ss := range s.sessions {
		ss.send(m)
	}
}

func finite(x float64) bool { return !math.IsNaN(x) && !math.IsInf(x, 0) }

// float32Bytes encodes a vector as little-endian float32.
func float32Bytes(v []float32) []byte {
	b := make([]byte, 4*len(v))
	for i, x := range v {
		binary.LittleEndian.PutUint32(b[4*i:], math.Float32bits(x))
	}
	return b
}

// chunk splits b into pieces of at most ChunkSize bytes (one empty piece for empty b).
func chunk(b []byte) [][]byte {
	var out [][]byte
	for len(b) > ChunkSize {
		out = append(out, b[:ChunkSize])
		b = b[ChunkSize:]
	}
	return append(out, b)
}

// principalOf returns the verified principal of a call.
func principalOf(ctx context.Context, federation string) (pki.Principal, error) {
	p, ok := peer.FromContext(ctx)
	if !ok {
		return pki.Principal{}, status.Error(codes.Unauthenticated, "no peer")
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok {
		return pki.Principal{}, status.Error(codes.Unauthenticated, "not a TLS connection")
	}
	pr, err := pki.PrincipalFromState(ti.State, federation)
	if err != nil {
		return pki.Principal{}, status.Error(codes.Unauthenticated, "the certificate names no principal of this federation")
	}
	return pr, nil
}
