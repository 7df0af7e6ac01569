package server

// Erasure of an organisation's contributions (DESIGN.md, "Erasure"; EraseOrg, the admin RPC
// EraseOrg, "fedweave erase --org").
//
// What the server can and cannot do: under secure aggregation it never held one org's update,
// only sums, so it cannot subtract an org's contribution from a model; with plaintext
// aggregation it held updates for a round only, and subtracting one from a model trained
// further would not be exact anyway. So an erasure goes by lineage and retraining:
//
//  1. Plan, from the round records: the committed checkpoints whose aggregate includes the org
//     (it is among the round's participants) and every checkpoint that descends from one of
//     them (a round's parent is the checkpoint it started from) are tainted; the model rolls
//     back to the newest checkpoint on the current model's lineage that is not tainted.
//  2. In one store transaction: the erasure's record, the taint marks and the new head. Then,
//     at once: the tainted models' entities say tainted (the default policy
//     forbid-tainted-models stops their download and their use for inference), the server
//     continues from the clean checkpoint, and the org is out of the federation's membership
//     in the entity data and out of every later cohort, whatever the policies say.
//  3. The tainted checkpoints' data keys are shredded and the checkpoints deleted
//     (shredCheckpoints): no copy of the store yields them any more.
//  4. A receipt, signed with the server's certificate key, goes into the audit log: what was
//     done, and what remains.
//
// The task's next rounds retrain the rounds the rollback undid (the head's count of committed
// rounds goes down by as many); ErasureStatus shows how far they are. A round running while
// the erasure happens does not commit: its model was taken back, or the org was in it.
//
// Each step is recorded before the next begins, and New resumes an erasure a crash
// interrupted, from its record. Only tainted checkpoints are ever shredded, so a crash never
// loses a clean one.

import (
	"context"
	"crypto/ed25519"
	"encoding/base64"
	"encoding/json"
	"errors"
	"fmt"
	"slices"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	pb "github.com/fedweave/fedweave/api/fedweave/v1"
	"github.com/fedweave/fedweave/crypto/pki"
	"github.com/fedweave/fedweave/internal/store"
	"github.com/fedweave/fedweave/policy"
)

// Erasure is an org erasure as the server records it.
type Erasure struct {
	Org         string    `json:"org"`
	RequestedBy string    `json:"requested_by"`
	Requested   time.Time `json:"requested"`
	// State is "rolled_back" (tainted, rolled back, the org excluded), then "shredded" (the
	// tainted checkpoints' keys shredded), then "done" (the receipt written).
	State string `json:"state"`
	// Tainted lists the committed rounds whose checkpoints the erasure tainted.
	Tainted    []uint64 `json:"tainted"`
	HeadBefore uint64   `json:"head_before"`
	// RolledBackTo is the head after the erasure: HeadBefore when it was not tainted.
	RolledBackTo uint64 `json:"rolled_back_to"`
	// Retrain is how many committed rounds the rollback undid, which the task trains again
	// from round FirstRetrainRound on.
	Retrain           int      `json:"retrain"`
	FirstRetrainRound uint64   `json:"first_retrain_round"`
	Shredded          []uint64 `json:"shredded,omitempty"`
	// Downloads counts the downloads of tainted models the audit log recorded.
	Downloads    int       `json:"downloads"`
	ReceiptIndex uint64    `json:"receipt_index,omitempty"`
	Receipt      []byte    `json:"receipt,omitempty"`   // the signed receipt's JSON
	Signature    []byte    `json:"signature,omitempty"` // Ed25519, by the server's certificate key
	Finished     time.Time `json:"finished,omitzero"`
}

// ErasureStatus is an erasure and the retraining's progress.
type ErasureStatus struct {
	Erasure
	Head      uint64 // the server's head now
	Retrained int    // rounds committed on the model's lineage since the rollback, at most Retrain
}

