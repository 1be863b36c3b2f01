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
	c.read = func() (map[string]Counter, error) {
		return map[string]Counter{"no-ssh": {Packets: 3, Bytes: 180}}, nil
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
# HELP edgegw_firewall_counters_read_failed 1 if the last read of the rule counters from the kernel failed, else 0.
# TYPE edgegw_firewall_counters_read_failed gauge
edgegw_firewall_counters_read_failed 0
`
	if err := testutil.CollectAndCompare(c, strings.NewReader(want)); err != nil {
		t.Error(err)
	}
	c.read = func() (map[string]Counter, error) { return nil, errors.New("netlink: boom") }
	if n := testutil.CollectAndCount(c); n != 1 {
		t.Errorf("after a failed read: %d series, want 1 (the failure gauge)", n)
	}
}
