package policy

import (
	"bytes"
	"encoding/json"
	"fmt"
	"slices"
	"strings"

	cedar "github.com/cedar-policy/cedar-go"

	"github.com/fedweave/fedweave/crypto/pki"
)

// Entities is the entity data that policies decide on: federations, orgs and their
// membership, tasks, models and checkpoints. Principals are not part of it: they come from
// certificates (see [PrincipalRef]). It is immutable and safe for concurrent use.
type Entities struct {
	m cedar.EntityMap
}

// principalTypes are the entity types that only certificates may name.
var principalTypes = map[cedar.EntityType]bool{"Client": true, "Admin": true, "Reader": true, "Server": true}

// ParseEntities parses entity data in cedar's JSON entity format: an array of
// {"uid": {"type": T, "id": ID}, "attrs": {...}, "parents": [{"type": T, "id": ID}, ...]},
// where an attribute that refers to an entity is written {"__entity": {"type": T, "id": ID}}.
// It checks the form only; [Schema.ValidateEntities] checks the data against a schema.
func ParseEntities(data []byte) (*Entities, error) {
	var list []json.RawMessage
	if err := json.Unmarshal(data, &list); err != nil {
		return nil, fmt.Errorf("policy: entities: want a JSON array of cedar entities: %w", err)
	}
	m := make(cedar.EntityMap, len(list))
	for i, raw := range list {
		var e cedar.Entity
		if err := e.UnmarshalJSON(raw); err != nil {
			return nil, fmt.Errorf("policy: entities: entity %d: %w", i, err)
		}
		if _, dup := m[e.UID]; dup {
			return nil, fmt.Errorf("policy: entities: entity %d: %s is listed twice", i, e.UID)
		}
		m[e.UID] = e
	}
	return &Entities{m: m}, nil
}

// Len returns the number of entities.
func (e *Entities) Len() int {
	if e == nil {
		return 0
	}
	return len(e.m)
}

// MarshalJSON returns the entities in cedar's JSON entity format, sorted by type and id, one
// entity a line.
func (e *Entities) MarshalJSON() ([]byte, error) {
	uids := make([]cedar.EntityUID, 0, e.Len())
	if e != nil {
		for uid := range e.m {
			uids = append(uids, uid)
		}
	}
	slices.SortFunc(uids, func(a, b cedar.EntityUID) int {
		if c := strings.Compare(string(a.Type), string(b.Type)); c != 0 {
			return c
		}
		return strings.Compare(string(a.ID), string(b.ID))
	})
	var b bytes.Buffer
	b.WriteString("[")
	for i, uid := range uids {
		ent, err := e.m[uid].MarshalJSON()
		if err != nil {
			return nil, fmt.Errorf("policy: entity %s: %w", uid, err)
		}
		if i > 0 {
			b.WriteString(",")
		}
		b.WriteString("\n  ")
		b.Write(ent)
	}
	b.WriteString("\n]\n")
	return b.Bytes(), nil
}

// ValidateEntities checks entity data against the schema: every entity must have a declared
// type, the declared attributes with their types and only declared parent types; principal
// types (Client, Admin, Reader, Server) are refused, since principals come from certificates;
// and an Org whose parent is a Federation must name that federation in its federation
// attribute. The error names the first entity at fault.
func (s *Schema) ValidateEntities(e *Entities) error {
	if e == nil {
		return nil
	}
	uids := make([]cedar.EntityUID, 0, len(e.m))
	for uid := range e.m {
		uids = append(uids, uid)
	}
	slices.SortFunc(uids, func(a, b cedar.EntityUID) int { return strings.Compare(a.String(), b.String()) })
	for _, uid := range uids {
		ent := e.m[uid]
		if principalTypes[uid.Type] {
			return fmt.Errorf("policy: entity %s: principals come from certificates, not from entity data", uid)
		}
		if uid.Type == "Action" {
			return fmt.Errorf("policy: entity %s: actions come from the schema, not from entity data", uid)
		}
		if err := s.validator.Entity(ent); err != nil {
			return fmt.Errorf("policy: entity %s does not match the schema: %w", uid, err)
		}
		if uid.Type == "Org" {
			fed, _ := ent.Attributes.Get("federation")
			for p := range ent.Parents.All() {
				if p.Type == "Federation" && !p.Equal(fed) {
					return fmt.Errorf("policy: entity %s: member of %s but its federation attribute is %v", uid, p, fed)
				}
			}
		}
	}
	return nil
}