// ErasureReceipt is what the server signs when it has carried out an org erasure.
type ErasureReceipt struct {
	Kind              string    `json:"kind"` // "org_erasure"
	Federation        string    `json:"federation"`
	Task              string    `json:"task"`
	Org               string    `json:"org"`
	RequestedBy       string    `json:"requested_by"`
	Requested         time.Time `json:"requested"`
	Completed         time.Time `json:"completed"`
	Protection        string    `json:"protection"`
	Tainted           []uint64  `json:"tainted_checkpoints"`
	HeadBefore        uint64    `json:"head_before"`
	RolledBackTo      uint64    `json:"rolled_back_to"`
	RoundsToRetrain   int       `json:"rounds_to_retrain"`
	FirstRetrainRound uint64    `json:"first_retrain_round"`
	ShreddedKeys      []uint64  `json:"shredded_checkpoint_keys"`
	ExcludedFromTasks bool      `json:"excluded_from_later_rounds"`
	Done              []string  `json:"done"`
	Remains           []string  `json:"remains"`
	Signer            string    `json:"signer"`
}

// ErrNoOrg is the error of EraseOrg without an org.
var ErrNoOrg = errors.New("server: erase: no org named")

// crashAfterRollback, set by tests, stops EraseOrg after its rollback as if the process died.
var crashAfterRollback atomic.Bool

func keyErasure(task, org string) []byte { return []byte("task/" + task + "/erasure/" + org) }
func prefixErasures(task string) []byte  { return []byte("task/" + task + "/erasure/") }

func loadErasures(st *store.Store, task string) ([]Erasure, error) {
	var out []Erasure
	err := st.Scan(prefixErasures(task), func(_, v []byte) error {
		var e Erasure
		if err := json.Unmarshal(v, &e); err != nil {
			return err
		}
		out = append(out, e)
		return nil
	})
	return out, err
}

func (s *Server) putErasure(tx *store.Tx, e *Erasure) error {
	b, err := json.Marshal(e)
	if err != nil {
		return err
	}
	return tx.Put(keyErasure(s.cfg.Task.Name, e.Org), b)
}

// erasedOrg reports whether org's contributions were erased.
func (s *Server) erasedOrg(org string) bool {
	if s.rest == nil {
		return false
	}
	return (*s.rest.erased.Load())[org]
}

// erasedOrgs lists the erased orgs, sorted.
func (s *Server) erasedOrgs() []string {
	if s.rest == nil {
		return nil
	}
	var out []string
	for o := range *s.rest.erased.Load() {
		out = append(out, o)
	}
	slices.Sort(out)
	return out
}

func orgOf(principal string) string {
	p, err := pki.ParsePrincipal(principal)
	if err != nil {
		return ""
	}
	return p.Org
}

// withoutErased ends the round channels of the clients of erased orgs and returns the others.
func (s *Server) withoutErased(live []*session) []*session {
	out := live[:0:0]
	for _, ss := range live {
		if s.erasedOrg(orgOf(ss.key)) {
			ss.fail(status.Error(codes.PermissionDenied, "permission denied: your organisation's contributions to this task were erased; it takes part no more"))
			continue
		}
		out = append(out, ss)
	}
	return out
}

// holdCommits keeps erasures out until the returned function is called: a round calls it
// before its erasure check and releases after its commit. The release also applies the
// retention rules.
func (s *Server) holdCommits() (release func()) {
	s.rest.commitMu.Lock()
	return func() {
		s.applyRetention()
		s.rest.commitMu.Unlock()
	}
}

// erasureVeto says why a round must not commit because of an erasure made while it ran, or "".
func (s *Server) erasureVeto(rec *RoundRecord) string {
	s.mu.Lock()
	head := s.head.Round
	s.mu.Unlock()
	if rec.Parent != nil && *rec.Parent != head {
		return "an erasure rolled the model back while the round ran; the round's update is dropped"
	}
	for _, p := range rec.Participants {
		if s.erasedOrg(orgOf(p)) {
			return "a participant's organisation was erased while the round ran; the round's update is dropped"
		}
	}
	return ""
}

// lineage is the committed rounds and the checkpoint each started from.
type lineage struct {
	rounds []RoundRecord // committed, ascending
	parent map[uint64]uint64
}

