package dns

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/edgegw/edgegw/netflow/logpush"
)

type staticIdentities map[netip.Addr]struct {
	email  string
	groups []string
}

func (m staticIdentities) Identify(a netip.Addr) (Identity, bool) {
	id, ok := m[a]
	return Identity{Email: id.email, Groups: id.groups, Interface: "lo"}, ok
}

func TestPolicies(t *testing.T) {
	up := newTestUpstream(t)
	dir := t.TempDir()
	list := filepath.Join(dir, "bad.txt")
	os.WriteFile(list, []byte("# trackers\n||tracker.test^\n0.0.0.0 listed.test\n"), 0o644)
	cfg := Config{
		Upstreams: []string{up.addr},
		Lists:     map[string]List{"bad": {File: list}},
		Policies: []Policy{
			{ID: "students", Expression: `identity.groups contains "students" and dns.fqdn == "blocked-for-students.test"`, Action: "block"},
			{ID: "safe", Expression: `identity.groups contains "students" and not dns.domains contains "test"`, Action: "safe_search"},
			{ID: "list", Expression: `dns.domains in $bad`, Action: "block"},
			{ID: "txt", Expression: `dns.fqdn == "a.test" and dns.qtype == "TXT"`, Action: "block"},
			{ID: "intranet", Expression: `dns.domains contains "corp.test"`, Action: "override", Override: []string{"10.0.0.5", "fd00::5"}},
			{ID: "alias", Expression: `dns.fqdn == "alias.test"`, Action: "override", Override: []string{"intranet.target.test"}},
			{ID: "cname", Expression: `dns.cname_domains in $bad`, Action: "block"},
			{ID: "ips", Expression: `dns.resolved_ips in {203.0.113.0/24}`, Action: "block", Name: "Bad network"},
			{ID: "src", Expression: `dns.src == 127.0.0.1 and dns.fqdn == "src.test"`, Action: "block"},
		},
	}
	sink := &recSink{}
	ids := staticIdentities{netip.MustParseAddr("127.0.0.1"): {"kid@school.test", []string{"students"}}}
	_, addr := startServer(t, cfg, Options{Sink: sink, IdentitySource: ids})

	tests := []struct {
		name     string
		qtype    uint16
		rcode    int
		answer   []string // answer records' rdata, in order
		policy   string
		decision string
		ede      uint16
	}{
		{"a.test", mdns.TypeA, mdns.RcodeSuccess, []string{"192.0.2.1"}, "", decAllowNoMatch, 0},
		{"blocked-for-students.test", mdns.TypeA, mdns.RcodeSuccess, []string{"0.0.0.0"}, "students", decBlockQuery, edeBlocked},
		{"www.google.com", mdns.TypeA, mdns.RcodeSuccess, []string{"forcesafesearch.google.com.", "216.239.38.120"}, "safe", decSafeSearch, edeForged},
		{"www.google.de", mdns.TypeA, mdns.RcodeSuccess, []string{"forcesafesearch.google.com.", "216.239.38.120"}, "safe", decSafeSearch, edeForged},
		{"m.youtube.com", mdns.TypeA, mdns.RcodeSuccess, []string{"restrict.youtube.com.", "216.239.38.120"}, "safe", decSafeSearch, edeForged},
		{"example.org", mdns.TypeA, mdns.RcodeNameError, nil, "safe", decAllowQuery, 0},
		{"www.tracker.test", mdns.TypeA, mdns.RcodeSuccess, []string{"0.0.0.0"}, "list", decBlockQuery, edeBlocked},
		{"listed.test", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"::"}, "list", decBlockQuery, edeBlocked},
		{"tracker.test", mdns.TypeMX, mdns.RcodeNameError, nil, "list", decBlockQuery, edeBlocked},
		{"a.test", mdns.TypeTXT, mdns.RcodeNameError, nil, "txt", decBlockQuery, edeBlocked},
		{"host.corp.test", mdns.TypeA, mdns.RcodeSuccess, []string{"10.0.0.5"}, "intranet", decOverride, edeForged},
		{"host.corp.test", mdns.TypeAAAA, mdns.RcodeSuccess, []string{"fd00::5"}, "intranet", decOverride, edeForged},
		{"host.corp.test", mdns.TypeTXT, mdns.RcodeSuccess, nil, "intranet", decOverride, edeForged},
		{"alias.test", mdns.TypeA, mdns.RcodeSuccess, []string{"intranet.target.test.", "10.9.9.9"}, "alias", decOverride, edeForged},
		{"chain.test", mdns.TypeA, mdns.RcodeSuccess, []string{"0.0.0.0"}, "cname", decBlockAnswer, edeBlocked},
		{"bad-ip.test", mdns.TypeA, mdns.RcodeSuccess, []string{"0.0.0.0"}, "ips", decBlockAnswer, edeBlocked},
		{"src.test", mdns.TypeA, mdns.RcodeSuccess, []string{"0.0.0.0"}, "src", decBlockQuery, edeBlocked},
	}
	for _, tc := range tests {
		t.Run(tc.name+"/"+mdns.Type(tc.qtype).String(), func(t *testing.T) {
			n := sink.len()
			r := ask(t, addr, "udp", tc.name, tc.qtype)
			eventually(t, 5*time.Second, "query log record", func() bool { return sink.len() > n })
			var got []string
			for _, rr := range r.Answer {
				f := strings.Fields(rr.String())
				got = append(got, f[len(f)-1])
			}
			if r.Rcode != tc.rcode || !slices.Equal(got, tc.answer) {
				t.Errorf("got %s %q, want %s %q", mdns.RcodeToString[r.Rcode], got, mdns.RcodeToString[tc.rcode], tc.answer)
			}
			if tc.ede != 0 && !hasEDE(r, tc.ede) {
				t.Errorf("no EDE %d: %v", tc.ede, r.IsEdns0())
			}
			rec := sink.last()
			if v, _ := rec.Get("PolicyID"); v.Str() != tc.policy {
				t.Errorf("log PolicyID %q, want %q", v.Str(), tc.policy)
			}
			if v, _ := rec.Get("ResolverDecision"); v.Str() != tc.decision {
				t.Errorf("log ResolverDecision %q, want %q", v.Str(), tc.decision)
			}
			if v, _ := rec.Get("QueryName"); v.Str() != tc.name {
				t.Errorf("log QueryName %q", v.Str())
			}
			if v, _ := rec.Get("Email"); v.Str() != "kid@school.test" {
				t.Errorf("log Email %q", v.Str())
			}
		})
	}
}

