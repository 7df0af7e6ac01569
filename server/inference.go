package server

// The inference service (api/fedweave/v1/inference.proto): predictions and explanations from the
// task's committed models, over gRPC and, when http_listen is set, HTTPS with JSON
// (inference_http.go).
//
// Both transports go through the same steps. The interceptor (authz.go) authorizes the call as
// Infer (Predict) or Explain on Model::"<task>/<round>", round 0 resolved to the latest
// committed model that is not tainted. The handler then checks, in order: that the model exists
// and its entity says released and not tainted (a tainted model is never served, even under
// policies that would allow it); the caller's token bucket (serve.rate_per_second, burst;
// ResourceExhausted); the record's size (serve.max_request_bytes; InvalidArgument); and the
// record itself (dataset.DecodeRecord: the manifest's JSON form, the image an inline base64
// PNG of the model's size, every tabular field finite; InvalidArgument saying which field is
// wrong). It answers with package explain's attributions, computed on one of serve.workers
// copies of the model kept per round.

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"slices"
	"strconv"
	"sync"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/dataset"
	"github.com/fedweave/fedweave/explain"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/models"
	"github.com/fedweave/fedweave/policy"
)

// MaxExplainSamples bounds ExplainRequest.samples.
const MaxExplainSamples = 1024

// inference serves the task's committed models.
type inference struct {
	s       *Server
	schema  dataset.Schema
	limiter *rateLimiter
	slots   chan struct{} // one per worker

	mu     sync.Mutex
	loaded []*servedModel // the rounds in memory, most recently used last; at most keepModels

	httpMu   sync.Mutex
	httpSrv  *http.Server
	httpAddr string
}

// keepModels is how many rounds' models stay in memory.
const keepModels = 2

func newInference(s *Server) (*inference, error) {
	sc := &s.cfg.Serve
	in := &inference{
		s:       s,
		limiter: newRateLimiter(sc.RatePerSecond, sc.Burst),
		slots:   make(chan struct{}, sc.Workers),
	}
	names, err := s.taskNames()
	if err != nil {
		return nil, err
	}
	in.schema = names.schema(&s.spec)
	return in, nil
}

// taskNames are the names of a task's classes and tabular fields, as kept in the store.
type taskNames struct {
	Classes       []string `json:"classes,omitempty"`
	TabularFields []string `json:"tabular_fields,omitempty"`
}

func keyNames(task string) []byte { return []byte("task/" + task + "/names") }

// taskNames returns the names in force: the config's, written to the store when they differ
// from what it holds, else the store's.
func (s *Server) taskNames() (taskNames, error) {
	t := &s.cfg.Task
	var stored taskNames
	if _, err := loadJSON(s.store, keyNames(t.Name), &stored); err != nil {
		return stored, fmt.Errorf("server: read the task's names: %w", err)
	}
	if len(t.Classes) == 0 && len(t.TabularFields) == 0 {
		return stored, nil
	}
	names := taskNames{Classes: t.Classes, TabularFields: t.TabularFields}
	if !slices.Equal(names.Classes, stored.Classes) || !slices.Equal(names.TabularFields, stored.TabularFields) {
		b, _ := json.Marshal(names)
		if err := s.store.Put(keyNames(t.Name), b); err != nil {
			return names, fmt.Errorf("server: store the task's names: %w", err)
		}
	}
	return names, nil
}

// schema is the data schema of spec's records with these names, or the default ones ("0",
// "1", ... and "x0", "x1", ...) where they are missing or do not fit the spec.
func (n taskNames) schema(spec *models.Spec) dataset.Schema {
	var s dataset.Schema
	s.Classes = n.Classes
	if len(s.Classes) != spec.Classes {
		s.Classes = make([]string, spec.Classes)
		for k := range s.Classes {
			s.Classes[k] = strconv.Itoa(k)
		}
	}
	if tb := spec.Tabular; tb != nil {
		s.TabularFields = n.TabularFields
		if len(s.TabularFields) != tb.Fields {
			s.TabularFields = make([]string, tb.Fields)
			for j := range s.TabularFields {
				s.TabularFields[j] = "x" + strconv.Itoa(j)
			}
		}
	}
	if im := spec.Image; im != nil {
		s.ImageC, s.ImageH, s.ImageW = im.C, im.H, im.W
	}
	return s
}

