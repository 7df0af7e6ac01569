package pki

import (
	"strings"
	"testing"
)

func TestParsePrincipal(t *testing.T) {
	good := []struct {
		uri  string
		want Principal
	}{
		{"fedweave://acme/org/hospital-a/client/node1", Principal{"acme", "hospital-a", RoleClient, "node1"}},
		{"fedweave://acme/org/acme/server/agg", Principal{"acme", "acme", RoleServer, "agg"}},
		{"fedweave://acme.health/org/lab_2/admin/alice.b", Principal{"acme.health", "lab_2", RoleAdmin, "alice.b"}},
		{"fedweave://0/org/9/reader/x--", Principal{"0", "9", RoleReader, "x--"}},
		{"fedweave://" + strings.Repeat("f", 64) + "/org/o/client/n", Principal{strings.Repeat("f", 64), "o", RoleClient, "n"}},
	}
	for _, tt := range good {
		t.Run(tt.uri, func(t *testing.T) {
			p, err := ParsePrincipal(tt.uri)
			if err != nil {
				t.Fatalf("ParsePrincipal: %v", err)
			}
			if p != tt.want {
				t.Errorf("ParsePrincipal = %+v, want %+v", p, tt.want)
			}
			if p.URI() != tt.uri || p.String() != tt.uri {
				t.Errorf("URI() = %q, String() = %q, want %q", p.URI(), p.String(), tt.uri)
			}
			if err := p.Validate(); err != nil {
				t.Errorf("Validate: %v", err)
			}
		})
	}

	bad := []struct {
		name, uri, why string
	}{
		{"empty", "", "want fedweave://"},
		{"other scheme", "spiffe://acme/org/o/client/n", "want fedweave://"},
		{"upper-case scheme", "FEDWEAVE://acme/org/o/client/n", "want fedweave://"},
		{"no authority", "fedweave:acme/org/o/client/n", "want fedweave://"},
		{"too few segments", "fedweave://acme/org/o/client", "want fedweave://"},
		{"too many segments", "fedweave://acme/org/o/client/n/x", "want fedweave://"},
		{"trailing slash", "fedweave://acme/org/o/client/n/", "want fedweave://"},
		{"not org", "fedweave://acme/orgs/o/client/n", "want fedweave://"},
		{"CA URI", "fedweave://acme/ca", "want fedweave://"},
		{"unknown role", "fedweave://acme/org/o/root/n", `unknown role "root"`},
		{"upper-case role", "fedweave://acme/org/o/Client/n", "unknown role"},
		{"empty federation", "fedweave:///org/o/client/n", "federation is empty"},
		{"empty org", "fedweave://acme/org//client/n", "org is empty"},
		{"empty name", "fedweave://acme/org/o/client/", "name is empty"},
		{"upper-case org", "fedweave://acme/org/Hospital/client/n", "org"},
		{"port", "fedweave://acme:443/org/o/client/n", "federation"},
		{"user", "fedweave://u@acme/org/o/client/n", "federation"},
		{"query", "fedweave://acme/org/o/client/n?x=1", "name"},
		{"fragment", "fedweave://acme/org/o/client/n#", "name"},
		{"percent escape", "fedweave://acme/org/o%41/client/n", "org"},
		{"leading dot", "fedweave://acme/org/o/client/.n", "must start with"},
		{"dot-dot segment", "fedweave://acme/org/../client/n", "must start with"},
		{"leading dash", "fedweave://-acme/org/o/client/n", "must start with"},
		{"space", "fedweave://acme/org/o/client/n n", "name"},
		{"unicode", "fedweave://acme/org/ö/client/n", "org"},
		{"too long", "fedweave://acme/org/o/client/" + strings.Repeat("n", 65), "longer than 64"},
	}
	for _, tt := range bad {
		t.Run(tt.name, func(t *testing.T) {
			p, err := ParsePrincipal(tt.uri)
			if err == nil {
				t.Fatalf("ParsePrincipal(%q) = %+v, want an error", tt.uri, p)
			}
			if !strings.Contains(err.Error(), tt.why) || !strings.HasPrefix(err.Error(), "pki: invalid principal") {
				t.Errorf("error %q, want it to mention %q", err, tt.why)
			}
		})
	}
}

func TestParseRole(t *testing.T) {
	for _, r := range []Role{RoleServer, RoleClient, RoleAdmin, RoleReader} {
		if got, err := ParseRole(string(r)); err != nil || got != r {
			t.Errorf("ParseRole(%q) = %q, %v", r, got, err)
		}
	}
	for _, s := range []string{"", "Server", "root", "client "} {
		if _, err := ParseRole(s); err == nil {
			t.Errorf("ParseRole(%q) succeeded", s)
		}
	}
}

func TestValidate(t *testing.T) {
	ok := Principal{"acme", "o", RoleClient, "n"}
	tests := []struct {
		name string
		p    Principal
		why  string
	}{
		{"zero", Principal{}, "federation is empty"},
		{"bad role", Principal{"acme", "o", "boss", "n"}, `unknown role "boss"`},
		{"slash in org", Principal{"acme", "a/b", RoleClient, "n"}, "org"},
		{"upper-case federation", Principal{"Acme", "o", RoleClient, "n"}, "federation"},
	}
	if err := ok.Validate(); err != nil {
		t.Errorf("Validate(%v) = %v", ok, err)
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			err := tt.p.Validate()
			if err == nil || !strings.Contains(err.Error(), tt.why) {
				t.Errorf("Validate = %v, want an error mentioning %q", err, tt.why)
			}
		})
	}
}

// FuzzPrincipal checks that a principal survives URI and ParsePrincipal exactly when it is
// valid, and that ParsePrincipal never panics and accepts only canonical text.
func FuzzPrincipal(f *testing.F) {
	f.Add("acme", "hospital-a", "client", "node1")
	f.Add("a.b", "o_1", "server", "x-y")
	f.Add("acme", "o/client", "n", "")
	f.Add("fedweave://acme/org/o/admin/n", "O", "reader", "n#")
	f.Add("", "", "", "")
	f.Fuzz(func(t *testing.T, federation, org, role, name string) {
		p := Principal{Federation: federation, Org: org, Role: Role(role), Name: name}
		q, err := ParsePrincipal(p.URI())
		if valid := p.Validate() == nil; valid != (err == nil) {
			t.Fatalf("Validate ok = %v but ParsePrincipal(%q) error = %v", valid, p.URI(), err)
		}
		if err == nil && q != p {
			t.Fatalf("ParsePrincipal(%q) = %+v, want %+v", p.URI(), q, p)
		}
		// Any string: no panic, and what parses is canonical.
		for _, s := range []string{federation, federation + org} {
			if q, err := ParsePrincipal(s); err == nil && q.URI() != s {
				t.Fatalf("ParsePrincipal(%q) = %+v, whose URI is %q", s, q, q.URI())
			}
		}
	})
}
