package admin

import (
	"fmt"
	"testing"
)

// TestAuditRing: the recent audit trail keeps the last auditKeep events
// and lists them newest first, while filling and after wrapping.
func TestAuditRing(t *testing.T) {
	var a auditRing
	if got := a.recent(10); len(got) != 0 {
		t.Fatalf("empty ring: %v", got)
	}
	for i := range 3 {
		a.add(Event{ID: fmt.Sprint(i)})
	}
	if got := a.recent(10); len(got) != 3 || got[0].ID != "2" || got[2].ID != "0" {
		t.Fatalf("while filling: %+v", got)
	}
	for i := 3; i < auditKeep+5; i++ {
		a.add(Event{ID: fmt.Sprint(i)})
	}
	got := a.recent(auditKeep + 100)
	if len(got) != auditKeep || got[0].ID != fmt.Sprint(auditKeep+4) || got[auditKeep-1].ID != "5" {
		t.Fatalf("after wrapping: %d entries, newest %s, oldest %s", len(got), got[0].ID, got[len(got)-1].ID)
	}
	for i := 1; i < len(got); i++ {
		if got[i-1].ID != fmt.Sprint(auditKeep+4-i+1) {
			t.Fatalf("entry %d is %s: not newest first", i-1, got[i-1].ID)
		}
	}
}