// validateNames checks the task's class and field names against its model.
func (t *TaskConfig) validateNames() []error {
	var errs []error
	check := func(what string, names []string, want int) {
		if len(names) == 0 {
			return
		}
		if len(names) != want {
			errs = append(errs, fmt.Errorf("task.%s: %d names, the model has %d", what, len(names), want))
		}
		seen := map[string]bool{}
		for _, n := range names {
			if n == "" || seen[n] {
				errs = append(errs, fmt.Errorf("task.%s: names must be non-empty and unique, %q is not", what, n))
				return
			}
			seen[n] = true
		}
	}
	check("classes", t.Classes, t.Model.Classes)
	fields := 0
	if t.Model.Tabular != nil {
		fields = t.Model.Tabular.Fields
	}
	check("tabular_fields", t.TabularFields, fields)
	return errs
}

// servedModel is one round's model, in up to serve.workers copies.
type servedModel struct {
	round  uint64
	params []float32
	idle   chan *models.Model
}

// model returns the model of a committed round, reading its checkpoint on first use.
func (in *inference) model(round uint64) (*servedModel, error) {
	in.mu.Lock()
	defer in.mu.Unlock()
	for i, sm := range in.loaded {
		if sm.round == round {
			in.loaded = append(slices.Delete(in.loaded, i, i+1), sm)
			return sm, nil
		}
	}
	s := in.s
	b, err := checkpointBytes(s.store, s.rest.ring, s.cfg.Task.Name, round)
	if err != nil {
		return nil, err
	}
	params, _, err := decodeCheckpoint(b, s.hashRaw, s.layout.Size())
	if err != nil {
		return nil, err
	}
	sm := &servedModel{round: round, params: params, idle: make(chan *models.Model, cap(in.slots))}
	if len(in.loaded) >= keepModels {
		in.loaded = in.loaded[1:]
	}
	in.loaded = append(in.loaded, sm)
	return sm, nil
}

// acquire takes a worker slot and a copy of sm's model; release gives both back.
func (in *inference) acquire(ctx context.Context, sm *servedModel) (*models.Model, error) {
	select {
	case in.slots <- struct{}{}:
	case <-ctx.Done():
		return nil, status.FromContextError(ctx.Err()).Err()
	}
	select {
	case m := <-sm.idle:
		return m, nil
	default:
	}
	m, err := models.New(in.s.spec, in.s.cfg.Task.Seed)
	if err == nil {
		err = m.SetParams(sm.params, in.s.hash)
	}
	if err != nil {
		<-in.slots
		return nil, err
	}
	return m, nil
}

func (in *inference) release(sm *servedModel, m *models.Model) {
	select {
	case sm.idle <- m:
	default:
	}
	<-in.slots
}

// inferRequest is a Predict or Explain request, from either transport, after authorization.
type inferRequest struct {
	task    string
	round   uint64
	record  []byte
	explain bool
	class   string
	samples uint32
	seed    uint64
}