func (s *Server) lineage() (*lineage, error) {
	hist, err := s.History()
	if err != nil {
		return nil, err
	}
	l := &lineage{parent: map[uint64]uint64{}}
	prev := uint64(0)
	for _, r := range hist {
		if !r.Committed {
			continue
		}
		p := prev // records from before Parent was recorded: the previous committed round
		if r.Parent != nil {
			p = *r.Parent
		}
		l.parent[r.Round] = p
		l.rounds = append(l.rounds, r)
		prev = r.Round
	}
	return l, nil
}

// chain returns the checkpoints from r back to 0: r, its parent, ..., 0.
func (l *lineage) chain(r uint64) []uint64 {
	out := []uint64{r}
	for r != 0 {
		p, ok := l.parent[r]
		if !ok || p >= r {
			break
		}
		r = p
		out = append(out, r)
	}
	if out[len(out)-1] != 0 {
		out = append(out, 0)
	}
	return out
}

// EraseOrg erases org's contributions to the task, as the package doc of erase.go says, on
// behalf of by (a principal URI), and returns where the erasure stands. Erasing an org again
// returns its erasure (finishing it if a crash interrupted it).
func (s *Server) EraseOrg(org, by string) (ErasureStatus, error) {
	if org == "" {
		return ErasureStatus{}, ErrNoOrg
	}
	s.rest.commitMu.Lock()
	defer s.rest.commitMu.Unlock()
	task := s.cfg.Task.Name
	var job Erasure
	found, err := loadJSON(s.store, keyErasure(task, org), &job)
	if err != nil {
		return ErasureStatus{}, fmt.Errorf("server: erase: %w", err)
	}
	if found {
		if job.State != "done" {
			if err := s.finishErasure(&job); err != nil {
				return ErasureStatus{}, err
			}
		}
		return s.erasureStatus(job)
	}

	// 1. The plan.
	lin, err := s.lineage()
	if err != nil {
		return ErasureStatus{}, fmt.Errorf("server: erase: read the rounds: %w", err)
	}
	a := s.access
	a.mu.Lock()
	already := map[uint64]bool{}
	for r, t := range a.tainted {
		already[r] = t
	}
	a.mu.Unlock()
	mine := map[uint64]bool{}
	for _, r := range lin.rounds {
		if mine[lin.parent[r.Round]] || slices.ContainsFunc(r.Participants, func(p string) bool { return orgOf(p) == org }) {
			mine[r.Round] = true
		}
	}
	s.mu.Lock()
	h := s.head
	s.mu.Unlock()
	job = Erasure{Org: org, RequestedBy: by, Requested: time.Now().UTC(), State: "rolled_back",
		HeadBefore: h.Round, RolledBackTo: h.Round, FirstRetrainRound: h.NextRound}
	for _, r := range lin.rounds {
		if mine[r.Round] {
			job.Tainted = append(job.Tainted, r.Round)
		}
	}
	var params []float32
	var optState OptState
	if chain := lin.chain(h.Round); mine[h.Round] || already[h.Round] {
		for _, c := range chain[1:] {
			if mine[c] || already[c] {
				job.Retrain++
				continue
			}
			b, err := checkpointBytes(s.store, s.rest.ring, task, c)
			if errors.Is(err, store.ErrNotFound) && c != 0 {
				job.Retrain++ // deleted by retention: further back
				continue
			}
			if err != nil {
				return ErasureStatus{}, fmt.Errorf("server: erase: read checkpoint %d: %w", c, err)
			}
			if params, optState, err = decodeCheckpoint(b, s.hashRaw, s.layout.Size()); err != nil {
				return ErasureStatus{}, fmt.Errorf("server: erase: checkpoint %d: %w", c, err)
			}
			job.RolledBackTo = c
			job.Retrain++ // the head itself
			break
		}
	}
	newHead := h
	if job.RolledBackTo != h.Round {
		newHead.Round = job.RolledBackTo
		newHead.Committed = max(0, h.Committed-job.Retrain)
	}

	// 2. Taint, roll back and exclude, in one transaction; then in force.
	err = s.store.Update(func(tx *store.Tx) error {
		if err := s.putErasure(tx, &job); err != nil {
			return err
		}
		for _, r := range job.Tainted {
			if err := tx.Put(keyTaint(task, r), []byte{1}); err != nil {
				return err
			}
		}
		hb, _ := json.Marshal(newHead)
		return tx.Put(keyHead(task), hb)
	})
	if err != nil {
		return ErasureStatus{}, fmt.Errorf("server: erase: %w", err)
	}
	s.mu.Lock()
	s.head = newHead
	if params != nil {
		s.params, s.optState = params, optState
	}
	s.mu.Unlock()
	orgs := map[string]bool{org: true}
	for o := range *s.rest.erased.Load() {
		orgs[o] = true
	}
	s.rest.erased.Store(&orgs)
	a.mu.Lock()
	if a.tainted == nil {
		a.tainted = map[uint64]bool{}
	}
	for _, r := range job.Tainted {
		a.tainted[r] = true
	}
	err = s.refreshEntities()
	a.mu.Unlock()
	if err != nil {
		s.log.Error("erase: the entity data cannot be rebuilt; the tainted models are refused by the inference service and by the store", "err", err)
	}
	s.log.Warn("org erased: models tainted, rolled back", "org", org, "tainted", joinRounds(job.Tainted),
		"head_before", job.HeadBefore, "head", job.RolledBackTo, "rounds_to_retrain", job.Retrain)
	select {
	case <-s.done:
		if newHead.Committed < s.cfg.Task.Rounds {
			s.log.Warn("erase: the task had completed; the rounds undone are retrained when the server runs the task again")
		}
	default:
	}

	// 3 and 4.
	if crashAfterRollback.Load() {
		return ErasureStatus{}, errors.New("server: erase: simulated crash after the rollback")
	}
	if err := s.finishErasure(&job); err != nil {
		return ErasureStatus{}, err
	}
	return s.erasureStatus(job)
}

