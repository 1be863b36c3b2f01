package ipsec

import "testing"

func TestClassify(t *testing.T) {
	for msg, want := range map[string]string{
		"tried 1 shared key for 'a' - 'b', but MAC mismatched":    "authentication failed: the pre-shared keys differ",
		"received AUTHENTICATION_FAILED notify error":             "authentication failed: the pre-shared keys differ",
		"received proposals unacceptable":                         "proposal mismatch: the peer and this tunnel share no IKE or ESP proposal",
		"no acceptable proposal found":                            "proposal mismatch: the peer and this tunnel share no IKE or ESP proposal",
		"received NO_PROPOSAL_CHOSEN notify error":                "proposal mismatch: the peer and this tunnel share no IKE or ESP proposal",
		"no matching peer config found":                           "no tunnel matches the peer's identities (local_id/remote_id)",
		"giving up after 3 retransmits":                           "peer not responding",
		"received TS_UNACCEPTABLE notify, no CHILD_SA built":      "traffic selectors refused: the peer does not accept the routed prefixes",
		"IKE_SA branch1[1] established between 1.2.3.4...5.6.7.8": "",
	} {
		if got := classify(msg); got != want {
			t.Errorf("classify(%q) = %q, want %q", msg, got, want)
		}
	}
	r, l, ok := packetAddrs("received packet: from 198.51.100.20[4500] to 203.0.113.10[4500] (313 bytes)")
	if !ok || r != "198.51.100.20" || l != "203.0.113.10" {
		t.Errorf("packetAddrs: %q %q %v", r, l, ok)
	}
	r, l, ok = packetAddrs("sending packet: from 203.0.113.10[500] to 198.51.100.20[500] (36 bytes)")
	if !ok || r != "198.51.100.20" || l != "203.0.113.10" {
		t.Errorf("packetAddrs sending: %q %q %v", r, l, ok)
	}
}

// FuzzLogLine feeds charon log lines, which carry peer-chosen identities
// and addresses, through the classifier and the address parser.
func FuzzLogLine(f *testing.F) {
	f.Add("received packet: from 198.51.100.20[4500] to 203.0.113.10[4500] (313 bytes)")
	f.Add("tried 1 shared key for 'a' - 'b', but MAC mismatched")
	f.Fuzz(func(t *testing.T, msg string) {
		classify(msg)
		if r, l, ok := packetAddrs(msg); ok && (r == "" || l == "") {
			t.Fatalf("empty address from %q", msg)
		}
	})
}
