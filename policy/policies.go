package policy

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"sort"
	"strconv"
	"strings"
	"sync"

	cedar "github.com/cedar-policy/cedar-go"
	xast "github.com/cedar-policy/cedar-go/x/exp/ast"
)

// A PolicySet is a parsed set of cedar policies, each named by its @id annotation. It keeps
// its source text, comments included, so that a set can be stored, shown and edited as
// written. It is immutable and safe for concurrent use.
//
// A PolicySet has only been parsed: [Schema.Validate] checks it against a schema, and
// [New] and [Authorizer.SetPolicies] do so before they use it.
type PolicySet struct {
	name     string
	set      *cedar.PolicySet
	ids      []string // in source order
	policies map[string]*cedar.Policy
	pos      map[string]cedar.Position
	// src holds each policy's text from its start to the next policy's.
	src map[string][]byte
	// segments partition the source text; owner[i] is the policy whose text (with the comment
	// lines right above it) segments[i] is, or "" for text before the first policy.
	segments [][]byte
	owner    []string
}

// A Problem is one reason why a policy set or a schema was not accepted.
type Problem struct {
	// Position is where the problem is, as FILE:LINE:COLUMN (LINE:COLUMN for text without a
	// file name).
	Position string
	// PolicyID is the @id of the policy at fault, or "" for a syntax error.
	PolicyID string
	// Message says what is wrong, naming the attribute, entity type or action at fault.
	Message string
}

func (p Problem) String() string {
	var b strings.Builder
	if p.Position != "" {
		b.WriteString(p.Position + ": ")
	}
	if p.PolicyID != "" {
		fmt.Fprintf(&b, "policy %q: ", p.PolicyID)
	}
	b.WriteString(p.Message)
	return b.String()
}

// ValidationError is the error of [ParsePolicies], [Schema.Validate] and [LoadDir] for a
// policy set that does not parse or does not type-check against the schema. It lists every
// problem found, in source order; nothing of the set was accepted.
type ValidationError struct {
	Problems []Problem
}

func (e *ValidationError) Error() string {
	lines := make([]string, len(e.Problems))
	for i, p := range e.Problems {
		lines[i] = p.String()
	}
	return "policy: " + strings.Join(lines, "\n")
}

// maxIDLen is the longest policy id.
const maxIDLen = 128

var validID = regexp.MustCompile(`^[A-Za-z0-9][A-Za-z0-9._:-]*$`)

// DefaultPolicies returns the default policy set embedded in this package (default.cedar),
// which examples/policies ships too. See the package doc for what it allows.
func DefaultPolicies() *PolicySet { return defaultPolicies() }

var defaultPolicies = sync.OnceValue(func() *PolicySet {
	ps, err := ParsePolicies(DefaultPoliciesFile, defaultPoliciesText)
	if err != nil {
		panic("policy: the embedded default policies do not parse: " + err.Error())
	}
	if err := DefaultSchema().Validate(ps); err != nil {
		panic("policy: the embedded default policies do not validate: " + err.Error())
	}
	return ps
})

// ParsePolicies parses cedar policies in the human-readable format. name (a file name, or "")
// is used in positions. Every policy must carry a unique @id("...") annotation of letters,
// digits, '.', '_', ':' and '-': the id names the policy in decisions, in the audit log and
// to "fedweave policy rm". The error is a *[ValidationError].
func ParsePolicies(name string, text []byte) (*PolicySet, error) {
	list, err := cedar.NewPolicyListFromBytes(name, text)
	if err != nil {
		return nil, &ValidationError{Problems: []Problem{syntaxProblem(name, err)}}
	}
	ps := &PolicySet{
		name:     name,
		set:      cedar.NewPolicySet(),
		policies: map[string]*cedar.Policy{},
		pos:      map[string]cedar.Position{},
		src:      map[string][]byte{},
	}
	var problems []Problem
	for i, p := range list {
		pos := p.Position()
		id, ok := p.Annotations()["id"]
		switch {
		case !ok:
			problems = append(problems, Problem{Position: formatPos(name, pos),
				Message: `the policy has no @id annotation: start it with @id("a-stable-name")`})
			continue
		case len(id) == 0 || len(id) > maxIDLen || !validID.MatchString(string(id)):
			problems = append(problems, Problem{Position: formatPos(name, pos),
				Message: fmt.Sprintf("@id %q: an id is 1 to %d letters, digits, '.', '_', ':' and '-', starting with a letter or digit", id, maxIDLen)})
			continue
		}
		sid := string(id)
		if prev, dup := ps.pos[sid]; dup {
			problems = append(problems, Problem{Position: formatPos(name, pos), PolicyID: sid,
				Message: fmt.Sprintf("the id is already used by the policy at %s", formatPos(name, prev))})
			continue
		}
		ps.ids = append(ps.ids, sid)
		ps.policies[sid] = p
		ps.pos[sid] = pos
		end := len(text)
		if i+1 < len(list) {
			end = list[i+1].Position().Offset
		}
		ps.src[sid] = text[pos.Offset:end:end]
		ps.set.Add(cedar.PolicyID(sid), p)
	}
	if problems != nil {
		return nil, &ValidationError{Problems: problems}
	}
	ps.segments, ps.owner = segment(text, list, ps.ids)
	return ps, nil
}

