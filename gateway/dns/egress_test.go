package dns

import (
	"net/netip"
	"strings"
	"testing"

	mdns "github.com/miekg/dns"
)

func TestParseECS(t *testing.T) {
	for _, tc := range []struct {
		in, want, err string
	}{
		{"egress", "egress", ""},
		{"none", "none", ""},
		{"off", "none", ""},
		{"fixed 198.51.100.0/24", "fixed 198.51.100.0/24", ""},
		{"fixed  2001:db8::/48", "fixed 2001:db8::/48", ""},
		{"fixed 198.51.100.1/24", "", "has host bits set; did you mean 198.51.100.0/24?"},
		{"fixed", "", "is not one of egress, none, fixed PREFIX"},
		{"fixed 198.51.100.0", "", "expected a prefix"},
		{"client", "", "is not one of egress, none, fixed PREFIX"},
		{"", "", "is not one of"},
	} {
		m, err := parseECS(tc.in)
		got := m.kind
		if m.kind == "fixed" {
			got += " " + m.fixed.String()
		}
		if tc.err != "" {
			if err == nil || !strings.Contains(err.Error(), tc.err) {
				t.Errorf("parseECS(%q) = %v, %v; want error %q", tc.in, got, err, tc.err)
			}
			continue
		}
		if err != nil || got != tc.want {
			t.Errorf("parseECS(%q) = %q, %v; want %q", tc.in, got, err, tc.want)
		}
	}
}

func TestUpstreamECSConfig(t *testing.T) {
	c := Config{Listen: []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:53")},
		Upstreams: []string{"192.0.2.1:53", "tls://192.0.2.2:853"},
		UpstreamECS: map[string]string{"tls://192.0.2.2:853": "none", "192.0.2.9:53": "egress",
			"192.0.2.1:53": "fixed 10.0.0.0/8 /16"}}
	c.SetDefaults()
	var got []string
	c.Validate(func(f, m string) { got = append(got, f+": "+m) })
	all := strings.Join(got, "\n")
	for _, want := range []string{
		`upstream_ecs.192.0.2.9:53: "192.0.2.9:53" is not one of upstreams`,
		`upstream_ecs.192.0.2.1:53: "fixed 10.0.0.0/8 /16" is not one of egress, none, fixed PREFIX`,
	} {
		if !strings.Contains(all, want) {
			t.Errorf("errors\n%s\nlack %q", all, want)
		}
	}
	if strings.Contains(all, "tls://") {
		t.Errorf("a valid override reported:\n%s", all)
	}
	if m := ecsFor(&c, "tls://192.0.2.2:853"); m.kind != "none" {
		t.Errorf("override: %+v", m)
	}
	if m := ecsFor(&c, "https://x/dns-query"); m.kind != "egress" {
		t.Errorf("default: %+v", m)
	}
}

// fixedEgress gives every client one egress address.
type fixedEgress netip.Addr

func (f fixedEgress) Egress(netip.Addr, Identity, bool) (netip.Addr, bool) {
	return netip.Addr(f), true
}

// TestPerUpstreamECS: each upstream gets the subnet its own mode gives
// for the client's egress (from the EgressSource, over the default
// egress), and the record names the egress; answers are cached per egress.
func TestPerUpstreamECS(t *testing.T) {
	failing, fine := newTestUpstream(t), newTestUpstream(t)
	failing.silent.Store(true) // times out: the query moves on to fine
	sink := &recSink{}
	s, addr := startServer(t, Config{
		Upstreams:   []string{failing.addr, fine.addr},
		ECS:         "egress",
		UpstreamECS: map[string]string{fine.addr: "fixed 192.0.2.0/28"},
	}, Options{EgressAddr: netip.MustParseAddr("198.51.100.1"), Egress: fixedEgress(netip.MustParseAddr("203.0.113.9")), Sink: sink})
	ask(t, addr, "udp", "a.test", mdns.TypeA)
	if got := *failing.lastECS.Load(); got != "203.0.113.0/24/0" {
		t.Errorf("ecs egress upstream saw %q, want the client's egress 203.0.113.0/24/0", got)
	}
	if got := *fine.lastECS.Load(); got != "192.0.2.0/28/0" {
		t.Errorf("fixed upstream saw %q, want 192.0.2.0/28/0", got)
	}
	eventually(t, 5e9, "query record", func() bool { return sink.len() > 0 })
	if got := field(sink.last(), "EgressIP"); got != "203.0.113.9" {
		t.Errorf("record EgressIP = %q, want 203.0.113.9", got)
	}
	_ = s
}