func TestPolicyEval(t *testing.T) {
	lists := map[string]*domainList{"ads": newDomainList("ads")}
	set := newDomainSet(0)
	set.add([]byte("ads.test"))
	lists["ads"].set.Store(set)
	for _, tc := range []struct {
		expr string
		v    values
		want bool
	}{
		{`dns.domains contains "example.com"`, values{domains: parents(nil, "www.example.com")}, true},
		{`dns.domains contains "example.com"`, values{domains: parents(nil, "example.org")}, false},
		{`dns.domains in $ads`, values{domains: parents(nil, "x.y.ads.test")}, true},
		{`dns.fqdn in $ads`, values{fqdn: "x.ads.test"}, false},
		{`dns.qtype == aaaa`, values{qtype: mdns.TypeAAAA}, true},
		{`dns.qtype in {1 28}`, values{qtype: mdns.TypeMX}, false},
		{`identity.email == "a@b"`, values{}, false}, // absent identity
		{`not identity.email == "a@b"`, values{}, true},
		{`dns.resolved_ips == 10.0.0.0/8`, values{resolved: true, ips: []netip.Addr{netip.MustParseAddr("192.0.2.1"), netip.MustParseAddr("10.1.1.1")}}, true},
		{`dns.resolved_ips == 10.0.0.0/8`, values{resolved: true}, false},
		{`dns.cnames contains "hop.test"`, values{resolved: true, cnames: []string{"hop.test", "cdn.test"}}, true},
		// Posture: the identified device's; absent without an identity,
		// and unknown is absent (not … holds for it).
		{`device.posture.os_version >= "6.1"`, values{hasID: true, posture: rules.Posture{OSVersion: "6.12.38+deb13-amd64"}}, true},
		{`device.posture.os_version >= "6.13"`, values{hasID: true, posture: rules.Posture{OSVersion: "6.12.38+deb13-amd64"}}, false},
		{`device.posture.os_version >= "6.1"`, values{posture: rules.Posture{OSVersion: "6.12"}}, false}, // no identity
		{`device.posture.disk_encrypted`, values{hasID: true, posture: rules.Posture{DiskEncrypted: rules.CheckYes}}, true},
		{`not device.posture.disk_encrypted`, values{hasID: true}, true},
		{`device.posture.os == "linux" and device.posture.compliant`, values{hasID: true, posture: rules.Posture{OS: "linux", Compliant: rules.CheckYes}}, true},
		{`device.posture.os == "linux" and dns.resolved_ips == 10.0.0.0/8`, values{hasID: true, resolved: true, ips: []netip.Addr{netip.MustParseAddr("10.1.1.1")}, posture: rules.Posture{OS: "linux"}}, true},
	} {
		ps, err := compilePolicies([]Policy{{ID: "p", Expression: tc.expr, Action: "block"}}, lists)
		if err != nil {
			t.Fatalf("%s: %v", tc.expr, err)
		}
		if got := ps[0].matches(&tc.v); got != tc.want {
			t.Errorf("%s on %+v: %v, want %v", tc.expr, tc.v, got, tc.want)
		}
	}
}

