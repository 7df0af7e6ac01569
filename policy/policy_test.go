package policy

import (
	"bytes"
	"errors"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"github.com/fedweave/fedweave/crypto/pki"
)

// exampleFederation is the federation of examples/policies/entities.json.
var exampleFederation = Federation{
	Name: "acme",
	Orgs: []Org{
		{Name: "hospital-a", Region: "eu", Member: true, Consent: []string{"diagnosis", "research"}},
		{Name: "hospital-b", Region: "us", Member: true},
		{Name: "clinic-c", Region: "eu"},
	},
	Tasks: []Task{{Name: "triage", Purpose: "diagnosis", Modalities: []string{"text", "image", "tabular"}}},
	Models: []Model{
		{Name: "triage-v3", Task: "triage", Round: 12, Released: true},
		{Name: "triage-v4", Task: "triage", Round: 15},
	},
	Checkpoints: []ModelCheckpoint{
		{Name: "triage-v3-r7", Model: "triage-v3", Task: "triage", Round: 7, Released: true, Tainted: true},
	},
}

func mustEntities(t testing.TB, f Federation) *Entities {
	t.Helper()
	e, err := f.Entities()
	if err != nil {
		t.Fatal(err)
	}
	return e
}

func mustPrincipal(t testing.TB, uri string) pki.Principal {
	t.Helper()
	p, err := pki.ParsePrincipal(uri)
	if err != nil {
		t.Fatal(err)
	}
	return p
}

func TestDefaultsParseAndValidate(t *testing.T) {
	ps := DefaultPolicies()
	want := []string{
		"member-clients-train", "member-readers-use-released-models", "member-admins-administer",
		"member-admins-erase-orgs", "forbid-tainted-models", "forbid-training-without-consent",
		"forbid-modalities-outside-task",
	}
	if got := ps.IDs(); strings.Join(got, ",") != strings.Join(want, ",") {
		t.Errorf("default policy ids = %v, want %v", got, want)
	}
	if !bytes.Equal(ps.Text(), defaultPoliciesText) {
		t.Error("Text() of the default set is not its source")
	}
	wantActions := "ChangePolicy DownloadModel Explain Infer Join ManageRetention ReadAudit ReadPolicy ReportEval RequestErasure SubmitUpdate"
	if got := strings.Join(DefaultSchema().Actions(), " "); got != wantActions {
		t.Errorf("actions = %s, want %s", got, wantActions)
	}
}

// The files in examples/policies are the embedded ones, and entities.json is the example
// federation.
func TestExamplesDirectory(t *testing.T) {
	dir := filepath.Join("..", "examples", "policies")
	for _, f := range []struct {
		name string
		want []byte
	}{{SchemaFile, defaultSchemaText}, {DefaultPoliciesFile, defaultPoliciesText}} {
		got, err := os.ReadFile(filepath.Join(dir, f.name))
		if err != nil {
			t.Fatal(err)
		}
		if !bytes.Equal(got, f.want) {
			t.Errorf("examples/policies/%s differs from policy/%s: copy it over", f.name, f.name)
		}
	}
	schema, ps, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if ps.Len() != DefaultPolicies().Len() || len(schema.Actions()) != len(DefaultSchema().Actions()) {
		t.Errorf("LoadDir(%s) = %d policies, %d actions", dir, ps.Len(), len(schema.Actions()))
	}
	data, err := os.ReadFile(filepath.Join(dir, "entities.json"))
	if err != nil {
		t.Fatal(err)
	}
	got, err := ParseEntities(data)
	if err != nil {
		t.Fatal(err)
	}
	if err := schema.ValidateEntities(got); err != nil {
		t.Fatal(err)
	}
	want := mustEntities(t, exampleFederation)
	if got.Len() != want.Len() {
		t.Fatalf("entities.json has %d entities, the example federation %d", got.Len(), want.Len())
	}
	for uid, e := range want.m {
		if g, ok := got.m[uid]; !ok || !g.Equal(e) {
			t.Errorf("entities.json: %s = %+v, want %+v", uid, g, e)
		}
	}
}

