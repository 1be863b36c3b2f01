package gateway_test

import (
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestGatewayDNS: a remote WireGuard user resolves through Gateway DNS on
// the tunnel address. Policies block by name and override by the user's
// groups (from the peer's identity); other names come from the office's
// upstream resolver; every query reaches Logpush as a gateway_dns record.
func TestGatewayDNS(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra

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
	go up.ActivateAndServe()
	defer up.Shutdown()

	key, pub := wgKey(t, ra.User, s.dir, "alice")
	s.peers = []string{fmt.Sprintf(`
      - name: alice
        public_key: %q
        allowed_ips: [100.96.0.10/32]
        email: alice@corp.example
        groups: [it-ops]`, pub)}
	log := filepath.Join(s.dir, "dns.ndjson")
	s.extras = fmt.Sprintf(`gateway:
  dns:
    listen: [100.96.0.1:53]
    upstreams: [10.0.0.5:53]
    policies:
      - id: block-ads
        expression: dns.fqdn == "ads.example.com"
        action: block
      - id: ops-intranet
        expression: identity.groups contains "it-ops" and dns.fqdn == "intranet.corp.example"
        action: override
        override: [10.0.0.5]
logpush:
  - name: dns-archive
    dataset: gateway_dns
    destination: file://%s
    max_upload_interval: 1s
`, log)
	s.writeConfig()
	s.start()
	s.client(ra.User, s.lab.ID()+"u", "alice", key)
	netlab.Eventually(t, 15*time.Second, "tunnel up", func() error { return ra.User.Ping("10.0.0.5") })

	dig := func(name string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := ra.User.Exec(ctx, "dig", "+short", "+tries=2", "+time=2", "@100.96.0.1", name, "A")
		if err != nil {
			t.Fatalf("dig %s: %v\n%s", name, err, out)
		}
		return strings.TrimSpace(string(out))
	}
	netlab.Eventually(t, 10*time.Second, "gateway DNS answers", func() error {
		if got := dig("www.example.com"); got != "192.0.2.99" {
			return fmt.Errorf("www.example.com = %q, want the upstream's 192.0.2.99", got)
		}
		return nil
	})
	if got := dig("ads.example.com"); got != "0.0.0.0" {
		t.Errorf("ads.example.com = %q, want 0.0.0.0 (blocked)", got)
	}
	if got := dig("intranet.corp.example"); got != "10.0.0.5" {
		t.Errorf("intranet.corp.example = %q, want the override 10.0.0.5 for it-ops", got)
	}
	netlab.Eventually(t, 15*time.Second, "gateway_dns records in the Logpush file", func() error {
		b, _ := os.ReadFile(log)
		for _, want := range []string{"ads.example.com", "intranet.corp.example", "alice@corp.example", "block-ads"} {
			if !strings.Contains(string(b), want) {
				return fmt.Errorf("no %q in %s", want, b)
			}
		}
		return nil
	})
}
