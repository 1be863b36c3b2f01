package firewall

import (
	"errors"
	"io"
	"log/slog"
	"strings"
	"testing"

	"github.com/prometheus/client_golang/prometheus/testutil"
)

func TestCollector(t *testing.T) {
	c := NewCollector(New(slog.New(slog.NewTextHandler(io.Discard, nil))))
	c.read = func() (Counts, error) {
		return Counts{
			Rules:       map[string]Counter{"no-ssh": {Packets: 3, Bytes: 180}},
			Spoofed:     map[string]Counter{"wg0": {Packets: 7, Bytes: 420}},
			RateDropped: map[string]Counter{"ping-limit": {Packets: 2, Bytes: 168}},
		}, nil
	}
	problems, err := testutil.CollectAndLint(c)
	if err != nil {
		t.Fatal(err)
	}
	for _, p := range problems {
		t.Errorf("promlint: %s: %s", p.Metric, p.Text)
	}
	want := `
# HELP edgegw_firewall_rule_packets_total Packets matched by a firewall rule since the ruleset was applied.
# TYPE edgegw_firewall_rule_packets_total counter
edgegw_firewall_rule_packets_total{rule="no-ssh"} 3
# HELP edgegw_firewall_rule_bytes_total Bytes of packets matched by a firewall rule since the ruleset was applied.
# TYPE edgegw_firewall_rule_bytes_total counter
edgegw_firewall_rule_bytes_total{rule="no-ssh"} 180
# HELP edgegw_firewall_spoofed_packets_total Packets dropped before any rule because their source address belongs to a tunnel (interface: the tunnel interfaces that own it) but they arrived on another interface, since the ruleset was applied.
# TYPE edgegw_firewall_spoofed_packets_total counter
edgegw_firewall_spoofed_packets_total{interface="wg0"} 7
# HELP edgegw_firewall_rate_limit_dropped_packets_total Packets a rate_limit rule dropped (over the rate, or its meter of sources full), since the ruleset was applied.
# TYPE edgegw_firewall_rate_limit_dropped_packets_total counter
edgegw_firewall_rate_limit_dropped_packets_total{rule="ping-limit"} 2
# HELP edgegw_firewall_counters_read_failed 1 if the last read of the rule counters from the kernel failed, else 0.
# TYPE edgegw_firewall_counters_read_failed gauge
edgegw_firewall_counters_read_failed 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	c.read = func() (Counts, error) { return Counts{}, errors.New("netlink: boom") }
	if n := testutil.CollectAndCount(c); n != 1 {
		t.Errorf("after a failed read: %d series, want 1 (the failure gauge)", n)
	}
}