// inputPos matches the position cedar-go gives syntax errors, which names no file.
var inputPos = regexp.MustCompile(`(?:parser error: )?parse error at <input>:(\d+):(\d+)\s*`)

func syntaxProblem(name string, err error) Problem {
	msg := err.Error()
	if m := inputPos.FindStringSubmatchIndex(msg); m != nil {
		line, _ := strconv.Atoi(msg[m[2]:m[3]])
		col, _ := strconv.Atoi(msg[m[4]:m[5]])
		rest := strings.TrimSpace(msg[:m[0]] + msg[m[1]:])
		return Problem{Position: formatPos(name, cedar.Position{Line: line, Column: col}), Message: "syntax error: " + rest}
	}
	return Problem{Position: name, Message: "syntax error: " + strings.TrimPrefix(msg, "parser error: ")}
}

func formatPos(name string, pos cedar.Position) string {
	if name == "" {
		return fmt.Sprintf("%d:%d", pos.Line, pos.Column)
	}
	return fmt.Sprintf("%s:%d:%d", name, pos.Line, pos.Column)
}

// segment cuts text into the text before the first policy and one piece per policy, where a
// policy's piece starts with the comment lines right above it.
func segment(text []byte, list cedar.PolicyList, ids []string) ([][]byte, []string) {
	starts := make([]int, len(list))
	prevOff := -1
	for i, p := range list {
		off := p.Position().Offset
		start := off
		ls := bytes.LastIndexByte(text[:off], '\n') + 1
		if len(bytes.TrimSpace(text[ls:off])) == 0 && ls > prevOff {
			start = ls
			for start > 0 {
				pls := bytes.LastIndexByte(text[:start-1], '\n') + 1
				if pls <= prevOff || !bytes.HasPrefix(bytes.TrimSpace(text[pls:start]), []byte("//")) {
					break
				}
				start = pls
			}
		}
		starts[i] = start
		prevOff = off
	}
	var segs [][]byte
	var owner []string
	if len(starts) == 0 || starts[0] > 0 {
		end := len(text)
		if len(starts) > 0 {
			end = starts[0]
		}
		segs = append(segs, text[:end:end])
		owner = append(owner, "")
	}
	for i, s := range starts {
		end := len(text)
		if i+1 < len(starts) {
			end = starts[i+1]
		}
		segs = append(segs, text[s:end:end])
		owner = append(owner, ids[i])
	}
	return segs, owner
}

// IDs returns the ids of the policies, in source order.
func (ps *PolicySet) IDs() []string { return slices.Clone(ps.ids) }

// Len returns the number of policies.
func (ps *PolicySet) Len() int { return len(ps.ids) }

// Name returns the name the set was parsed with.
func (ps *PolicySet) Name() string { return ps.name }

// Text returns the source of the set, comments included: what was parsed, or the files of
// [LoadDir] one after the other.
func (ps *PolicySet) Text() []byte { return bytes.Join(ps.segments, nil) }

// Policy returns the source of the policy with the given id, with the comment lines right
// above it, and whether there is one.
func (ps *PolicySet) Policy(id string) ([]byte, bool) {
	var out []byte
	for i, o := range ps.owner {
		if o == id {
			out = append(out, ps.segments[i]...)
		}
	}
	return out, out != nil
}

// Position returns where the policy with the given id starts, as FILE:LINE:COLUMN.
func (ps *PolicySet) Position(id string) string {
	pos, ok := ps.pos[id]
	if !ok {
		return ""
	}
	return formatPos(pos.Filename, pos)
}

// Without returns the set less the policy with the given id (and the comment lines right
// above it), or an error if there is no such policy.
func (ps *PolicySet) Without(id string) (*PolicySet, error) {
	if _, ok := ps.policies[id]; !ok {
		return nil, fmt.Errorf("policy: no policy with id %q", id)
	}
	var text []byte
	for i, o := range ps.owner {
		if o != id {
			text = append(text, ps.segments[i]...)
		}
	}
	return ParsePolicies(ps.name, text)
}

