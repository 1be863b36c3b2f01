package gateway_test

import (
	"context"
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
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

// TestGatewayDNSIdentityFromTunnelOnly: an attacker on the office LAN
// forges the tunnel address of a remote user, alice, and asks Gateway DNS
// for a name only alice's policy answers. Alice through WireGuard gets her
// answer (UDP, TCP, DNS over TLS) and her identity in the gateway_dns
// records. The forged queries never do: they are answered as anyone's
// (blocked), and the answer goes into alice's tunnel, where a socket on
// her side reads it; or, where the firewall drops forged sources first,
// they never reach the resolver. With dot.identified_only the LAN host's
// own DNS over TLS is refused.
func TestGatewayDNSIdentityFromTunnelOnly(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testkit.NeedTool(t, "dig", "bind9-dnsutils")
	testkit.NeedTool(t, "kdig", "knot-dnsutils")
	s := newSite(t)
	ra := s.ra
	upstreamAnswers(t, ra.LAN, "10.0.0.5:53", "192.0.2.99")
	// The appliance's loose reverse-path filter: a forged tunnel address
	// from the LAN passes it (a route to it exists, through WireGuard).
	must(t, ra.GW.Sysctl("net.ipv4.conf.all.rp_filter", "2"))
	must(t, ra.GW.Sysctl("net.ipv4.conf.eth1.rp_filter", "2"))

	certFile, keyFile, caFile := dotCert(t, s.dir, "gw.corp.example")
	key, pub := wgKey(t, ra.User, s.dir, "alice")
	s.peers = []string{fmt.Sprintf(`
      - name: alice
        public_key: %q
        allowed_ips: [100.96.0.10/32]
        email: alice@corp.example`, pub)}
	log := filepath.Join(s.dir, "dns.ndjson")
	s.extras = fmt.Sprintf(`gateway:
  dns:
    listen: [100.96.0.1:53, 10.0.0.1:53]
    upstreams: [10.0.0.5:53]
    max_inflight: 500
    dot:
      listen: [100.96.0.1:853, 10.0.0.1:853]
      cert_file: %s
      key_file: %s
      identified_only: true
    policies:
      - id: alice-secret
        expression: identity.email == "alice@corp.example" and dns.domains contains "secret.corp.example"
        action: override
        override: [10.0.0.42]
      - id: others-secret
        expression: dns.domains contains "secret.corp.example"
        action: block
logpush:
  - name: dns-archive
    dataset: gateway_dns
    destination: file://%s
    max_upload_interval: 1s
`, certFile, keyFile, log)
	s.writeConfig()
	s.start()
	s.client(ra.User, s.lab.ID()+"u", "alice", key)
	netlab.Eventually(t, 15*time.Second, "tunnel up", func() error { return ra.User.Ping("10.0.0.5") })

	query := func(t *testing.T, ns *netlab.NS, tool string, args ...string) string {
		ctx, cancel := context.WithTimeout(context.Background(), 15*time.Second)
		defer cancel()
		out, err := ns.Exec(ctx, tool, args...)
		if err != nil && tool == "dig" {
			t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	dotArgs := []string{"+tls", "+tls-ca=" + caFile, "+tls-hostname=gw.corp.example", "+timeout=5", "+retry=0"}
	// What the steps share: the names of the forged queries and how many
	// answers to them came back through alice's tunnel.
	var (
		forged  = map[string]bool{}
		answers int
	)

	if !t.Run("alice gets her answer on every transport", func(t *testing.T) {
		// Alice through the tunnel: her answer on every transport.
		for _, tc := range []struct {
			tool string
			args []string
		}{
			{"dig", []string{"+short", "+tries=2", "+time=2", "@100.96.0.1", "udp.secret.corp.example", "A"}},
			{"dig", []string{"+short", "+tcp", "+tries=2", "+time=2", "@100.96.0.1", "tcp.secret.corp.example", "A"}},
			{"dig", []string{"+short", "+tries=2", "+time=2", "@10.0.0.1", "lanaddr.secret.corp.example", "A"}},
			{"kdig", append([]string{"+short", "@100.96.0.1"}, append(dotArgs, "dot.secret.corp.example", "A")...)},
		} {
			netlab.Eventually(t, 10*time.Second, "alice's answer over "+strings.Join(tc.args, " "), func() error {
				if got := strings.TrimSpace(query(t, ra.User, tc.tool, tc.args...)); got != "10.0.0.42" {
					return fmt.Errorf("%s %v = %q, want alice's 10.0.0.42", tc.tool, tc.args, got)
				}
				return nil
			})
		}
	}) {
		return
	}

	if !t.Run("a forged tunnel address gets no policy", func(t *testing.T) {
		// The LAN host forges alice's address. A socket on alice's side, on
		// the forged source port, reads whatever answer comes back through
		// her tunnel.
		const forgedPort = 40053
		var aliceSide net.PacketConn
		must(t, ra.User.Do(func() (err error) {
			aliceSide, err = net.ListenPacket("udp", fmt.Sprintf("100.96.0.10:%d", forgedPort))
			return err
		}))
		defer aliceSide.Close()
		must(t, ra.LAN.AddAddr("lo", "100.96.0.10/32"))
		for i, dst := range []string{"10.0.0.1:53", "100.96.0.1:53"} {
			name := fmt.Sprintf("forged%d.secret.corp.example.", i)
			forged[strings.TrimSuffix(name, ".")] = true
			m := new(dns.Msg)
			m.SetQuestion(name, dns.TypeA)
			b, _ := m.Pack()
			must(t, ra.LAN.Do(func() error {
				c, err := net.ListenUDP("udp", net.UDPAddrFromAddrPort(netip.MustParseAddrPort(fmt.Sprintf("100.96.0.10:%d", forgedPort))))
				if err != nil {
					return err
				}
				defer c.Close()
				_, err = c.WriteToUDPAddrPort(b, netip.MustParseAddrPort(dst))
				return err
			}))
		}
		buf := make([]byte, 2048)
		for answers < len(forged) {
			aliceSide.SetReadDeadline(time.Now().Add(5 * time.Second))
			n, _, err := aliceSide.ReadFrom(buf)
			if err != nil {
				break // none (more): dropped before the resolver
			}
			r := new(dns.Msg)
			if r.Unpack(buf[:n]) != nil || len(r.Question) != 1 || !forged[strings.TrimSuffix(r.Question[0].Name, ".")] {
				continue
			}
			answers++
			for _, rr := range r.Answer {
				if a, ok := rr.(*dns.A); ok && a.A.String() != "0.0.0.0" {
					t.Errorf("forged query %s answered %s: alice's policy", r.Question[0].Name, a.A)
				}
			}
		}
	}) {
		return
	}

	if !t.Run("LAN DoT refused to an unidentified client", func(t *testing.T) {
		// The LAN host's own DNS over TLS: refused, identified clients only.
		out := query(t, ra.LAN, "kdig", append([]string{"@10.0.0.1"}, append(dotArgs, "dotlan.secret.corp.example", "A")...)...)
		if !strings.Contains(out, "status: REFUSED") || !strings.Contains(out, "18 (Prohibited)") {
			t.Errorf("DoT from the LAN: want REFUSED with EDE 18:\n%s", out)
		}
	}) {
		return
	}

	if !t.Run("records carry identity only for alice", func(t *testing.T) {
		// The records: alice's queries carry her identity and policy; forged
		// ones (if they reached the resolver) neither.
		want := []string{"udp.secret.corp.example", "tcp.secret.corp.example", "lanaddr.secret.corp.example", "dot.secret.corp.example", "dotlan.secret.corp.example"}
		var recs []map[string]any
		netlab.Eventually(t, 15*time.Second, "gateway_dns records", func() error {
			recs = readRecords(t, log)
			seen := map[string]bool{}
			for _, r := range recs {
				seen[fmt.Sprint(r["QueryName"])] = true
			}
			for _, n := range want {
				if !seen[n] {
					return fmt.Errorf("no record of %s", n)
				}
			}
			for n := range forged {
				if answers > 0 && !seen[n] {
					return fmt.Errorf("no record of %s", n)
				}
			}
			return nil
		})
		forgedRecs := 0
		for _, r := range recs {
			name, email, policy := fmt.Sprint(r["QueryName"]), fmt.Sprint(r["Email"]), fmt.Sprint(r["PolicyID"])
			switch {
			case forged[name]:
				forgedRecs++
				if email != "" || fmt.Sprint(r["DeviceID"]) != "" || policy != "others-secret" || fmt.Sprint(r["SrcIP"]) != "100.96.0.10" {
					t.Errorf("forged query's record carries an identity or alice's policy: %v", r)
				}
			case name == "dotlan.secret.corp.example":
				if email != "" || r["ResolverDecision"] != "refusedUnidentified" {
					t.Errorf("LAN DoT record: %v", r)
				}
			case strings.HasSuffix(name, ".secret.corp.example"):
				if email != "alice@corp.example" || policy != "alice-secret" {
					t.Errorf("alice's record without her identity: %v", r)
				}
			}
		}
		if forgedRecs != answers {
			t.Errorf("%d answers to forged queries reached alice's side, %d records of them", answers, forgedRecs)
		}
		t.Logf("forged queries: %d of %d reached the resolver; the others were dropped before it", answers, len(forged))
	}) {
		return
	}
}

// upstreamAnswers runs, in ns on addr, a resolver that answers every A
// query with ip.
func upstreamAnswers(t *testing.T, ns *netlab.NS, addr, ip string) {
	t.Helper()
	var pc net.PacketConn
	must(t, ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}))
	up := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == dns.TypeA {
			rr, _ := dns.NewRR(q.Name + " 300 IN A " + ip)
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})}
	started := make(chan struct{})
	up.NotifyStartedFunc = func() { close(started) }
	go up.ActivateAndServe()
	<-started
	t.Cleanup(func() { up.Shutdown() })
}

