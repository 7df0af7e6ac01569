package policy

import (
	"slices"
	"testing"
	"time"
)

// A checkpoint survives its text form, and no text decodes into one that re-encodes otherwise.
func FuzzCheckpointText(f *testing.F) {
	c := Checkpoint{Size: 7, Root: LeafHash([]byte("x")), Time: time.Unix(0, 1746091800123456789).UTC()}
	c.Signature = testSigner().Sign(c.signed())
	good, _ := c.MarshalText()
	f.Add(good)
	f.Add([]byte("fedweave audit checkpoint v1\n1\n\n0\nsignature \n"))
	f.Fuzz(func(t *testing.T, b []byte) {
		var c Checkpoint
		if err := c.UnmarshalText(b); err != nil {
			return
		}
		again, _ := c.MarshalText()
		var c2 Checkpoint
		if err := c2.UnmarshalText(again); err != nil || c2.Size != c.Size || c2.Root != c.Root || !c2.Time.Equal(c.Time) || string(c2.Signature) != string(c.Signature) {
			t.Fatalf("%q decodes to %+v, which does not survive its text form", b, c)
		}
	})
}

func FuzzParseRef(f *testing.F) {
	for _, s := range []string{`Task::"triage"`, `Task::triage`, `Model::"a\"b"`, `::`, `A::B::"c"`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		r, err := ParseRef(s)
		if err != nil {
			return
		}
		back, err := ParseRef(r.String())
		if err != nil || back != r {
			t.Fatalf("ParseRef(%q) = %v, whose String %q parses to %v, %v", s, r, r.String(), back, err)
		}
	})
}

// Removing a policy leaves the others, in order, with their text.
func FuzzWithout(f *testing.F) {
	f.Add(defaultPoliciesText, uint8(3))
	f.Add([]byte("@id(\"a\") permit (principal, action, resource); @id(\"b\") forbid (principal, action, resource);\n// tail\n"), uint8(0))
	f.Fuzz(func(t *testing.T, text []byte, k uint8) {
		ps, err := ParsePolicies("f.cedar", text)
		if err != nil || ps.Len() == 0 {
			return
		}
		ids := ps.IDs()
		id := ids[int(k)%len(ids)]
		less, err := ps.Without(id)
		if err != nil {
			t.Fatalf("Without(%q): %v\n%s", id, err, text)
		}
		if want := slices.DeleteFunc(slices.Clone(ids), func(s string) bool { return s == id }); !slices.Equal(less.IDs(), want) {
			t.Fatalf("Without(%q) left %v, want %v\n%s", id, less.IDs(), want, text)
		}
		if string(ps.Text()) != string(text) {
			t.Fatalf("Text() is not the source")
		}
	})
}

func FuzzParseEntities(f *testing.F) {
	f.Add([]byte(`[{"uid":{"type":"Org","id":"a"},"attrs":{"region":"eu","federation":{"__entity":{"type":"Federation","id":"f"}}},"parents":[{"type":"Federation","id":"f"}]}]`))
	f.Add([]byte(`[]`))
	f.Fuzz(func(t *testing.T, b []byte) {
		e, err := ParseEntities(b)
		if err != nil {
			return
		}
		_ = DefaultSchema().ValidateEntities(e)
		out, err := e.MarshalJSON()
		if err != nil {
			return // records with reserved keys do not encode
		}
		back, err := ParseEntities(out)
		if err != nil || back.Len() != e.Len() {
			t.Fatalf("%s -> %s does not parse back: %v", b, out, err)
		}
	})
}
