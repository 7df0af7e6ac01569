package policy

import "testing"

func TestBoolAttr(t *testing.T) {
	f := Federation{Name: "acme", Tasks: []Task{{Name: "t"}}, Models: []Model{
		{Name: "t/1", Task: "t", Round: 1, Released: true},
		{Name: "t/2", Task: "t", Round: 2, Released: true, Tainted: true},
	}}
	e, err := f.Entities()
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		ref        Ref
		attr       string
		value, has bool
	}{
		{Ref{"Model", "t/1"}, "tainted", false, true},
		{Ref{"Model", "t/2"}, "tainted", true, true},
		{Ref{"Model", "t/2"}, "released", true, true},
		{Ref{"Model", "t/3"}, "tainted", false, false},
		{Ref{"Model", "t/1"}, "round", false, false},
		{Ref{"Task", "t"}, "tainted", false, false},
	} {
		if v, ok := e.BoolAttr(tc.ref, tc.attr); v != tc.value || ok != tc.has {
			t.Errorf("%s %s = %v, %v; want %v, %v", tc.ref, tc.attr, v, ok, tc.value, tc.has)
		}
	}
	var none *Entities
	if _, ok := none.BoolAttr(Ref{"Model", "t/1"}, "tainted"); ok {
		t.Error("nil entities have an attribute")
	}
}