// dotCert writes a self-signed certificate for name (its own CA) and its
// key: the certificate and key files and the CA file clients trust.
func dotCert(t *testing.T, dir, name string) (certFile, keyFile, caFile string) {
	t.Helper()
	key, err := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	must(t, err)
	tmpl := &x509.Certificate{
		SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: name}, DNSNames: []string{name},
		NotBefore: time.Now().Add(-time.Hour), NotAfter: time.Now().Add(24 * time.Hour),
		KeyUsage: x509.KeyUsageDigitalSignature, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth},
		BasicConstraintsValid: true, IsCA: true,
	}
	der, err := x509.CreateCertificate(rand.Reader, tmpl, tmpl, &key.PublicKey, key)
	must(t, err)
	kder, err := x509.MarshalECPrivateKey(key)
	must(t, err)
	certFile, keyFile = filepath.Join(dir, "dot.crt"), filepath.Join(dir, "dot.key")
	must(t, os.WriteFile(certFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: der}), 0o644))
	must(t, os.WriteFile(keyFile, pem.EncodeToMemory(&pem.Block{Type: "EC PRIVATE KEY", Bytes: kder}), 0o600))
	return certFile, keyFile, certFile
}

// readRecords reads the NDJSON records of a Logpush file destination.
func readRecords(t *testing.T, path string) []map[string]any {
	t.Helper()
	b, _ := os.ReadFile(path)
	var recs []map[string]any
	for line := range strings.Lines(string(b)) {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) == nil {
			recs = append(recs, r)
		}
	}
	return recs
}
