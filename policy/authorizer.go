package policy

import (
	"encoding/json"
	"fmt"
	"math"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync/atomic"

	cedar "github.com/cedar-policy/cedar-go"

	"github.com/fedweave/fedweave/crypto/pki"
)

// A Ref names an entity: its type and its id, as in Task::"mnist" (Ref{"Task", "mnist"}).
type Ref struct {
	Type string
	ID   string
}

// String returns r in cedar's syntax, Type::"id".
func (r Ref) String() string { return r.uid().String() }

func (r Ref) uid() cedar.EntityUID {
	return cedar.NewEntityUID(cedar.EntityType(r.Type), cedar.String(r.ID))
}

// ParseRef parses an entity reference in cedar's syntax, Type::"id", or with the id unquoted,
// Type::id, as is easier to type in a shell.
func ParseRef(s string) (Ref, error) {
	typ, id, ok := strings.Cut(s, "::")
	if !ok || typ == "" || id == "" {
		return Ref{}, fmt.Errorf(`policy: entity %q: want TYPE::"ID", as in Task::"mnist"`, s)
	}
	if !strings.HasPrefix(id, `"`) {
		id = strconv.Quote(id)
	}
	var uid cedar.EntityUID
	if err := uid.UnmarshalCedar([]byte(typ + "::" + id)); err != nil {
		return Ref{}, fmt.Errorf(`policy: entity %q: want TYPE::"ID", as in Task::"mnist"`, s)
	}
	return Ref{Type: string(uid.Type), ID: string(uid.ID)}, nil
}

// A Request asks whether Principal may do Action to Resource.
type Request struct {
	// Principal is the caller, as named by its verified certificate.
	Principal pki.Principal
	// Action is one of the schema's actions, as "Join" or "DownloadModel" (see
	// [Schema.Actions] and [ActionForMethod]).
	Action string
	// Resource is what the action is done to, as Task::"mnist" or Model::"mnist-v3".
	Resource Ref
	// Context holds the request's context attributes, as the schema declares them for the
	// action: string, bool, integer, []string, []any, map[string]any and Ref values (and
	// json.Number and whole float64 values, as decoded from JSON).
	Context map[string]any
}

// A Decision is the outcome of a [Request].
type Decision struct {
	// Allow reports whether the request is allowed.
	Allow bool
	// Reasons holds the ids of the policies that determined the decision: the permits that
	// allowed it, or the forbids that denied it. It is empty when nothing permitted the
	// request (deny by default) and when the request was malformed.
	Reasons []string
	// Errors holds what went wrong while deciding: a malformed request, or a policy that
	// could not be evaluated ("policy-id: message"), as when an entity it refers to is not in
	// the entity data. A policy in error counts as not applying, except that a forbid in
	// error denies the request (fail closed).
	Errors []string
}

// String returns "ALLOW", or "DENY", followed by the determining policies, as printed by
// "fedweave policy check".
func (d Decision) String() string {
	word := "DENY"
	if d.Allow {
		word = "ALLOW"
	}
	if len(d.Reasons) > 0 {
		return word + " " + strings.Join(d.Reasons, " ")
	}
	return word
}

// An Authorizer decides requests with a schema, a policy set and entity data. It is safe for
// concurrent use; [Authorizer.SetPolicies] and [Authorizer.SetEntities] replace the policies or
// the entities atomically, so that a decision sees the old set or the new one, never a mix.
type Authorizer struct {
	schema *Schema
	state  atomic.Pointer[authState]
}

type authState struct {
	policies *PolicySet
	entities *Entities
}

// New returns an Authorizer. A nil schema means [DefaultSchema], nil policies
// [DefaultPolicies], and nil entities no entity data (so that everything is denied). The
// policies and the entities are validated against the schema first.
func New(schema *Schema, policies *PolicySet, entities *Entities) (*Authorizer, error) {
	if schema == nil {
		schema = DefaultSchema()
	}
	if policies == nil {
		policies = DefaultPolicies()
	}
	if entities == nil {
		entities = &Entities{}
	}
	if err := schema.Validate(policies); err != nil {
		return nil, err
	}
	if err := schema.ValidateEntities(entities); err != nil {
		return nil, err
	}
	a := &Authorizer{schema: schema}
	a.state.Store(&authState{policies: policies, entities: entities})
	return a, nil
}

// Schema returns the schema of a.
func (a *Authorizer) Schema() *Schema { return a.schema }

// Policies returns the policies a decides with now.
func (a *Authorizer) Policies() *PolicySet { return a.state.Load().policies }

// Entities returns the entity data a decides with now.
func (a *Authorizer) Entities() *Entities { return a.state.Load().entities }