// join returns the policies of several files as one set; the ids must be unique across them.
func join(name string, sets []*PolicySet) (*PolicySet, error) {
	out := &PolicySet{
		name:     name,
		set:      cedar.NewPolicySet(),
		policies: map[string]*cedar.Policy{},
		pos:      map[string]cedar.Position{},
		src:      map[string][]byte{},
	}
	var problems []Problem
	for _, s := range sets {
		for _, id := range s.ids {
			if prev, dup := out.pos[id]; dup {
				problems = append(problems, Problem{Position: s.Position(id), PolicyID: id,
					Message: fmt.Sprintf("the id is already used by the policy at %s", formatPos(prev.Filename, prev))})
				continue
			}
			out.ids = append(out.ids, id)
			out.policies[id] = s.policies[id]
			out.pos[id] = s.pos[id]
			out.src[id] = s.src[id]
			out.set.Add(cedar.PolicyID(id), s.policies[id])
		}
		out.segments = append(out.segments, s.segments...)
		out.owner = append(out.owner, s.owner...)
		if n := len(out.segments); n > 0 && !bytes.HasSuffix(out.segments[n-1], []byte("\n")) {
			out.segments = append(out.segments, []byte("\n"))
			out.owner = append(out.owner, "")
		}
	}
	if problems != nil {
		return nil, &ValidationError{Problems: problems}
	}
	return out, nil
}

// Validate type-checks every policy of ps against the schema with cedar's validator (strict
// mode): entity types, actions and the attributes of principal, resource and context must
// exist with the types the policy uses them at, and each policy must be able to apply to some
// request. A typo such as resource.taintd is a [Problem] that names the attribute, the
// policy's id and its position. The error is a *[ValidationError], or nil.
func (s *Schema) Validate(ps *PolicySet) error {
	var problems []Problem
	for _, id := range ps.ids {
		p := ps.policies[id]
		err := s.validator.Policy(id, (*xast.Policy)(p.AST()))
		if err == nil {
			continue
		}
		msgs := map[string]bool{}
		for _, e := range flatten(err) {
			for _, line := range strings.Split(e.Error(), "\n") {
				line = strings.TrimPrefix(line, "for policy `"+id+"`, ")
				if line = strings.TrimSpace(line); line != "" {
					msgs[line] = true
				}
			}
		}
		for _, m := range s.explain(msgs) {
			problems = append(problems, Problem{Position: ps.attrPosition(id, m), PolicyID: id, Message: m})
		}
	}
	if problems != nil {
		return &ValidationError{Problems: problems}
	}
	return nil
}

var (
	entityAttrMessage  = regexp.MustCompile("^attribute `([^`]+)` on entity type `([^`]+)` not found$")
	contextAttrMessage = regexp.MustCompile("^attribute `([^`]+)` in context for Action::\"([^\"]+)\" not found$")
)

// explain turns the validator's messages about one policy into sorted lines: the messages
// about one missing attribute on several entity types (or in the contexts of several actions)
// become one, with the declared attribute it is closest to, if any is close.
func (s *Schema) explain(msgs map[string]bool) []string {
	type missing struct {
		where []string // entity types or actions
		known []string // their attributes
	}
	onEntities := map[string]*missing{}
	inContext := map[string]*missing{}
	var lines []string
	for m := range msgs {
		if g := entityAttrMessage.FindStringSubmatch(m); g != nil {
			if onEntities[g[1]] == nil {
				onEntities[g[1]] = &missing{}
			}
			e := onEntities[g[1]]
			e.where = append(e.where, "`"+g[2]+"`")
			for a := range s.resolved.Entities[cedar.EntityType(g[2])].Shape {
				e.known = append(e.known, string(a))
			}
			continue
		}
		if g := contextAttrMessage.FindStringSubmatch(m); g != nil {
			if inContext[g[1]] == nil {
				inContext[g[1]] = &missing{}
			}
			e := inContext[g[1]]
			e.where = append(e.where, g[2])
			if a := s.actions[g[2]]; a != nil {
				for k := range a.AppliesTo.Context {
					e.known = append(e.known, string(k))
				}
			}
			continue
		}
		lines = append(lines, m)
	}
	for attr, e := range onEntities {
		sort.Strings(e.where)
		noun := "entity type"
		if len(e.where) > 1 {
			noun = "entity types"
		}
		lines = append(lines, fmt.Sprintf("attribute `%s` not found on %s %s%s", attr, noun, joinAnd(e.where), suggest(attr, e.known)))
	}
	for attr, e := range inContext {
		sort.Strings(e.where)
		lines = append(lines, fmt.Sprintf("attribute `%s` not found in the context of %s%s", attr, joinAnd(e.where), suggest(attr, e.known)))
	}
	sort.Strings(lines)
	return lines
}

