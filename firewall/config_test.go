package firewall

import (
	"slices"
	"testing"
)

func TestConfigChangedLists(t *testing.T) {
	off := false
	old := &Config{
		Lists: map[string][]string{"a": {"10.0.0.0/8"}, "b": {"192.0.2.1"}},
		Rules: []Rule{{ID: "x", Expression: "ip.src in $a", Action: "block"}},
	}
	same := old.Clone()
	if !same.Equal(old) {
		t.Fatal("clone not equal")
	}
	if names, ok := same.ChangedLists(old); !ok || len(names) != 0 {
		t.Errorf("unchanged: %v %v", names, ok)
	}
	lists := old.Clone()
	lists.Lists["b"] = append(lists.Lists["b"], "192.0.2.2")
	if names, ok := lists.ChangedLists(old); !ok || !slices.Equal(names, []string{"b"}) {
		t.Errorf("list b changed: %v %v", names, ok)
	}
	if old.Lists["b"][0] != "192.0.2.1" || len(old.Lists["b"]) != 1 {
		t.Error("Clone shares list storage")
	}
	renamed := old.Clone()
	renamed.Lists["c"] = nil
	if _, ok := renamed.ChangedLists(old); ok {
		t.Error("a new list needs a full apply")
	}
	disabled := old.Clone()
	disabled.Rules[0].Enabled = &off
	if _, ok := disabled.ChangedLists(old); ok || disabled.Equal(old) {
		t.Error("disabling a rule needs a full apply")
	}
}