func TestValidateNamesTheTypo(t *testing.T) {
	tests := []struct {
		name   string
		policy string
		want   []string // each must appear in the error
	}{
		{
			name:   "resource attribute",
			policy: "@id(\"no-tainted\")\nforbid (principal, action in Action::\"UseModel\", resource)\nwhen { resource.taintd };\n",
			want:   []string{"typo.cedar:3:17: policy \"no-tainted\": attribute `taintd` not found on entity types `Checkpoint` and `Model`; did you mean `tainted`?"},
		},
		{
			name:   "principal attribute",
			policy: "@id(\"eu-only\")\npermit (principal is Client, action == Action::\"Join\", resource)\nwhen { principal.regoin == \"eu\" };\n",
			want:   []string{"typo.cedar:3:18", `policy "eu-only"`, "attribute `regoin` not found on entity type `Client`"},
		},
		{
			name:   "context attribute",
			policy: "@id(\"p\")\npermit (principal is Reader, action == Action::\"Infer\", resource)\nwhen { context.purpse == \"care\" };\n",
			want:   []string{`policy "p"`, "attribute `purpse` not found in the context of Infer; did you mean `purpose`?"},
		},
		{
			name:   "attribute of another type",
			policy: "@id(\"q\")\npermit (principal, action == Action::\"Join\", resource)\nwhen { resource.released };\n",
			want:   []string{`policy "q"`, "attribute `released`", "Task"},
		},
		{
			name:   "unknown action",
			policy: "@id(\"r\")\npermit (principal, action == Action::\"Joinn\", resource);\n",
			want:   []string{`policy "r"`, "Joinn"},
		},
		{
			name:   "unknown entity type",
			policy: "@id(\"s\")\npermit (principal is Clinet, action, resource);\n",
			want:   []string{`policy "s"`, "Clinet"},
		},
		{
			name:   "action that cannot apply",
			policy: "@id(\"t\")\npermit (principal is Reader, action == Action::\"Join\", resource);\n",
			want:   []string{`policy "t"`, "applicable action"},
		},
		{
			name:   "syntax error",
			policy: "@id(\"u\")\npermit (principal, action, resource) when { resource. };\n",
			want:   []string{"typo.cedar:2:", "syntax error"},
		},
		{
			name:   "no id",
			policy: "\npermit (principal, action, resource);\n",
			want:   []string{"typo.cedar:2:1", "no @id annotation"},
		},
		{
			name:   "duplicate id",
			policy: "@id(\"v\")\npermit (principal, action, resource);\n@id(\"v\")\nforbid (principal, action, resource);\n",
			want:   []string{"typo.cedar:3:1", `policy "v"`, "already used by the policy at typo.cedar:1:1"},
		},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			ps, err := ParsePolicies("typo.cedar", []byte(tt.policy))
			if err == nil {
				err = DefaultSchema().Validate(ps)
			}
			var verr *ValidationError
			if !errors.As(err, &verr) || len(verr.Problems) == 0 {
				t.Fatalf("got %v, want a ValidationError", err)
			}
			for _, w := range tt.want {
				if !strings.Contains(err.Error(), w) {
					t.Errorf("error lacks %q:\n%v", w, err)
				}
			}
		})
	}
}

func TestAuthorizerRefusesInvalidSets(t *testing.T) {
	ps, err := ParsePolicies("x.cedar", []byte("@id(\"x\")\nforbid (principal, action, resource) when { resource.taintd };\n"))
	if err != nil {
		t.Fatal(err)
	}
	if _, err := New(nil, ps, nil); err == nil {
		t.Error("New accepted a policy with a typo")
	}
	a, err := New(nil, nil, mustEntities(t, exampleFederation))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetPolicies(ps); err == nil {
		t.Error("SetPolicies accepted a policy with a typo")
	}
	if a.Policies() != DefaultPolicies() {
		t.Error("a refused SetPolicies changed the policies")
	}
	bad, err := ParseEntities([]byte(`[{"uid":{"type":"Task","id":"t"},"attrs":{"purpose":"x"},"parents":[]}]`))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetEntities(bad); err == nil || !strings.Contains(err.Error(), `Task::"t"`) {
		t.Errorf("SetEntities of a task without its attributes: %v", err)
	}
	client, err := ParseEntities([]byte(`[{"uid":{"type":"Client","id":"a/b"},"attrs":{},"parents":[]}]`))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetEntities(client); err == nil || !strings.Contains(err.Error(), "certificates") {
		t.Errorf("SetEntities with a principal: %v", err)
	}
	inconsistent, err := ParseEntities([]byte(`[{"uid":{"type":"Org","id":"o"},"attrs":{"region":"eu","federation":{"__entity":{"type":"Federation","id":"x"}}},"parents":[{"type":"Federation","id":"y"}]}]`))
	if err != nil {
		t.Fatal(err)
	}
	if err := a.SetEntities(inconsistent); err == nil || !strings.Contains(err.Error(), "member of") {
		t.Errorf("SetEntities with an org in two federations: %v", err)
	}
}

func TestWithoutKeepsComments(t *testing.T) {
	ps := DefaultPolicies()
	less, err := ps.Without("forbid-tainted-models")
	if err != nil {
		t.Fatal(err)
	}
	text := string(less.Text())
	if strings.Contains(text, "forbid-tainted-models") || strings.Contains(text, "Nobody uses a model") {
		t.Errorf("the removed policy or its comment is still there:\n%s", text)
	}
	if !strings.HasPrefix(text, "// The default policies of a fedweave federation.") ||
		!strings.Contains(text, "// No org trains for a purpose") {
		t.Errorf("other comments were lost:\n%s", text)
	}
	if less.Len() != ps.Len()-1 {
		t.Errorf("%d policies left, want %d", less.Len(), ps.Len()-1)
	}
	src, ok := ps.Policy("forbid-tainted-models")
	if !ok || !strings.HasPrefix(string(src), "// Nobody uses a model") {
		t.Errorf("Policy(forbid-tainted-models) = %q", src)
	}
	if _, err := ps.Without("nosuch"); err == nil {
		t.Error("Without(nosuch) succeeded")
	}
}