// serve answers a request of principal p; the error is a gRPC status.
func (in *inference) serve(ctx context.Context, p pki.Principal, q inferRequest) (explain.Result, error) {
	s := in.s
	task := s.cfg.Task.Name
	if q.task != task {
		return explain.Result{}, status.Errorf(codes.NotFound, "no task %q on this server", q.task)
	}
	if err := in.servable(q.round); err != nil {
		return explain.Result{}, err
	}
	if ok, wait := in.limiter.allow(p.URI()); !ok {
		return explain.Result{}, status.Errorf(codes.ResourceExhausted,
			"rate limit: %g requests a second per caller (serve.rate_per_second); try again in %d ms", in.limiter.rate, wait.Milliseconds()+1)
	}
	if max := s.cfg.Serve.MaxRequestBytes; len(q.record) > max {
		return explain.Result{}, status.Errorf(codes.InvalidArgument, "record: %d bytes, more than the limit of %d (serve.max_request_bytes)", len(q.record), max)
	}
	rec, err := dataset.DecodeRecord(q.record, &in.schema)
	if err != nil {
		return explain.Result{}, status.Errorf(codes.InvalidArgument, "record: %v", err)
	}
	class := -1
	if q.class != "" {
		if class = slices.Index(in.schema.Classes, q.class); class < 0 {
			return explain.Result{}, status.Errorf(codes.InvalidArgument, "class: unknown class %q", q.class)
		}
	}
	samples := int(q.samples)
	if samples == 0 {
		samples = explain.DefaultSamples
	}
	if samples < 4 || samples > MaxExplainSamples {
		return explain.Result{}, status.Errorf(codes.InvalidArgument, "samples: %d is outside [4, %d]", samples, MaxExplainSamples)
	}

	sm, err := in.model(q.round)
	if err != nil {
		s.log.Error("read checkpoint for inference", "round", q.round, "err", err)
		return explain.Result{}, status.Error(codes.Internal, "the model cannot be read")
	}
	m, err := in.acquire(ctx, sm)
	if err != nil {
		if _, ok := status.FromError(err); ok {
			return explain.Result{}, err
		}
		s.log.Error("build the model for inference", "round", q.round, "err", err)
		return explain.Result{}, status.Error(codes.Internal, "the model cannot be built")
	}
	defer in.release(sm, m)
	opt := explain.Options{Samples: samples, Seed: q.seed}
	var e *explain.Explanation
	switch {
	case !q.explain:
		e, err = explain.Modalities(m, &rec)
	case class >= 0:
		e, err = explain.ExplainClass(m, &rec, class, opt)
	default:
		e, err = explain.Explain(m, &rec, opt)
	}
	if errors.Is(err, explain.ErrNoModality) {
		return explain.Result{}, status.Errorf(codes.InvalidArgument, "record: it carries none of the model's modalities (%s)", joinModalities(s.spec.Modalities()))
	}
	if err != nil {
		s.log.Error("inference", "round", q.round, "err", err)
		return explain.Result{}, status.Error(codes.Internal, "the model could not evaluate the record")
	}
	res, err := explain.NewResult(m, &in.schema, &rec, e, samples, q.explain)
	if err != nil {
		s.log.Error("inference result", "round", q.round, "err", err)
		return explain.Result{}, status.Error(codes.Internal, "the explanation could not be rendered")
	}
	res.Task, res.Round = task, q.round
	return res, nil
}

func joinModalities(ms []dataset.Modality) string {
	out := ""
	for i, m := range ms {
		if i > 0 {
			out += ", "
		}
		out += m.String()
	}
	return out
}

// servable checks that a round's model is committed, released and not tainted, by the entity
// data in force: the policies decided already, but no policy change may serve a tainted model.
func (in *inference) servable(round uint64) error {
	task := in.s.cfg.Task.Name
	if round == 0 {
		return status.Errorf(codes.NotFound, "no committed model of task %q that may be served", task)
	}
	ref := policy.Ref{Type: "Model", ID: modelName(task, round)}
	ents := in.s.access.auth.Entities()
	tainted, ok := ents.BoolAttr(ref, "tainted")
	if !ok {
		return status.Errorf(codes.NotFound, "no committed model of task %q at round %d", task, round)
	}
	if tainted || in.s.isTainted(round) {
		return status.Errorf(codes.PermissionDenied, "model %s is tainted (built with data whose erasure was requested) and is never served", ref)
	}
	if released, _ := ents.BoolAttr(ref, "released"); !released {
		return status.Errorf(codes.PermissionDenied, "model %s is not released", ref)
	}
	return nil
}

// inferenceResource resolves a request's task (empty: the server's) and round (0: the latest
// servable) in place and returns the resource it is authorized on.
func (s *Server) inferenceResource(task *string, round *uint64) policy.Ref {
	if *task == "" {
		*task = s.cfg.Task.Name
	}
	if *round == 0 && *task == s.cfg.Task.Name {
		*round, _ = s.latestServable()
	}
	return policy.Ref{Type: "Model", ID: modelName(*task, *round)}
}

// inferenceService implements the Inference gRPC service.
type inferenceService struct {
	pb.UnimplementedInferenceServer
	s *Server
}

func (h *inferenceService) Predict(ctx context.Context, req *pb.PredictRequest) (*pb.Prediction, error) {
	p, err := principalOf(ctx, h.s.cfg.Federation)
	if err != nil {
		return nil, err
	}
	res, err := h.s.infer.serve(ctx, p, inferRequest{task: req.GetTask(), round: req.GetRound(), record: req.GetRecord()})
	if err != nil {
		return nil, err
	}
	return h.s.infer.predictionProto(&res), nil
}

func (h *inferenceService) Explain(ctx context.Context, req *pb.ExplainRequest) (*pb.Explanation, error) {
	p, err := principalOf(ctx, h.s.cfg.Federation)
	if err != nil {
		return nil, err
	}
	res, err := h.s.infer.serve(ctx, p, inferRequest{
		task: req.GetTask(), round: req.GetRound(), record: req.GetRecord(), explain: true,
		class: req.GetClass(), samples: req.GetSamples(), seed: req.GetSeed(),
	})
	if err != nil {
		return nil, err
	}
	return h.s.infer.explanationProto(&res), nil
}