// suggest returns "; did you mean `x`?" for the name of known closest to name, if it is at
// most two edits away, or "".
func suggest(name string, known []string) string {
	best, bestD := "", 3
	sort.Strings(known)
	for _, k := range known {
		if d := editDistance(name, k); d < bestD && k != name {
			best, bestD = k, d
		}
	}
	if best == "" {
		return ""
	}
	return "; did you mean `" + best + "`?"
}

// editDistance is the Levenshtein distance between a and b.
func editDistance(a, b string) int {
	prev := make([]int, len(b)+1)
	cur := make([]int, len(b)+1)
	for j := range prev {
		prev[j] = j
	}
	for i := 1; i <= len(a); i++ {
		cur[0] = i
		for j := 1; j <= len(b); j++ {
			cost := 1
			if a[i-1] == b[j-1] {
				cost = 0
			}
			cur[j] = min(prev[j]+1, cur[j-1]+1, prev[j-1]+cost)
		}
		prev, cur = cur, prev
	}
	return prev[len(b)]
}

// attrMessage matches the validator's messages about an attribute.
var attrMessage = regexp.MustCompile("attribute `([^`]+)`")

// attrPosition returns the position of the first access to the attribute that msg is about in
// policy id, or the policy's position.
func (ps *PolicySet) attrPosition(id, msg string) string {
	pos := ps.pos[id]
	m := attrMessage.FindStringSubmatch(msg)
	if m == nil {
		return ps.Position(id)
	}
	src := ps.src[id]
	for k := 0; ; {
		j := bytes.Index(src[k:], []byte("."+m[1]))
		if j < 0 {
			return ps.Position(id)
		}
		k += j + 1
		if end := k + len(m[1]); end < len(src) && isIdentByte(src[end]) {
			continue
		}
		line, col := pos.Line, pos.Column+k
		if nl := bytes.LastIndexByte(src[:k], '\n'); nl >= 0 {
			line += bytes.Count(src[:k], []byte("\n"))
			col = k - nl
		}
		return formatPos(pos.Filename, cedar.Position{Line: line, Column: col})
	}
}

func isIdentByte(c byte) bool {
	return c == '_' || 'a' <= c && c <= 'z' || 'A' <= c && c <= 'Z' || '0' <= c && c <= '9'
}

func flatten(err error) []error {
	if u, ok := err.(interface{ Unwrap() []error }); ok {
		var out []error
		for _, e := range u.Unwrap() {
			out = append(out, flatten(e)...)
		}
		return out
	}
	return []error{err}
}

// LoadDir loads a policy directory: every *.cedar file in dir (in name order) as one policy
// set, and the schema from the one *.cedarschema file of dir, or the default schema if dir has
// none. The policies are validated against the schema. examples/policies is such a directory.
func LoadDir(dir string) (*Schema, *PolicySet, error) {
	schemas, err := filepath.Glob(filepath.Join(dir, "*.cedarschema"))
	if err != nil {
		return nil, nil, fmt.Errorf("policy: %w", err)
	}
	schema := DefaultSchema()
	switch len(schemas) {
	case 0:
	case 1:
		text, err := os.ReadFile(schemas[0])
		if err != nil {
			return nil, nil, fmt.Errorf("policy: %w", err)
		}
		if schema, err = ParseSchema(schemas[0], text); err != nil {
			return nil, nil, err
		}
	default:
		return nil, nil, fmt.Errorf("policy: %s holds %d schema files (*.cedarschema); keep one", dir, len(schemas))
	}
	files, err := filepath.Glob(filepath.Join(dir, "*.cedar"))
	if err != nil {
		return nil, nil, fmt.Errorf("policy: %w", err)
	}
	if len(files) == 0 {
		if _, err := os.Stat(dir); err != nil {
			return nil, nil, fmt.Errorf("policy: %w", err)
		}
		return nil, nil, fmt.Errorf("policy: no policy files (*.cedar) in %s", dir)
	}
	sort.Strings(files)
	var sets []*PolicySet
	var problems []Problem
	for _, f := range files {
		text, err := os.ReadFile(f)
		if err != nil {
			return nil, nil, fmt.Errorf("policy: %w", err)
		}
		ps, err := ParsePolicies(f, text)
		var verr *ValidationError
		if errors.As(err, &verr) {
			problems = append(problems, verr.Problems...)
			continue
		}
		if err != nil {
			return nil, nil, err
		}
		sets = append(sets, ps)
	}
	if problems != nil {
		return nil, nil, &ValidationError{Problems: problems}
	}
	ps, err := join(dir, sets)
	if err != nil {
		return nil, nil, err
	}
	if err := schema.Validate(ps); err != nil {
		return nil, nil, err
	}
	return schema, ps, nil
}
