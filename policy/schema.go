package policy

import (
	_ "embed"
	"fmt"
	"slices"
	"sort"
	"strings"
	"sync"

	cedar "github.com/cedar-policy/cedar-go"
	"github.com/cedar-policy/cedar-go/x/exp/schema"
	"github.com/cedar-policy/cedar-go/x/exp/schema/resolved"
	"github.com/cedar-policy/cedar-go/x/exp/schema/validate"
)

// SchemaFile and DefaultPoliciesFile are the names of the default schema and policy set, as
// embedded here and as shipped in examples/policies.
const (
	SchemaFile          = "fedweave.cedarschema"
	DefaultPoliciesFile = "default.cedar"
)

//go:embed fedweave.cedarschema
var defaultSchemaText []byte

//go:embed default.cedar
var defaultPoliciesText []byte

// A Schema is a parsed cedar schema: the entity types, their attributes and the actions that
// policies, entity data and requests are checked against. It is immutable and safe for
// concurrent use.
type Schema struct {
	name      string
	text      []byte
	resolved  *resolved.Schema
	validator *validate.Validator

	// actions holds the actions a request may name (those with appliesTo), by name.
	actions map[string]*resolved.Action
	// actionEntities are the action entities with their groups as parents, which cedar needs
	// in the entity data to decide "action in Action::"Group"".
	actionEntities map[cedar.EntityUID]cedar.Entity
}

// roleTypes maps a certificate role to the entity type of its principals.
var roleTypes = map[string]cedar.EntityType{
	"client": "Client",
	"admin":  "Admin",
	"reader": "Reader",
	"server": "Server",
}

// DefaultSchema returns the schema embedded in this package (fedweave.cedarschema), which
// examples/policies ships too.
func DefaultSchema() *Schema { return defaultSchema() }

var defaultSchema = sync.OnceValue(func() *Schema {
	s, err := ParseSchema(SchemaFile, defaultSchemaText)
	if err != nil {
		panic("policy: the embedded schema does not parse: " + err.Error())
	}
	return s
})

// ParseSchema parses a schema in cedar's human-readable schema format. name is used in error
// messages. Besides being valid cedar, the schema must declare what fedweave fills in itself:
// the entity types Federation and Org (with an attribute federation of type Federation), and
// the principal types Client, Admin, Reader and Server, children of Org, with the attributes
// org (Org) and name (String). The default schema is the one to extend.
func ParseSchema(name string, text []byte) (*Schema, error) {
	var s schema.Schema
	s.SetFilename(name)
	if err := s.UnmarshalCedar(text); err != nil {
		return nil, fmt.Errorf("policy: schema %s: %w", name, err)
	}
	r, err := s.Resolve()
	if err != nil {
		return nil, fmt.Errorf("policy: schema %s: %w", name, err)
	}
	if err := checkSchema(r); err != nil {
		return nil, fmt.Errorf("policy: schema %s: %w", name, err)
	}
	sc := &Schema{
		name:           name,
		text:           slices.Clone(text),
		resolved:       r,
		validator:      validate.New(r),
		actions:        map[string]*resolved.Action{},
		actionEntities: map[cedar.EntityUID]cedar.Entity{},
	}
	for uid, a := range r.Actions {
		sc.actionEntities[uid] = a.Entity
		if a.AppliesTo != nil {
			sc.actions[string(uid.ID)] = &a
		}
	}
	return sc, nil
}

// checkSchema checks that r declares the entity types and attributes that Decide fills in.
func checkSchema(r *resolved.Schema) error {
	attr := func(et cedar.EntityType, name string, want resolved.IsType) error {
		e, ok := r.Entities[et]
		if !ok {
			return fmt.Errorf("entity type %s is missing: fedweave needs it", et)
		}
		a, ok := e.Shape[cedar.String(name)]
		if !ok || a.Optional || a.Type != want {
			return fmt.Errorf("entity type %s needs the attribute %s: %s", et, name, typeName(want))
		}
		return nil
	}
	if _, ok := r.Entities["Federation"]; !ok {
		return fmt.Errorf("entity type Federation is missing: fedweave needs it")
	}
	if err := attr("Org", "federation", resolved.EntityType("Federation")); err != nil {
		return err
	}
	for _, role := range []string{"client", "admin", "reader", "server"} {
		et := roleTypes[role]
		if err := attr(et, "org", resolved.EntityType("Org")); err != nil {
			return err
		}
		if err := attr(et, "name", resolved.StringType{}); err != nil {
			return err
		}
		if !slices.Contains(r.Entities[et].ParentTypes, "Org") {
			return fmt.Errorf("entity type %s must be declared \"in [Org]\": principals are in their org", et)
		}
	}
	return nil
}

func typeName(t resolved.IsType) string {
	switch t := t.(type) {
	case resolved.EntityType:
		return string(t)
	case resolved.StringType:
		return "String"
	}
	return fmt.Sprint(t)
}

// Name returns the name the schema was parsed with.
func (s *Schema) Name() string { return s.name }

// Text returns the schema's source text. The caller must not modify it.
func (s *Schema) Text() []byte { return s.text }

// Actions returns the actions that a [Request] may name, sorted.
func (s *Schema) Actions() []string {
	names := make([]string, 0, len(s.actions))
	for n := range s.actions {
		names = append(names, n)
	}
	sort.Strings(names)
	return names
}

// appliesTo returns the principal and resource types of an action, for error messages.
func (s *Schema) appliesTo(action string) (principals, resources []string) {
	a := s.actions[action]
	if a == nil {
		return nil, nil
	}
	for _, p := range a.AppliesTo.Principals {
		principals = append(principals, string(p))
	}
	for _, r := range a.AppliesTo.Resources {
		resources = append(resources, string(r))
	}
	return principals, resources
}

func joinOr(items []string) string { return joinWith(items, " or ") }

func joinAnd(items []string) string { return joinWith(items, " and ") }

func joinWith(items []string, last string) string {
	switch len(items) {
	case 0:
		return "nothing"
	case 1:
		return items[0]
	}
	return strings.Join(items[:len(items)-1], ", ") + last + items[len(items)-1]
}