// finishErasure shreds the tainted checkpoints and writes the receipt, from the state the
// erasure's record is in. The caller holds rest.commitMu, or nothing else runs yet.
func (s *Server) finishErasure(job *Erasure) error {
	if job.State == "rolled_back" {
		shredded, err := s.shredCheckpoints(job.Tainted)
		if err != nil {
			return fmt.Errorf("server: erase %s: %w", job.Org, err)
		}
		job.Shredded = append(job.Shredded, shredded...)
		job.State = "shredded"
		if err := s.store.Update(func(tx *store.Tx) error { return s.putErasure(tx, job) }); err != nil {
			return fmt.Errorf("server: erase %s: %w", job.Org, err)
		}
	}
	if job.State != "shredded" {
		return nil
	}
	job.Downloads = s.countDownloads(job.Tainted)
	job.Finished = time.Now().UTC()
	rec := s.receipt(job)
	body, err := json.Marshal(rec)
	if err != nil {
		return err
	}
	sig := s.opt.Identity.Key.Sign(body)
	idx, err := s.access.audit.Append(policy.Event{
		Type: policy.EventErasure, Principal: s.opt.Identity.Principal.URI(), Action: "RequestErasure",
		Resource: policy.Ref{Type: "Org", ID: job.Org}.String(),
		Details: map[string]string{
			"kind":      "receipt",
			"receipt":   string(body),
			"signature": base64.StdEncoding.EncodeToString(sig),
		},
	})
	if err != nil {
		return fmt.Errorf("server: erase %s: write the receipt: %w", job.Org, err)
	}
	s.signAudit()
	job.State, job.ReceiptIndex, job.Receipt, job.Signature = "done", idx, body, sig
	if err := s.store.Update(func(tx *store.Tx) error { return s.putErasure(tx, job) }); err != nil {
		return fmt.Errorf("server: erase %s: %w", job.Org, err)
	}
	s.log.Info("org erasure done: receipt in the audit log", "org", job.Org, "receipt", idx, "shredded", joinRounds(job.Shredded))
	return nil
}