// SetPolicies validates ps against the schema and, if it is valid, decides with it from now
// on. On error nothing changes.
func (a *Authorizer) SetPolicies(ps *PolicySet) error {
	if err := a.schema.Validate(ps); err != nil {
		return err
	}
	for {
		old := a.state.Load()
		if a.state.CompareAndSwap(old, &authState{policies: ps, entities: old.entities}) {
			return nil
		}
	}
}

// SetEntities validates e against the schema and, if it is valid, decides with it from now
// on. On error nothing changes.
func (a *Authorizer) SetEntities(e *Entities) error {
	if e == nil {
		e = &Entities{}
	}
	if err := a.schema.ValidateEntities(e); err != nil {
		return err
	}
	for {
		old := a.state.Load()
		if a.state.CompareAndSwap(old, &authState{policies: old.policies, entities: e}) {
			return nil
		}
	}
}

// Decide decides req. It denies, with the reason in Decision.Errors, a request whose
// principal is not valid, whose action the schema does not know or does not allow for the
// principal's role or the resource's type, or whose context does not match the schema; and a
// request whose principal's org is registered with another federation than the principal's.
// Everything else is decided by the policies: allowed if some permit applies and no forbid
// does.
func (a *Authorizer) Decide(req Request) Decision {
	st := a.state.Load()
	deny := func(format string, args ...any) Decision {
		return Decision{Errors: []string{fmt.Sprintf(format, args...)}}
	}
	if err := req.Principal.Validate(); err != nil {
		return deny("request: %v", err)
	}
	action, ok := a.schema.actions[req.Action]
	if !ok {
		return deny("request: unknown action %q: the actions are %s", req.Action, strings.Join(a.schema.Actions(), ", "))
	}
	principal := principalEntity(req.Principal)
	if !slices.Contains(action.AppliesTo.Principals, principal.UID.Type) {
		ps, _ := a.schema.appliesTo(req.Action)
		return deny("request: a %s cannot %s: only a %s can", principal.UID.Type, req.Action, joinOr(ps))
	}
	if !slices.Contains(action.AppliesTo.Resources, cedar.EntityType(req.Resource.Type)) {
		_, rs := a.schema.appliesTo(req.Action)
		return deny("request: %s is not done to a %s resource, but to a %s", req.Action, req.Resource.Type, joinOr(rs))
	}
	ctx, err := toRecord(req.Context)
	if err != nil {
		return deny("request: context: %v", err)
	}
	creq := cedar.Request{
		Principal: principal.UID,
		Action:    cedar.NewEntityUID("Action", cedar.String(req.Action)),
		Resource:  req.Resource.uid(),
		Context:   ctx,
	}
	if err := a.schema.validator.Request(creq); err != nil {
		return deny("request: %s", strings.ReplaceAll(err.Error(), "`", ""))
	}
	if org, ok := st.entities.m[cedar.NewEntityUID("Org", cedar.String(req.Principal.Org))]; ok {
		fed, _ := org.Attributes.Get("federation")
		want := cedar.NewEntityUID("Federation", cedar.String(req.Principal.Federation))
		if !want.Equal(fed) {
			return deny("request: the principal is of federation %s, but its org %s is registered with %v",
				req.Principal.Federation, req.Principal.Org, fed)
		}
	}

	dec, diag := cedar.Authorize(st.policies.set, view{a.schema, st.entities, principal}, creq)
	d := Decision{Allow: dec == cedar.Allow}
	for _, r := range diag.Reasons {
		d.Reasons = append(d.Reasons, string(r.PolicyID))
	}
	var failed []string // forbids that could not be evaluated
	for _, e := range diag.Errors {
		d.Errors = append(d.Errors, string(e.PolicyID)+": "+e.Message)
		if p := st.policies.policies[string(e.PolicyID)]; p != nil && p.Effect() == cedar.Forbid {
			failed = append(failed, string(e.PolicyID))
		}
	}
	if d.Allow && len(failed) > 0 {
		// A forbid that could not be evaluated might have applied: fail closed.
		d = Decision{Reasons: failed, Errors: d.Errors}
	}
	sort.Strings(d.Reasons)
	sort.Strings(d.Errors)
	return d
}

// view is the entity data of one decision: the request's principal, built from its
// certificate, the schema's actions and the stored entities.
type view struct {
	schema    *Schema
	entities  *Entities
	principal cedar.Entity
}

func (v view) Get(uid cedar.EntityUID) (cedar.Entity, bool) {
	if uid == v.principal.UID {
		return v.principal, true
	}
	if uid.Type == "Action" {
		e, ok := v.schema.actionEntities[uid]
		return e, ok
	}
	e, ok := v.entities.m[uid]
	return e, ok
}