func TestSafeSearchTargets(t *testing.T) {
	for name, want := range map[string]string{
		"www.google.com": "forcesafesearch.google.com.", "google.co.uk": "forcesafesearch.google.com.",
		"www.google.com.au": "forcesafesearch.google.com.", "www.bing.com": "strict.bing.com.",
		"duckduckgo.com": "safe.duckduckgo.com.", "www.youtube.com": "restrict.youtube.com.",
		"mail.google.com": "", "google.evil.example": "", "example.com": "",
	} {
		if got := safeSearchTarget(name); got != want {
			t.Errorf("%s: %q, want %q", name, got, want)
		}
	}
}

// TestRecordFields checks the query log against Logpush's gateway_dns
// catalogue: every field is known, with a kind the catalogue allows.
func TestRecordFields(t *testing.T) {
	up := newTestUpstream(t)
	sink := &recSink{}
	_, addr := startServer(t, Config{Upstreams: []string{up.addr}}, Options{Sink: sink, ColoCode: "gw1"})
	ask(t, addr, "tcp", "chain.test", mdns.TypeA)
	eventually(t, 5*time.Second, "record", func() bool { return sink.len() == 1 })
	known := logpush.Fields("gateway_dns")
	rec := sink.last()
	for _, f := range rec {
		if !slices.Contains(known, f.Name) {
			t.Errorf("field %s is not in gateway_dns", f.Name)
		}
	}
	for name, want := range map[string]string{"QueryName": "chain.test", "QueryNameReversed": "test.chain",
		"QueryTypeName": "A", "Protocol": "tcp", "SrcIP": "127.0.0.1", "ColoCode": "gw1", "ResolverDecision": decAllowNoMatch} {
		if v, _ := rec.Get(name); v.Str() != want {
			t.Errorf("%s = %q, want %q", name, v.Str(), want)
		}
	}
	if v, _ := rec.Get("RCode"); v.Int() != 0 {
		t.Errorf("RCode %d", v.Int())
	}
	if v, _ := rec.Get("IsResponseCached"); v.Int() != 0 {
		t.Error("first answer marked cached")
	}
}