// receipt states what job did and what remains.
func (s *Server) receipt(job *Erasure) ErasureReceipt {
	t := &s.cfg.Task
	r := ErasureReceipt{
		Kind: "org_erasure", Federation: s.cfg.Federation, Task: t.Name, Org: job.Org,
		RequestedBy: job.RequestedBy, Requested: job.Requested, Completed: job.Finished, Protection: t.Secure,
		Tainted: nonNil(job.Tainted), HeadBefore: job.HeadBefore, RolledBackTo: job.RolledBackTo,
		RoundsToRetrain: job.Retrain, FirstRetrainRound: job.FirstRetrainRound, ShreddedKeys: nonNil(job.Shredded),
		ExcludedFromTasks: true, Signer: s.opt.Identity.Principal.URI(),
	}
	if len(job.Tainted) == 0 {
		r.Done = append(r.Done, fmt.Sprintf("no committed checkpoint includes %s's contributions: nothing was tainted or rolled back", job.Org))
	} else {
		r.Done = append(r.Done,
			fmt.Sprintf("checkpoints %s include %s's contributions or descend from one that does: tainted, so that policy forbid-tainted-models refuses their download and their use for inference from the moment of the request", joinRounds(job.Tainted), job.Org),
			fmt.Sprintf("the data keys of the tainted checkpoints still stored (%s) were shredded and the checkpoints deleted: no copy of the server's store, a backup included, yields them with the current keys", joinRounds(job.Shredded)))
	}
	if job.RolledBackTo != job.HeadBefore {
		r.Done = append(r.Done, fmt.Sprintf("the model was rolled back from checkpoint %d to checkpoint %d, the newest on its lineage built without %s; the task retrains the %d rounds undone, from round %d on",
			job.HeadBefore, job.RolledBackTo, job.Org, job.Retrain, job.FirstRetrainRound))
	}
	r.Done = append(r.Done, fmt.Sprintf("%s is no longer a member of the federation in the server's entity data and takes part in no later round", job.Org))
	switch t.Secure {
	case "none":
		r.Remains = append(r.Remains, "the server aggregated plaintext updates but kept none beyond its round (round state is never stored); a model trained further cannot have one update subtracted exactly, so retraining from a clean checkpoint is the method")
	default:
		r.Remains = append(r.Remains, fmt.Sprintf("under secure aggregation (%s) the server never held %s's individual updates, only sums, so it could not subtract them: the rollback and retraining are the method, and no model trained after the rollback includes them", t.Secure, job.Org))
	}
	r.Remains = append(r.Remains,
		fmt.Sprintf("the round records of the server's store name %s as a participant of the rounds it contributed to; they are kept, unsealed, as the evidence of this erasure", job.Org),
		"physical disk blocks are not overwritten: deleted values and replaced keyring files stay on disk until reused; what they hold of the tainted checkpoints is sealed under the shredded keys, which only a keyring file from before this erasure (a backup, or blocks recovered from disk) together with the root key could derive",
		fmt.Sprintf("copies of tainted models downloaded before the erasure are beyond the server's reach: the audit log records %d such download(s)", job.Downloads),
		fmt.Sprintf("%s's own records, at %s", job.Org, job.Org))
	return r
}

func nonNil(v []uint64) []uint64 {
	if v == nil {
		return []uint64{}
	}
	return v
}

// countDownloads counts the model downloads of the given rounds in the audit log.
func (s *Server) countDownloads(rounds []uint64) int {
	want := map[string]bool{}
	for _, r := range rounds {
		want[policy.Ref{Type: "Model", ID: modelName(s.cfg.Task.Name, r)}.String()] = true
	}
	log := s.access.audit
	size, err := log.Size()
	if err != nil || len(want) == 0 {
		return 0
	}
	n := 0
	for from := uint64(0); from < size; from += 1000 {
		entries, err := log.Entries(from, min(size, from+1000))
		if err != nil {
			return n
		}
		for _, e := range entries {
			if e.Event.Type == policy.EventModelDownload && want[e.Event.Resource] {
				n++
			}
		}
	}
	return n
}

// resumeAtRest finishes the erasures a crash interrupted and applies the retention rules. New
// calls it once the access control is up.
func (s *Server) resumeAtRest() error {
	jobs, err := loadErasures(s.store, s.cfg.Task.Name)
	if err != nil {
		return fmt.Errorf("server: read the erasures: %w", err)
	}
	for i := range jobs {
		if jobs[i].State != "done" {
			s.log.Warn("resuming an interrupted erasure", "org", jobs[i].Org, "state", jobs[i].State)
			if err := s.finishErasure(&jobs[i]); err != nil {
				return err
			}
		}
	}
	s.applyRetention()
	return nil
}

