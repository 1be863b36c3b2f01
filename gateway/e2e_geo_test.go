package gateway_test

import (
	"context"
	"crypto/tls"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgegw/edgegw/firewall/geo/geotest"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestGeoThroughGateway runs firewall rules on GeoIP fields against
// traffic from a remote WireGuard user to the office: a country rule on
// the user's address blocks SSH and counts, an ASN rule on the office
// server's address blocks the web, and a database file replaced on disk
// (no SIGHUP) lets SSH through once the user's network has another
// country, with the ASN rule still in force.
func TestGeoThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	key, pub := wgKey(t, ra.User, s.dir, "alice")
	s.addPeer("alice", pub, "100.96.0.10/32")
	db := filepath.Join(s.dir, "geo.mmdb")
	write := func(userCountry string) {
		t.Helper()
		must(t, geotest.WriteFile(db, []geotest.Entry{
			{Prefix: netip.MustParsePrefix("100.96.0.0/24"), Country: userCountry, ASN: 64512},
			{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Country: "DE", ASN: 64999},
		}))
	}
	write("KP")
	s.extras = fmt.Sprintf(`firewall:
  geoip:
    country: %[1]s
    asn: %[1]s
  rules:
    - id: no-ssh-from-kp
      expression: ip.src.country in {"KP" "IR"} and tcp.dstport == 22
      action: block
    - id: no-web-to-as64999
      expression: ip.dst.asnum == 64999 and tcp.dstport == 80
      action: block
`, db)
	s.writeConfig()
	s.start()
	s.client(ra.User, s.lab.ID()+"u", "alice", key)
	echoServer(t, ra.LAN, ":22")
	echoServer(t, ra.LAN, ":80")
	echoServer(t, ra.LAN, ":443")

	dial := func(port string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := ra.User.DialContext(ctx, "tcp", "10.0.0.5:"+port)
		if err == nil {
			c.Close()
		}
		return err
	}
	netlab.Eventually(t, 15*time.Second, "tunnel up", func() error { return ra.User.Ping("10.0.0.5") })
	if err := dial("443"); err != nil {
		t.Fatalf("port 443 should pass: %v", err)
	}
	if err := dial("22"); err == nil {
		t.Fatal("SSH from a KP address passed; rule no-ssh-from-kp should block it")
	}
	if err := dial("80"); err == nil {
		t.Fatal("web to AS64999 passed; rule no-web-to-as64999 should block it")
	}
	if n := counter(t, s, "no-ssh-from-kp"); n == 0 {
		t.Error("the no-ssh-from-kp counter did not move")
	}
	if n := counter(t, s, "no-web-to-as64999"); n == 0 {
		t.Error("the no-web-to-as64999 counter did not move")
	}
	if m := s.get("/metrics"); !strings.Contains(m, `edgegw_geoip_networks{kind="country"} 2`) {
		t.Errorf("metrics lack the GeoIP snapshot:\n%s", grepLines(m, "edgegw_geoip"))
	}

	// The user's network moves to GB in a new file: no reload.
	write("GB")
	netlab.Eventually(t, 20*time.Second, "SSH after the database swap", func() error { return dial("22") })
	if err := dial("80"); err == nil {
		t.Error("web to AS64999 passed after the swap; the ASN rule should still block it")
	}
	if strings.Contains(s.proc.Output(), "configuration reloaded") {
		t.Error("the swap went through a configuration reload")
	}
	if c := strings.Count(s.proc.Output(), "geoip database loaded"); c < 2 {
		t.Errorf("%d \"geoip database loaded\" lines, want 2 (start and swap)", c)
	}
	if m := s.get("/metrics"); !strings.Contains(m, "edgegw_geoip_loads_total 2") {
		t.Errorf("metrics after the swap:\n%s", grepLines(m, "edgegw_geoip"))
	}
}