func TestParseRef(t *testing.T) {
	tests := []struct {
		in   string
		want Ref
		ok   bool
	}{
		{`Task::"triage"`, Ref{"Task", "triage"}, true},
		{`Task::triage`, Ref{"Task", "triage"}, true},
		{`Org::"a b"`, Ref{"Org", "a b"}, true},
		{`Model::"say \"hi\""`, Ref{"Model", `say "hi"`}, true},
		{`triage`, Ref{}, false},
		{`::"x"`, Ref{}, false},
		{`Task::`, Ref{}, false},
		{`Task::"unterminated`, Ref{}, false},
	}
	for _, tt := range tests {
		got, err := ParseRef(tt.in)
		if (err == nil) != tt.ok || got != tt.want {
			t.Errorf("ParseRef(%q) = %v, %v; want %v, ok %v", tt.in, got, err, tt.want, tt.ok)
		}
		if tt.ok {
			if back, err := ParseRef(got.String()); err != nil || back != got {
				t.Errorf("ParseRef(%q.String()) = %v, %v", got, back, err)
			}
		}
	}
}

func TestLoadDirErrors(t *testing.T) {
	dir := t.TempDir()
	if _, _, err := LoadDir(dir); err == nil || !strings.Contains(err.Error(), "no policy files") {
		t.Errorf("empty dir: %v", err)
	}
	write := func(name, text string) {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(text), 0o644); err != nil {
			t.Fatal(err)
		}
	}
	write("a.cedar", "@id(\"x\")\npermit (principal is Reader, action == Action::\"Infer\", resource);\n")
	write("b.cedar", "@id(\"x\")\nforbid (principal, action, resource);\n")
	_, _, err := LoadDir(dir)
	if err == nil || !strings.Contains(err.Error(), "b.cedar:1:1") || !strings.Contains(err.Error(), "a.cedar:1:1") {
		t.Errorf("duplicate id across files: %v", err)
	}
	write("b.cedar", "@id(\"y\")\nforbid (principal, action, resource) when { resource.x };\n")
	if _, _, err = LoadDir(dir); err == nil || !strings.Contains(err.Error(), "attribute `x`") {
		t.Errorf("typo in a second file: %v", err)
	}
	write("b.cedar", "@id(\"y\")\nforbid (principal, action, resource) when { resource has tainted && resource.tainted };\n")
	_, ps, err := LoadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	if got := strings.Join(ps.IDs(), ","); got != "x,y" {
		t.Errorf("ids = %s", got)
	}
	write("bad.cedarschema", "entity Federation;\n")
	if _, _, err = LoadDir(dir); err == nil || !strings.Contains(err.Error(), "entity type Org is missing") {
		t.Errorf("a schema without what fedweave needs: %v", err)
	}
}

func TestEntitiesJSONAndMerge(t *testing.T) {
	e := mustEntities(t, exampleFederation)
	out, err := e.MarshalJSON()
	if err != nil {
		t.Fatal(err)
	}
	back, err := ParseEntities(out)
	if err != nil {
		t.Fatal(err)
	}
	for uid, ent := range e.m {
		if !back.m[uid].Equal(ent) {
			t.Errorf("%s does not survive MarshalJSON: %+v", uid, back.m[uid])
		}
	}
	more := mustEntities(t, Federation{Name: "other", Orgs: []Org{{Name: "lab", Member: true}}})
	both, err := e.Merge(more)
	if err != nil || both.Len() != e.Len()+more.Len() {
		t.Fatalf("Merge = %d entities, %v", both.Len(), err)
	}
	if _, err := e.Merge(e); err == nil {
		t.Error("merging entities with themselves succeeded")
	}
	// With keeps the receiver's entity where both have one.
	derived := mustEntities(t, Federation{Name: exampleFederation.Name, Tasks: []Task{
		{Name: "triage", Purpose: "other", Modalities: []string{"text"}},
		{Name: "extra", Purpose: "research", Modalities: []string{"text"}},
	}})
	with := e.With(derived)
	_, extra := with.m[Ref{"Task", "extra"}.uid()]
	if with.Len() != e.Len()+1 || !extra || !with.m[Ref{"Task", "triage"}.uid()].Equal(e.m[Ref{"Task", "triage"}.uid()]) {
		t.Errorf("With: %d entities, the file's triage kept: %v", with.Len(), with.m[Ref{"Task", "triage"}.uid()])
	}
	if (*Entities)(nil).With(derived).Len() != derived.Len() {
		t.Error("nil.With(derived) lost entities")
	}
	if _, err := ParseEntities([]byte(`[{"uid":{"type":"Task","id":"t"},"attrs":{},"parents":[]},{"uid":{"type":"Task","id":"t"},"attrs":{},"parents":[]}]`)); err == nil {
		t.Error("an entity listed twice was accepted")
	}
	bad := exampleFederation
	bad.Models = []Model{{Name: "m", Task: "nosuch"}}
	if _, err := bad.Entities(); err == nil || !strings.Contains(err.Error(), `no task "nosuch"`) {
		t.Errorf("a model of a missing task: %v", err)
	}
}