// Erasures returns the erasures so far, or org's (an empty list if it has none), with the
// retraining's progress.
func (s *Server) Erasures(org string) ([]ErasureStatus, error) {
	jobs, err := loadErasures(s.store, s.cfg.Task.Name)
	if err != nil {
		return nil, fmt.Errorf("server: read the erasures: %w", err)
	}
	var out []ErasureStatus
	for _, j := range jobs {
		if org != "" && j.Org != org {
			continue
		}
		st, err := s.erasureStatus(j)
		if err != nil {
			return nil, err
		}
		out = append(out, st)
	}
	return out, nil
}

// erasureStatus adds the head and the retraining's progress: the committed rounds from
// FirstRetrainRound on, on the current model's lineage down to RolledBackTo.
func (s *Server) erasureStatus(job Erasure) (ErasureStatus, error) {
	s.mu.Lock()
	head := s.head.Round
	s.mu.Unlock()
	st := ErasureStatus{Erasure: job, Head: head}
	lin, err := s.lineage()
	if err != nil {
		return st, err
	}
	for _, r := range lin.chain(head) {
		if r == job.RolledBackTo || r < job.FirstRetrainRound {
			break
		}
		st.Retrained++
	}
	st.Retrained = min(st.Retrained, job.Retrain)
	return st, nil
}

// VerifyReceipt checks an erasure receipt's signature with the server's public key (that of
// its certificate) and returns the receipt.
func VerifyReceipt(receipt, signature []byte, pub ed25519.PublicKey) (ErasureReceipt, error) {
	var r ErasureReceipt
	if len(pub) != ed25519.PublicKeySize || !ed25519.Verify(pub, receipt, signature) {
		return r, errors.New("server: the erasure receipt's signature does not verify with this key")
	}
	if err := json.Unmarshal(receipt, &r); err != nil || r.Kind != "org_erasure" {
		return r, errors.New("server: not an erasure receipt")
	}
	return r, nil
}

// The admin RPCs. The interceptor has authorized EraseOrg as RequestErasure on the Org, and
// ErasureStatus as ReadAudit on the Federation.

// Proto returns st as the admin service answers it.
func (st ErasureStatus) Proto() *pb.Erasure {
	return &pb.Erasure{
		Org: st.Org, State: st.State, RequestedBy: st.RequestedBy, RequestedUnixNano: st.Requested.UnixNano(),
		Tainted: st.Tainted, HeadBefore: st.HeadBefore, RolledBackTo: st.RolledBackTo,
		RoundsToRetrain: uint32(st.Retrain), RoundsRetrained: uint32(st.Retrained), FirstRetrainRound: st.FirstRetrainRound,
		Shredded: st.Shredded, ReceiptIndex: st.ReceiptIndex, Receipt: st.Receipt, Signature: st.Signature,
		Head: st.Head, Downloads: uint32(st.Downloads),
	}
}

func (h *adminService) EraseOrg(ctx context.Context, req *pb.EraseOrgRequest) (*pb.Erasure, error) {
	by, err := h.caller(ctx)
	if err != nil {
		return nil, err
	}
	if req.GetOrg() == "" {
		return nil, status.Error(codes.InvalidArgument, "erase which org?")
	}
	st, err := h.s.EraseOrg(req.GetOrg(), by.URI())
	if err != nil {
		return nil, h.internal("the erasure", err)
	}
	return st.Proto(), nil
}

func (h *adminService) ErasureStatus(ctx context.Context, req *pb.ErasureStatusRequest) (*pb.ErasureStatusResponse, error) {
	list, err := h.s.Erasures(req.GetOrg())
	if err != nil {
		return nil, h.internal("read the erasures", err)
	}
	resp := &pb.ErasureStatusResponse{}
	for _, st := range list {
		resp.Erasures = append(resp.Erasures, st.Proto())
	}
	return resp, nil
}