// PrincipalRef returns the entity of a principal: fedweave://FED/org/ORG/ROLE/NAME is
// ROLE::"ORG/NAME", with ROLE one of Client, Admin, Reader and Server, as in
// Client::"hospital-a/node1". Its parent is Org::"ORG", and it has the attributes org
// (that Org) and name (NAME). The federation is not part of the id: [Authorizer.Decide]
// refuses a principal whose org is registered with another federation.
func PrincipalRef(p pki.Principal) Ref {
	return Ref{Type: string(roleTypes[string(p.Role)]), ID: p.Org + "/" + p.Name}
}

func principalEntity(p pki.Principal) cedar.Entity {
	org := cedar.NewEntityUID("Org", cedar.String(p.Org))
	return cedar.Entity{
		UID:     cedar.NewEntityUID(roleTypes[string(p.Role)], cedar.String(p.Org+"/"+p.Name)),
		Parents: cedar.NewEntityUIDSet(org),
		Attributes: cedar.NewRecord(cedar.RecordMap{
			"org":  org,
			"name": cedar.String(p.Name),
		}),
	}
}

// A Federation describes a federation simply, for building its entity data with
// [Federation.Entities] rather than writing cedar JSON by hand.
type Federation struct {
	Name        string
	Orgs        []Org
	Tasks       []Task
	Models      []Model
	Checkpoints []ModelCheckpoint
}

// An Org is an organisation registered with a federation; Member says whether it is a member
// now. Consent, if not nil, lists the purposes the org accepts to train for.
type Org struct {
	Name    string
	Region  string
	Member  bool
	Consent []string
}

// A Task is a training task of the federation.
type Task struct {
	Name       string
	Purpose    string
	Modalities []string
}

// A Model is a trained model of a task.
type Model struct {
	Name     string
	Task     string
	Round    int64
	Released bool
	Tainted  bool
}

// A ModelCheckpoint is a checkpoint of a model, with its own release and taint.
type ModelCheckpoint struct {
	Name     string
	Model    string
	Task     string
	Round    int64
	Released bool
	Tainted  bool
}

