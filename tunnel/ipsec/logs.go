package ipsec

import (
	"log/slog"
	"regexp"
	"strings"
)

// failure is a charon log line that explains why a tunnel failed, in
// words an operator can act on.
type failure struct {
	match  *regexp.Regexp
	reason string
}

// Charon 5.9's messages for the failures an operator meets when bringing
// up a branch. The first match wins.
var failures = []failure{
	{regexp.MustCompile(`MAC mismatched|AUTHENTICATION_FAILED|verification of AUTH payload .* failed|authentication of .* failed`),
		"authentication failed: the pre-shared keys differ"},
	{regexp.MustCompile(`no shared key found`), "no pre-shared key for this pair of identities"},
	{regexp.MustCompile(`NO_PROPOSAL_CHOSEN|no acceptable proposal|no matching proposal|proposals unacceptable|no IKE config found`),
		"proposal mismatch: the peer and this tunnel share no IKE or ESP proposal"},
	{regexp.MustCompile(`no matching peer config found|peer config .* not found`),
		"no tunnel matches the peer's identities (local_id/remote_id)"},
	{regexp.MustCompile(`TS_UNACCEPTABLE|traffic selectors .* unacceptable`),
		"traffic selectors refused: the peer does not accept the routed prefixes"},
	{regexp.MustCompile(`giving up after \d+ retransmits|peer not responding`),
		"peer not responding"},
	{regexp.MustCompile(`INVALID_SYNTAX|message parsing failed|parsing .* failed`),
		"malformed IKE message from the peer"},
}

// classify returns the reason for a failure line, or "".
func classify(msg string) string {
	for _, f := range failures {
		if f.match.MatchString(msg) {
			return f.reason
		}
	}
	return ""
}

// packetAddrs finds the remote and local address of charon's "received
// packet: from A[port] to B[port]" and "sending packet: from B[port] to
// A[port]" lines, which come before the IKE SA has a name.
var packetLine = regexp.MustCompile(`(received|sending) packet: from ([0-9a-fA-F.:]+)\[\d+\] to ([0-9a-fA-F.:]+)\[\d+\]`)

func packetAddrs(msg string) (remote, local string, ok bool) {
	m := packetLine.FindStringSubmatch(msg)
	if m == nil {
		return "", "", false
	}
	if m[1] == "received" {
		return m[2], m[3], true
	}
	return m[3], m[2], true
}

// charonLevel maps a charon log level (0 basic … 4 private) to slog's:
// level 0 carries SA establishment and failures, the rest is detail.
func charonLevel(level string) int {
	switch strings.TrimSpace(level) {
	case "-1", "0":
		return 0 // info
	}
	return -4 // debug
}

func slogLevel(level string) slog.Level { return slog.Level(charonLevel(level)) }