// predictionProto and explanationProto put a result on the wire, classes and modalities in the
// model's order.
func (in *inference) predictionProto(r *explain.Result) *pb.Prediction {
	p := &pb.Prediction{
		Task: r.Task, Round: r.Round, Id: r.ID, Label: r.Label, ExplainedClass: r.ExplainedClass,
		ValueAll: r.ValueAll, ValueNone: r.ValueNone,
	}
	for _, c := range in.schema.Classes {
		p.Probabilities = append(p.Probabilities, &pb.NamedValue{Name: c, Value: r.Probabilities[c]})
	}
	for _, m := range dataset.Modalities {
		if v, ok := r.ModalityShapley[m.String()]; ok {
			p.ModalityShapley = append(p.ModalityShapley, &pb.NamedValue{Name: m.String(), Value: v})
		}
		if w, ok := r.GateWeights[m.String()]; ok {
			p.GateWeights = append(p.GateWeights, &pb.NamedValue{Name: m.String(), Value: w})
		}
	}
	for _, f := range r.Features {
		pf := &pb.Feature{Name: f.Name, Value: f.Value, Standardized: f.Standardized}
		if f.Attribution != nil {
			pf.Attribution, pf.StdErr = *f.Attribution, *f.StdErr
		}
		p.Features = append(p.Features, pf)
	}
	return p
}

func (in *inference) explanationProto(r *explain.Result) *pb.Explanation {
	e := &pb.Explanation{Prediction: in.predictionProto(r), TruncatedTokens: uint32(r.TruncatedTokens), HeatmapPng: r.HeatmapPNG, Samples: uint32(r.Samples)}
	if r.ValueTabularBaseline != nil {
		e.ValueTabularBaseline = *r.ValueTabularBaseline
	}
	for _, t := range r.Tokens {
		e.Tokens = append(e.Tokens, &pb.Token{Token: t.Token, Importance: t.Importance})
	}
	if sal := r.Saliency; sal != nil {
		e.Height, e.Width, e.Patch, e.Stride = uint32(sal.Height), uint32(sal.Width), uint32(sal.Patch), uint32(sal.Stride)
		e.Saliency = sal.Values
	}
	return e
}

// PredictionResult and ExplanationResult turn the inference service's answers into the JSON
// form of package explain, as the HTTPS API returns it and `fedweave predict` prints it.
func PredictionResult(p *pb.Prediction) explain.Result {
	r := explain.Result{
		Task: p.GetTask(), Round: p.GetRound(), ID: p.GetId(), Label: p.GetLabel(), ExplainedClass: p.GetExplainedClass(),
		ValueAll: p.GetValueAll(), ValueNone: p.GetValueNone(),
		Probabilities: map[string]float64{}, ModalityShapley: map[string]float64{},
	}
	for _, v := range p.GetProbabilities() {
		r.Probabilities[v.GetName()] = v.GetValue()
	}
	for _, v := range p.GetModalityShapley() {
		r.ModalityShapley[v.GetName()] = v.GetValue()
	}
	if len(p.GetGateWeights()) > 0 {
		r.GateWeights = map[string]float64{}
		for _, v := range p.GetGateWeights() {
			r.GateWeights[v.GetName()] = v.GetValue()
		}
	}
	for _, f := range p.GetFeatures() {
		r.Features = append(r.Features, explain.FeatureResult{Name: f.GetName(), Value: f.GetValue(), Standardized: f.GetStandardized()})
	}
	return r
}

// ExplanationResult: see PredictionResult.
func ExplanationResult(e *pb.Explanation) explain.Result {
	r := PredictionResult(e.GetPrediction())
	if len(r.Features) > 0 {
		for i, f := range e.GetPrediction().GetFeatures() {
			a, se := f.GetAttribution(), f.GetStdErr()
			r.Features[i].Attribution, r.Features[i].StdErr = &a, &se
		}
		base := e.GetValueTabularBaseline()
		r.ValueTabularBaseline = &base
		r.Samples = int(e.GetSamples())
	}
	for _, t := range e.GetTokens() {
		r.Tokens = append(r.Tokens, explain.TokenResult{Token: t.GetToken(), Importance: t.GetImportance()})
	}
	r.TruncatedTokens = int(e.GetTruncatedTokens())
	if e.GetHeight() > 0 {
		r.Saliency = &explain.SaliencyResult{Height: int(e.GetHeight()), Width: int(e.GetWidth()), Patch: int(e.GetPatch()), Stride: int(e.GetStride()), Values: e.GetSaliency()}
	}
	r.HeatmapPNG = e.GetHeatmapPng()
	return r
}