// Entities returns the entity data of f: Federation::NAME; Org::ORG for each org, whose parent
// is the federation if it is a member; Task::TASK; Model::MODEL; and Checkpoint::CKPT, whose
// parent is its model. Names must be non-empty and unique per kind, and tasks and models must
// exist where they are referred to.
func (f *Federation) Entities() (*Entities, error) {
	if f.Name == "" {
		return nil, fmt.Errorf("policy: federation has no name")
	}
	m := cedar.EntityMap{}
	add := func(e cedar.Entity) error {
		if e.UID.ID == "" {
			return fmt.Errorf("policy: federation %s: a %s has no name", f.Name, e.UID.Type)
		}
		if _, dup := m[e.UID]; dup {
			return fmt.Errorf("policy: federation %s: %s is listed twice", f.Name, e.UID)
		}
		m[e.UID] = e
		return nil
	}
	fed := cedar.NewEntityUID("Federation", cedar.String(f.Name))
	if err := add(cedar.Entity{UID: fed}); err != nil {
		return nil, err
	}
	for _, o := range f.Orgs {
		attrs := cedar.RecordMap{"federation": fed, "region": cedar.String(o.Region)}
		if o.Consent != nil {
			attrs["consent"] = stringSet(o.Consent)
		}
		e := cedar.Entity{UID: cedar.NewEntityUID("Org", cedar.String(o.Name)), Attributes: cedar.NewRecord(attrs)}
		if o.Member {
			e.Parents = cedar.NewEntityUIDSet(fed)
		}
		if err := add(e); err != nil {
			return nil, err
		}
	}
	for _, t := range f.Tasks {
		if err := add(cedar.Entity{
			UID: cedar.NewEntityUID("Task", cedar.String(t.Name)),
			Attributes: cedar.NewRecord(cedar.RecordMap{
				"federation": fed,
				"purpose":    cedar.String(t.Purpose),
				"modalities": stringSet(t.Modalities),
			}),
		}); err != nil {
			return nil, err
		}
	}
	task := func(kind, name, t string) (cedar.EntityUID, error) {
		uid := cedar.NewEntityUID("Task", cedar.String(t))
		if _, ok := m[uid]; !ok {
			return uid, fmt.Errorf("policy: federation %s: %s %s: no task %q", f.Name, kind, name, t)
		}
		return uid, nil
	}
	for _, md := range f.Models {
		t, err := task("model", md.Name, md.Task)
		if err != nil {
			return nil, err
		}
		if err := add(cedar.Entity{
			UID:        cedar.NewEntityUID("Model", cedar.String(md.Name)),
			Attributes: modelAttrs(t, md.Round, md.Released, md.Tainted),
		}); err != nil {
			return nil, err
		}
	}
	for _, c := range f.Checkpoints {
		t, err := task("checkpoint", c.Name, c.Task)
		if err != nil {
			return nil, err
		}
		model := cedar.NewEntityUID("Model", cedar.String(c.Model))
		if _, ok := m[model]; !ok {
			return nil, fmt.Errorf("policy: federation %s: checkpoint %s: no model %q", f.Name, c.Name, c.Model)
		}
		if err := add(cedar.Entity{
			UID:        cedar.NewEntityUID("Checkpoint", cedar.String(c.Name)),
			Parents:    cedar.NewEntityUIDSet(model),
			Attributes: modelAttrs(t, c.Round, c.Released, c.Tainted),
		}); err != nil {
			return nil, err
		}
	}
	return &Entities{m: m}, nil
}

func modelAttrs(task cedar.EntityUID, round int64, released, tainted bool) cedar.Record {
	return cedar.NewRecord(cedar.RecordMap{
		"task":     task,
		"round":    cedar.Long(round),
		"released": cedar.Boolean(released),
		"tainted":  cedar.Boolean(tainted),
	})
}

func stringSet(ss []string) cedar.Set {
	vals := make([]cedar.Value, len(ss))
	for i, s := range ss {
		vals[i] = cedar.String(s)
	}
	return cedar.NewSet(vals...)
}

// Merge returns the entities of e and more together; an entity in both is an error.
func (e *Entities) Merge(more *Entities) (*Entities, error) {
	m := make(cedar.EntityMap, e.Len()+more.Len())
	for _, src := range []*Entities{e, more} {
		if src == nil {
			continue
		}
		for uid, ent := range src.m {
			if _, dup := m[uid]; dup {
				return nil, fmt.Errorf("policy: entity %s is in both sets", uid)
			}
			m[uid] = ent
		}
	}
	return &Entities{m: m}, nil
}

// With returns the entities of e and those of more that e lacks: where both have an entity of
// the same type and id, e's is kept. A server uses it to lay the entities it derives (its task,
// its models) under the ones an operator wrote in a file.
func (e *Entities) With(more *Entities) *Entities {
	m := make(cedar.EntityMap, e.Len()+more.Len())
	if more != nil {
		for uid, ent := range more.m {
			m[uid] = ent
		}
	}
	if e != nil {
		for uid, ent := range e.m {
			m[uid] = ent
		}
	}
	return &Entities{m: m}
}

// BoolAttr returns the boolean attribute name of the entity r, as in the entity data's
// Model::"triage/3" tainted, and whether the entity exists and has such an attribute.
func (e *Entities) BoolAttr(r Ref, name string) (value, ok bool) {
	if e == nil {
		return false, false
	}
	ent, found := e.m[r.uid()]
	if !found {
		return false, false
	}
	v, found := ent.Attributes.Get(cedar.String(name))
	if !found {
		return false, false
	}
	b, isBool := v.(cedar.Boolean)
	return bool(b), isBool
}
