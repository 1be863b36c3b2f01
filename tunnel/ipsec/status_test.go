//go:build linux

package ipsec

import (
	"testing"
	"time"
)

// TestChildRetryBackoff: a childless IKE SA of an initiated tunnel is
// retried after 5 s, then after 10, 20, … up to 2 min; a child, a
// responder tunnel or no established IKE SA resets the count.
func TestChildRetryBackoff(t *testing.T) {
	est := &IKEStatus{State: "ESTABLISHED"}
	s := newTState("b")
	s.ike = est
	t0 := time.Unix(1000, 0)
	if s.childRetry(t0, true) {
		t.Fatal("retried at the first sight of a childless IKE SA")
	}
	at := t0
	var waits []time.Duration
	for range 8 {
		next := at
		for !s.childRetry(next, true) {
			next = next.Add(time.Second)
		}
		waits = append(waits, next.Sub(at))
		at = next
	}
	want := []time.Duration{5, 10, 20, 40, 80, 120, 120, 120}
	for i, w := range want {
		if waits[i] != w*time.Second {
			t.Fatalf("waits %v, want %v s", waits, want)
		}
	}
	for name, reset := range map[string]func(){
		"a child":       func() { s.up = true },
		"responder":     func() {},
		"IKE SA not up": func() { s.ike = &IKEStatus{State: "CONNECTING"} },
	} {
		s.up, s.ike = false, est
		reset()
		initiator := name != "responder"
		if s.childRetry(at, initiator) || s.retries != 0 || !s.childless.IsZero() {
			t.Errorf("%s: retries %d, childless %v", name, s.retries, s.childless)
		}
		s.ike = est
		s.up = false
		s.childRetry(at, true)
		s.retries = 3
	}
}