// TestGeoFieldsInRecords: with firewall.geoip every record names the
// places of its addresses, from the same database the firewall loads:
// network_analytics_logs has Source/DestinationCountry and ASN (and the
// AS's name) of real forwarded traffic, access_requests has the Country
// of the client of the Access listener, gateway_dns has the client's
// SrcIPCountryCode and the ResolvedIPCountryCodes of the answer. A
// database replaced on disk changes the fields of later records without
// a reload. Access geo selectors and Gateway DNS geo fields judge by the
// same database.
func TestGeoFieldsInRecords(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testkit.NeedTool(t, "dig", "bind9-dnsutils")
	s := newSite(t)
	ra := s.ra
	db := filepath.Join(s.dir, "geo.mmdb")
	write := func(internet string) {
		t.Helper()
		must(t, geotest.WriteFile(db, []geotest.Entry{
			{Prefix: netip.MustParsePrefix("192.0.2.0/24"), Country: internet, ASN: 64512},
			{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Country: "DE", ASN: 64999, Org: "Office Net"},
		}))
	}
	write("KP")
	secret := filepath.Join(s.dir, "ci-bot.secret")
	must(t, os.WriteFile(secret, []byte("s3cret-token-value\n"), 0o600))
	logs := map[string]string{}
	var jobs strings.Builder
	for _, ds := range []string{"network_analytics_logs", "access_requests", "gateway_dns"} {
		logs[ds] = filepath.Join(s.dir, ds+".ndjson")
		fmt.Fprintf(&jobs, "  - name: %s\n    dataset: %s\n    destination: file://%s\n    max_upload_interval: 1s\n",
			strings.ReplaceAll(ds, "_", "-"), ds, logs[ds])
	}

	// The office's resolver: every A query answers 192.0.2.99.
	var pc net.PacketConn
	must(t, ra.LAN.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", "10.0.0.5:53")
		return err
	}))
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Name + " 300 IN A 192.0.2.99")
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})}
	upDone := make(chan struct{})
	go func() { defer close(upDone); up.ActivateAndServe() }()
	defer func() { up.Shutdown(); <-upDone }()

	body := fmt.Sprintf(`firewall:
  geoip:
    country: %[1]s
    asn: %[1]s
  rules:
    - id: wan-web
      expression: ingress == "wan" and tcp.dstport == 80
      action: allow
identity:
  providers:
    - name: corp-sso
      issuer: http://127.0.0.1:1
      client_id: edgegw
access:
  listen: 10.0.0.1:8443
  apps:
    - name: wiki
      domain: wiki.corp.example
      upstream: http://10.0.0.5:8080
      policies:
        - name: ci
          action: service_auth
          include: [{service_token: ci-bot}]
    - name: de-only
      domain: de.corp.example
      upstream: http://10.0.0.5:8080
      policies:
        - name: from-de
          action: bypass
          include: [{geo: DE}]
    - name: kp-only
      domain: kp.corp.example
      upstream: http://10.0.0.5:8080
      policies:
        - name: from-kp
          action: bypass
          include: [{geo: KP}]
  service_tokens:
    - name: ci-bot
      client_id: 6f2c1a0e.access
      client_secret_file: %[2]s
gateway:
  dns:
    listen: [10.0.0.1:53]
    upstreams: [10.0.0.5:53]
    policies:
      - id: no-kp-answers-for-de
        expression: dns.src.geo.country == "DE" and dns.dst.geo.country == "KP" and dns.fqdn == "blocked.example.com"
        action: block
logpush:
%[3]s`, db, secret, jobs.String())
	s.writeFlowConfig(body)
	s.start()
	defer func() {
		if t.Failed() {
			t.Logf("gateway log:\n%s", s.proc.Output())
		}
	}()
	must(t, ra.WAN.Route("10.0.0.0/24", ra.GWWANAddr.String()))
	echoServer(t, ra.LAN, ":80")
	srv, err := ra.LAN.ServeHTTP(":8080", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "wiki") }))
	must(t, err)
	defer srv.Close()

	// Flow: the internet (192.0.2.2, "KP", AS64512) to the office web
	// server (10.0.0.5, "DE", AS64999 "Office Net").
	web := func() error {
		c, err := dialTCP(ra.User, "192.0.2.2:0", "10.0.0.5:80", 64, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	}
	netlab.Eventually(t, 10*time.Second, "the internet reaches the office web server", web)
	// Access: an office client (10.0.0.5, "DE") with the service token.
	c := ra.LAN.HTTPClient()
	c.Transport.(*http.Transport).TLSClientConfig = &tls.Config{InsecureSkipVerify: true, ServerName: "wiki.corp.example"}
	req, _ := http.NewRequest("GET", "https://10.0.0.1:8443/", nil)
	req.Host = "wiki.corp.example"
	req.Header.Set("CF-Access-Client-Id", "6f2c1a0e.access")
	req.Header.Set("CF-Access-Client-Secret", "s3cret-token-value")
	resp, err := c.Do(req)
	must(t, err)
	resp.Body.Close()
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("the service token's request: %s", resp.Status)
	}
	// Access geo selectors: the office client ("DE") passes the app
	// whose bypass policy includes DE, not the one that includes KP.
	for host, want := range map[string]int{"de.corp.example": http.StatusOK, "kp.corp.example": http.StatusUnauthorized} {
		req, _ := http.NewRequest("GET", "https://10.0.0.1:8443/", nil)
		req.Host = host
		req.Header.Set("Accept", "application/json") // 401 rather than a login redirect
		c.Transport.(*http.Transport).TLSClientConfig.ServerName = host
		resp, err := c.Do(req)
		must(t, err)
		resp.Body.Close()
		if resp.StatusCode != want {
			t.Errorf("%s from the office (DE): %s, want %d", host, resp.Status, want)
		}
	}
	// DNS: the office client asks Gateway DNS; the answer is "KP".
	dig := func(name, want string) {
		t.Helper()
		netlab.Eventually(t, 10*time.Second, "Gateway DNS answers "+name, func() error {
			ctx, cancel := context.WithTimeout(t.Context(), 8*time.Second)
			defer cancel()
			out, err := ra.LAN.Exec(ctx, "dig", "+short", "+tries=2", "+time=2", "@10.0.0.1", name, "A")
			if got := strings.TrimSpace(string(out)); err != nil || got != want {
				return fmt.Errorf("%s = %q (%v), want %s", name, got, err, want)
			}
			return nil
		})
	}
	dig("www.example.com", "192.0.2.99")
	// A DNS policy on both countries: the client's (DE) and the
	// answer's (KP).
	dig("blocked.example.com", "0.0.0.0")

	// findRecord waits for a record of ds for which match holds, and
	// returns it.
	findRecord := func(ds, what string, match func(map[string]any) bool) map[string]any {
		t.Helper()
		var found map[string]any
		netlab.Eventually(t, 20*time.Second, what, func() error {
			b, _ := os.ReadFile(logs[ds])
			for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
				var m map[string]any
				if json.Unmarshal([]byte(line), &m) == nil && match(m) {
					found = m
					return nil
				}
			}
			return fmt.Errorf("none among %d bytes of %s", len(b), ds)
		})
		return found
	}
	checkFields := func(ds string, m map[string]any, want map[string]any) {
		t.Helper()
		for k, w := range want {
			if fmt.Sprint(m[k]) != fmt.Sprint(w) {
				t.Errorf("%s: %s = %v, want %v\nrecord: %v", ds, k, m[k], w, m)
			}
		}
	}
	webFlow := func(country string) func(map[string]any) bool {
		return func(m map[string]any) bool {
			return m["IPSourceAddress"] == "192.0.2.2" && m["IPDestinationAddress"] == "10.0.0.5" &&
				fmt.Sprint(m["DestinationPort"]) == "80" && m["SourceCountry"] == country
		}
	}
	flow := findRecord("network_analytics_logs", "a flow record of the web connection", webFlow("KP"))
	checkFields("network_analytics_logs", flow, map[string]any{"SourceCountry": "KP", "SourceASN": 64512,
		"DestinationCountry": "DE", "DestinationASN": 64999, "DestinationASNName": "Office Net"})
	acc := findRecord("access_requests", "the access_requests record", func(m map[string]any) bool {
		return m["IPAddress"] == "10.0.0.5" && m["AppDomain"] == "wiki.corp.example"
	})
	checkFields("access_requests", acc, map[string]any{"Country": "DE", "Allowed": true, "AppDomain": "wiki.corp.example"})
	q := findRecord("gateway_dns", "the gateway_dns record", func(m map[string]any) bool { return m["QueryName"] == "www.example.com" })
	checkFields("gateway_dns", q, map[string]any{"SrcIPCountryCode": "DE", "ResolvedIPs": []any{"192.0.2.99"}, "ResolvedIPCountryCodes": []any{"KP"}})
	q = findRecord("gateway_dns", "the blocked query's record", func(m map[string]any) bool { return m["QueryName"] == "blocked.example.com" })
	checkFields("gateway_dns", q, map[string]any{"PolicyID": "no-kp-answers-for-de", "ResolverDecision": "blockedByAnswerPolicy"})

	// The internet's networks move to IR in a new file: no reload.
	write("IR")
	netlab.Eventually(t, 30*time.Second, "a flow record with the new database's country", func() error {
		if err := web(); err != nil {
			return err
		}
		b, _ := os.ReadFile(logs["network_analytics_logs"])
		for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && webFlow("IR")(m) {
				return nil
			}
		}
		return fmt.Errorf("no web flow record with SourceCountry IR yet")
	})
	if strings.Contains(s.proc.Output(), "configuration reloaded") {
		t.Error("the swap went through a configuration reload")
	}

	// A reload that keeps the same database files, then another swap: the
	// records follow the reloaded plan's watcher, which must be the one
	// that runs.
	s.writeFlowConfig(strings.Replace(body, "  rules:\n", "  rules:\n    - id: wan-no-telnet\n      expression: ingress == \"wan\" and tcp.dstport == 23\n      action: block\n", 1))
	s.signal(syscall.SIGHUP)
	s.waitLog("configuration reloaded", 1)
	write("FR")
	netlab.Eventually(t, 30*time.Second, "after a reload, a flow record with the next database's country", func() error {
		if err := web(); err != nil {
			return err
		}
		b, _ := os.ReadFile(logs["network_analytics_logs"])
		for line := range strings.SplitSeq(strings.TrimSpace(string(b)), "\n") {
			var m map[string]any
			if json.Unmarshal([]byte(line), &m) == nil && webFlow("FR")(m) {
				return nil
			}
		}
		return fmt.Errorf("no web flow record with SourceCountry FR yet")
	})
}
