package server

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"os"
	"slices"
	"strconv"
	"strings"
	"sync"

	"github.com/fedweave/fedweave/policy"
)

// PolicyConfig says how the server decides who may do what. Decisions are made by cedar
// policies (package policy) over entity data: the federation, its orgs and which of them are
// members, the server's task and its models.
//
// The policies come from Dir, a directory with a *.cedarschema and *.cedar files (as
// examples/policies), or are the built-in ones. They seed the policy store on the server's first
// start: from then on the set in force is the store's latest version, changed through the admin
// service ("fedweave policy apply|rm|rollback"), and Dir is read only for its schema.
//
// The entity data comes from Entities, a file in cedar's JSON entity format, or is derived from
// Members: each is an Org of the federation, a member. Either way the server adds the entities
// it knows itself, in place of any of the same id in the file: its Federation, its Task (the
// task's purpose, and the modalities of its model) and one Model::"TASK/ROUND" per committed
// round (released; tainted once TaintModels marks it). With neither Entities nor Members, no
// org is a member and every call is denied.
type PolicyConfig struct {
	Dir      string   `json:"dir,omitempty"`
	Entities string   `json:"entities,omitempty"`
	Members  []string `json:"members,omitempty"`
}

func (p *PolicyConfig) validate() []error {
	var errs []error
	if p.Entities != "" && len(p.Members) > 0 {
		errs = append(errs, errors.New("policy.members: only without policy.entities, whose file says who is a member"))
	}
	seen := map[string]bool{}
	for _, m := range p.Members {
		switch {
		case m == "":
			errs = append(errs, errors.New("policy.members: an empty org name"))
		case seen[m]:
			errs = append(errs, fmt.Errorf("policy.members: %s is listed twice", m))
		}
		seen[m] = true
	}
	return errs
}

// access is the server's access control: the authorizer in force, the versioned policy store
// and the audit log, all in the server's store.
type access struct {
	auth     *policy.Authorizer
	policies *policy.PolicyStore
	audit    *policy.AuditLog
	file     *policy.Entities // the entities of policy.entities; nil: derived from members

	// mu serializes changes of the policies and of the entity data, so that the store's
	// latest version and the authorizer's set agree, and entity rebuilds do not race.
	mu      sync.Mutex
	members []string
	models  []uint64        // the committed rounds, ascending: one Model entity each
	tainted map[uint64]bool // the rounds whose models are tainted (TaintModels)

	signMu sync.Mutex
	signed uint64 // the size of the audit log at its latest signed checkpoint
}

// initAccess loads the policies, the entity data and the audit log. It runs after restore.
func (s *Server) initAccess() error {
	pc := s.cfg.Policy
	schema, initial := policy.DefaultSchema(), policy.DefaultPolicies()
	if pc.Dir != "" {
		var err error
		if schema, initial, err = policy.LoadDir(pc.Dir); err != nil {
			return fmt.Errorf("server: policy.dir: %w", err)
		}
	}
	a := &access{members: slices.Clone(pc.Members)}
	if pc.Entities != "" {
		b, err := os.ReadFile(pc.Entities)
		if err != nil {
			return fmt.Errorf("server: policy.entities: %w", err)
		}
		if a.file, err = policy.ParseEntities(b); err != nil {
			return fmt.Errorf("server: policy.entities: %s: %w", pc.Entities, err)
		}
	}
	a.audit = policy.NewAuditLog(s.store, s.opt.Identity.Key)
	ps, err := policy.NewPolicyStore(s.store, schema, a.audit)
	if err != nil {
		return fmt.Errorf("server: %w", err)
	}
	a.policies = ps
	cur, err := ps.Current()
	switch {
	case errors.Is(err, policy.ErrNoVersion):
		if cur, err = ps.Apply(initial.Text(), s.opt.Identity.Principal.URI()); err != nil {
			return fmt.Errorf("server: store the initial policies: %w", err)
		}
	case err != nil:
		return fmt.Errorf("server: read the policies in force: %w", err)
	default:
		if sum := sha256.Sum256(initial.Text()); hex.EncodeToString(sum[:]) != cur.SHA256 {
			s.log.Info("the policies in force are the store's latest version, not those of policy.dir, which only seed a new store",
				"version", cur.Number, "change", cur.Change, "author", cur.Author)
		}
	}
	hist, err := s.History()
	if err != nil {
		return fmt.Errorf("server: read round history: %w", err)
	}
	for _, r := range hist {
		if r.Committed {
			a.models = append(a.models, r.Round)
		}
	}
	if a.tainted, err = loadTainted(s.store, s.cfg.Task.Name); err != nil {
		return fmt.Errorf("server: read the tainted models: %w", err)
	}
	s.access = a
	ents, err := s.entities()
	if err != nil {
		return err
	}
	if a.auth, err = policy.New(schema, cur.Policies, ents); err != nil {
		return fmt.Errorf("server: the policies in force (version %d) or the entity data: %w", cur.Number, err)
	}
	if a.file == nil && len(a.members) == 0 {
		s.log.Warn("no org is a member of the federation: every call will be denied; list the members in policy.members")
	}
	if n, err := a.audit.Size(); err == nil {
		if cps, err := a.audit.Checkpoints(); err == nil && len(cps) > 0 {
			a.signed = cps[len(cps)-1].Size
		}
		if n > a.signed {
			s.signAudit()
		}
	}
	return nil
}