// toRecord converts a request context to a cedar record.
func toRecord(m map[string]any) (cedar.Record, error) {
	rm := make(cedar.RecordMap, len(m))
	for k, v := range m {
		cv, err := toValue(v)
		if err != nil {
			return cedar.Record{}, fmt.Errorf("%s: %w", k, err)
		}
		rm[cedar.String(k)] = cv
	}
	return cedar.NewRecord(rm), nil
}

func toValue(v any) (cedar.Value, error) {
	switch v := v.(type) {
	case string:
		return cedar.String(v), nil
	case bool:
		return cedar.Boolean(v), nil
	case int:
		return cedar.Long(v), nil
	case int32:
		return cedar.Long(v), nil
	case int64:
		return cedar.Long(v), nil
	case uint32:
		return cedar.Long(v), nil
	case uint64:
		if v > math.MaxInt64 {
			return nil, fmt.Errorf("%d is out of the range of a cedar Long", v)
		}
		return cedar.Long(v), nil
	case float64:
		if v != math.Trunc(v) || v < math.MinInt64 || v >= math.MaxInt64 {
			return nil, fmt.Errorf("%v is not an integer: cedar has no fractions", v)
		}
		return cedar.Long(int64(v)), nil
	case json.Number:
		n, err := v.Int64()
		if err != nil {
			return nil, fmt.Errorf("%s is not an integer: cedar has no fractions", v)
		}
		return cedar.Long(n), nil
	case Ref:
		return v.uid(), nil
	case []string:
		return stringSet(v), nil
	case []any:
		vals := make([]cedar.Value, len(v))
		for i, x := range v {
			cv, err := toValue(x)
			if err != nil {
				return nil, err
			}
			vals[i] = cv
		}
		return cedar.NewSet(vals...), nil
	case map[string]any:
		if len(v) == 1 {
			if e, ok := v["__entity"].(map[string]any); ok {
				t, _ := e["type"].(string)
				id, _ := e["id"].(string)
				if t != "" {
					return Ref{Type: t, ID: id}.uid(), nil
				}
			}
		}
		r, err := toRecord(v)
		if err != nil {
			return nil, err
		}
		return r, nil
	case nil:
		return nil, fmt.Errorf("null has no cedar value")
	}
	return nil, fmt.Errorf("a %T has no cedar value", v)
}

// methodActions maps the gRPC methods of fedweave's services to the actions that authorize
// them. Participate is the round stream: opening it is SubmitUpdate (the evaluation reports
// sent on it ride on that decision). DescribeTask tells a client the terms of a task before it
// joins, so whoever may Join may read them. The admin service's reads are ReadPolicy (CheckPolicy
// too: it reveals what the policies decide), its changes ChangePolicy; EraseOrg is RequestErasure
// (on the Org), ErasureStatus ReadAudit (it reads what erasures did), GetRetention and
// SetRetention ManageRetention. The inference service's
// Predict is Infer and its Explain is Explain.
var methodActions = map[string]string{
	"/fedweave.v1.Federation/Join":          "Join",
	"/fedweave.v1.Federation/Participate":   "SubmitUpdate",
	"/fedweave.v1.Federation/DescribeTask":  "Join",
	"/fedweave.v1.Federation/DownloadModel": "DownloadModel",
	"/fedweave.v1.Admin/ListPolicies":       "ReadPolicy",
	"/fedweave.v1.Admin/GetPolicy":          "ReadPolicy",
	"/fedweave.v1.Admin/CheckPolicy":        "ReadPolicy",
	"/fedweave.v1.Admin/ApplyPolicy":        "ChangePolicy",
	"/fedweave.v1.Admin/RemovePolicy":       "ChangePolicy",
	"/fedweave.v1.Admin/RollbackPolicy":     "ChangePolicy",
	"/fedweave.v1.Admin/TailAudit":          "ReadAudit",
	"/fedweave.v1.Admin/EraseOrg":           "RequestErasure",
	"/fedweave.v1.Admin/ErasureStatus":      "ReadAudit",
	"/fedweave.v1.Admin/GetRetention":       "ManageRetention",
	"/fedweave.v1.Admin/SetRetention":       "ManageRetention",
	"/fedweave.v1.Inference/Predict":        "Infer",
	"/fedweave.v1.Inference/Explain":        "Explain",
}

// ActionForMethod returns the action that authorizes a gRPC method, given its full name as in
// grpc.UnaryServerInfo.FullMethod ("/fedweave.v1.Federation/Join"), and whether there is one.
// A method without an action must be denied.
func ActionForMethod(fullMethod string) (string, bool) {
	a, ok := methodActions[fullMethod]
	return a, ok
}