// rateLimiter is a token bucket per key.
type rateLimiter struct {
	rate, burst float64
	now         func() time.Time

	mu      sync.Mutex
	buckets map[string]*bucket
}

type bucket struct {
	tokens float64
	last   time.Time
}

// maxBuckets bounds the limiter's memory: past it, full buckets (which a fresh one equals) are
// dropped.
const maxBuckets = 10000

func newRateLimiter(rate float64, burst int) *rateLimiter {
	return &rateLimiter{rate: rate, burst: float64(burst), now: time.Now, buckets: map[string]*bucket{}}
}

// allow takes a token of key's bucket, or says how long until one is there.
func (l *rateLimiter) allow(key string) (bool, time.Duration) {
	now := l.now()
	l.mu.Lock()
	defer l.mu.Unlock()
	b, ok := l.buckets[key]
	if !ok {
		if len(l.buckets) >= maxBuckets {
			for k, o := range l.buckets {
				if o.tokens+now.Sub(o.last).Seconds()*l.rate >= l.burst {
					delete(l.buckets, k)
				}
			}
		}
		b = &bucket{tokens: l.burst, last: now}
		l.buckets[key] = b
	}
	b.tokens = min(l.burst, b.tokens+now.Sub(b.last).Seconds()*l.rate)
	b.last = now
	if b.tokens < 1 {
		return false, time.Duration((1 - b.tokens) / l.rate * float64(time.Second))
	}
	b.tokens--
	return true, 0
}

// Tainted models. The erasure of an org's contributions taints every model built with them
// (DESIGN.md, "Erasure"); a tainted model's entity says so, the default policies forbid its
// use, and the inference service refuses it whatever the policies say.

func keyTaint(task string, r uint64) []byte { return fmt.Appendf(nil, "task/%s/taint/%020d", task, r) }
func prefixTaint(task string) []byte        { return []byte("task/" + task + "/taint/") }

// TaintModels marks the models of the given committed rounds as tainted, in the store (it
// outlives a restart) and in the entity data from the next decision on. Marking is for good:
// there is no untaint. It fails for a round that was never committed.
func (s *Server) TaintModels(rounds ...uint64) error {
	a := s.access
	a.mu.Lock()
	defer a.mu.Unlock()
	for _, r := range rounds {
		if !slices.Contains(a.models, r) {
			return fmt.Errorf("server: round %d has no committed model", r)
		}
	}
	task := s.cfg.Task.Name
	err := s.store.Update(func(tx *store.Tx) error {
		for _, r := range rounds {
			if err := tx.Put(keyTaint(task, r), []byte{1}); err != nil {
				return err
			}
		}
		return nil
	})
	if err != nil {
		return fmt.Errorf("server: taint: %w", err)
	}
	if a.tainted == nil {
		a.tainted = map[uint64]bool{}
	}
	for _, r := range rounds {
		a.tainted[r] = true
	}
	s.log.Warn("models tainted", "task", task, "rounds", fmt.Sprint(rounds))
	return s.refreshEntities()
}

// loadTainted reads the tainted rounds of the task from the store.
func loadTainted(st *store.Store, task string) (map[uint64]bool, error) {
	out := map[uint64]bool{}
	pre := prefixTaint(task)
	err := st.Scan(pre, func(k, _ []byte) error {
		r, err := strconv.ParseUint(string(k[len(pre):]), 10, 64)
		if err != nil {
			return fmt.Errorf("bad taint key %q", k)
		}
		out[r] = true
		return nil
	})
	return out, err
}

func (s *Server) isTainted(round uint64) bool {
	a := s.access
	a.mu.Lock()
	defer a.mu.Unlock()
	return a.tainted[round]
}

// latestServable returns the latest committed round whose model is not tainted.
func (s *Server) latestServable() (uint64, bool) {
	a := s.access
	a.mu.Lock()
	defer a.mu.Unlock()
	for i := len(a.models) - 1; i >= 0; i-- {
		if r := a.models[i]; !a.tainted[r] {
			return r, true
		}
	}
	return 0, false
}