// modelName is the id of the Model entity of a task's committed round.
func modelName(task string, round uint64) string { return task + "/" + strconv.FormatUint(round, 10) }

// taskModalities lists the modalities the task's model trains on.
func (s *Server) taskModalities() []string {
	var out []string
	for _, m := range s.spec.Modalities() {
		out = append(out, m.String())
	}
	return out
}

// entities builds the entity data the server decides with. The caller holds access.mu, or
// is initAccess.
func (s *Server) entities() (*policy.Entities, error) {
	a, t := s.access, &s.cfg.Task
	fed := policy.Federation{
		Name:  s.cfg.Federation,
		Tasks: []policy.Task{{Name: t.Name, Purpose: t.Purpose, Modalities: s.taskModalities()}},
	}
	if a.file == nil {
		for _, m := range a.members {
			if !s.erasedOrg(m) {
				fed.Orgs = append(fed.Orgs, policy.Org{Name: m, Member: true})
			}
		}
	}
	for _, o := range s.erasedOrgs() { // no longer members, even in policy.entities (erase.go)
		fed.Orgs = append(fed.Orgs, policy.Org{Name: o})
	}
	for _, r := range a.models {
		fed.Models = append(fed.Models, policy.Model{Name: modelName(t.Name, r), Task: t.Name, Round: int64(r), Released: true, Tainted: a.tainted[r]})
	}
	e, err := fed.Entities()
	if err != nil {
		return nil, fmt.Errorf("server: entity data: %w", err)
	}
	if a.file != nil {
		e = e.With(a.file)
	}
	return e, nil
}

// refreshEntities rebuilds the entity data and puts it in force. The caller holds access.mu.
func (s *Server) refreshEntities() error {
	e, err := s.entities()
	if err != nil {
		return err
	}
	return s.access.auth.SetEntities(e)
}

// AddMembers makes orgs members of the federation, as if they were listed in the config's
// policy.members, from the next decision on. It fails when the entity data comes from a file
// (policy.entities), which says who is a member. It is for tools and tests that issue
// certificates as they go (package servertest); the config is the place for members otherwise.
func (s *Server) AddMembers(orgs ...string) error {
	a := s.access
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.file != nil {
		return errors.New("server: the members come from policy.entities")
	}
	old := a.members
	for _, o := range orgs {
		if !slices.Contains(a.members, o) {
			a.members = append(slices.Clip(a.members), o)
		}
	}
	if err := s.refreshEntities(); err != nil {
		a.members = old
		return err
	}
	return nil
}

// latestModel returns the latest committed round that is a model, and whether there is one.
func (s *Server) latestModel() (uint64, bool) {
	a := s.access
	a.mu.Lock()
	defer a.mu.Unlock()
	if len(a.models) == 0 {
		return 0, false
	}
	return a.models[len(a.models)-1], true
}

// afterRound records a finished round: an audit event, a Model entity when it was committed,
// and a signed checkpoint of the audit log.
func (s *Server) afterRound(rec RoundRecord) {
	a := s.access
	details := map[string]string{
		"round":        strconv.FormatUint(rec.Round, 10),
		"committed":    strconv.FormatBool(rec.Committed),
		"cohort":       strconv.Itoa(rec.Cohort),
		"participants": strings.Join(rec.Participants, " "),
		"dropped":      strconv.Itoa(rec.Dropped),
		"refused":      strconv.Itoa(rec.Refused),
	}
	if rec.Reason != "" {
		details["reason"] = rec.Reason
	}
	s.appendAudit(policy.Event{
		Type: policy.EventRound, Principal: s.opt.Identity.Principal.URI(),
		Resource: policy.Ref{Type: "Task", ID: s.cfg.Task.Name}.String(), Details: details,
	})
	if rec.Committed {
		a.mu.Lock()
		a.models = append(a.models, rec.Round)
		if err := s.refreshEntities(); err != nil {
			s.log.Error("the committed model cannot be added to the entity data", "round", rec.Round, "err", err)
		}
		a.mu.Unlock()
	}
	s.signAudit()
}

// appendAudit appends ev to the audit log, logging a failure.
func (s *Server) appendAudit(ev policy.Event) error {
	if _, err := s.access.audit.Append(ev); err != nil {
		s.log.Error("audit log append failed", "type", ev.Type, "err", err)
		return err
	}
	return nil
}

// signAudit signs a checkpoint of the audit log if it grew since the last one.
func (s *Server) signAudit() {
	a := s.access
	a.signMu.Lock()
	defer a.signMu.Unlock()
	n, err := a.audit.Size()
	if err != nil || n <= a.signed {
		return
	}
	c, err := a.audit.Checkpoint()
	if err != nil {
		s.log.Error("audit checkpoint failed", "err", err)
		return
	}
	a.signed = c.Size
}
