package dns

import (
	"context"
	"crypto/tls"
	"encoding/pem"
	"net"
	"net/http/httptest"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

// TestRealClients runs dig (bind9-dnsutils) and kdig (knot-dnsutils)
// against the server, with a local upstream, and again with Unbound (when
// installed) between edgegw and that upstream. Skipped when the tools are
// not installed.
func TestRealClients(t *testing.T) {
	up := newTestUpstream(t)
	t.Run("miekg-upstream", func(t *testing.T) { realClients(t, up.addr) })
	t.Run("kdig-doh", func(t *testing.T) {
		if _, err := exec.LookPath("kdig"); err != nil {
			t.Skip("kdig not installed")
		}
		s, _ := startServer(t, Config{Upstreams: []string{up.addr}}, Options{})
		cert, _ := selfSigned(t)
		hs := httptest.NewUnstartedServer(s.DoHHandler(DoHAnyClient))
		hs.TLS = &tls.Config{Certificates: []tls.Certificate{cert}}
		hs.EnableHTTP2 = true // kdig speaks DoH over HTTP/2 only
		hs.StartTLS()
		t.Cleanup(hs.Close)
		ca := filepath.Join(t.TempDir(), "ca.pem")
		os.WriteFile(ca, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: cert.Certificate[0]}), 0o644)
		host, port, _ := net.SplitHostPort(strings.TrimPrefix(hs.URL, "https://"))
		for _, get := range []string{"+nohttps-get", "+https-get"} {
			ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
			out, err := exec.CommandContext(ctx, "kdig", "@"+host, "-p", port, "+https=/dns-query", get,
				"+tls-ca="+ca, "+tls-hostname=upstream.test", "a.test", "A").CombinedOutput()
			cancel()
			if err != nil || !strings.Contains(string(out), "192.0.2.1") || !strings.Contains(string(out), "status: 200") {
				t.Errorf("kdig DoH %s: %v\n%s", get, err, out)
			}
		}
	})
	t.Run("via-unbound", func(t *testing.T) {
		ub, _ := startUnbound(t, t.TempDir(), up.addr)
		if ub == "" {
			t.Skip("unbound not installed")
		}
		realClients(t, ub)
	})
}

func realClients(t *testing.T, upstream string) {
	cfg := Config{
		Upstreams: []string{upstream},
		Policies:  []Policy{{ID: "no-trackers", Expression: `dns.domains contains "tracker.test"`, Action: "block"}},
	}
	_, addr := startServer(t, cfg, Options{})
	host, port, _ := net.SplitHostPort(addr)
	run := func(tool string, args ...string) string {
		t.Helper()
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed (Debian bind9-dnsutils, knot-dnsutils)", tool)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
		defer cancel()
		out, err := exec.CommandContext(ctx, tool, args...).CombinedOutput()
		if err != nil {
			t.Fatalf("%s %s: %v\n%s", tool, strings.Join(args, " "), err, out)
		}
		return string(out)
	}
	for _, tc := range []struct {
		tool string
		args []string
		want []string
	}{
		{"dig", []string{"a.test", "A"}, []string{"status: NOERROR", "300\tIN\tA\t192.0.2.1", "udp: 1232", "flags: qr rd ra"}},
		{"dig", []string{"+tcp", "a.test", "AAAA"}, []string{"2001:db8::1"}},
		{"dig", []string{"+dnssec", "a.test", "A"}, []string{"RRSIG\tA 13 2 300", "flags: do"}},
		// dig retries over TCP after a truncated UDP answer.
		{"dig", []string{"+bufsize=1232", "big.test", "TXT"}, []string{"Truncated, retrying in TCP mode", "ANSWER: 20"}},
		{"dig", []string{"+ignore", "+bufsize=512", "big.test", "TXT"}, []string{"flags: qr tc rd ra"}},
		{"dig", []string{"nope.test", "A"}, []string{"status: NXDOMAIN", "AUTHORITY: 1"}},
		{"dig", []string{"chain.test", "A"}, []string{"hop.test.", "cdn.tracker.test.", "198.51.100.7"}},
		{"dig", []string{"www.tracker.test", "A"}, []string{"0.0.0.0", "EDE: 15 (Blocked): (blocked by policy no-trackers)"}},
		{"kdig", []string{"+edns", "www.tracker.test", "TXT"}, []string{"status: NXDOMAIN", "EDE: 15 (Blocked): 'blocked by policy no-trackers'"}},
		{"kdig", []string{"+tcp", "+dnssec", "a.test", "A"}, []string{"RRSIG", "192.0.2.1"}},
		{"kdig", []string{"+noedns", "a.test", "A"}, []string{"192.0.2.1"}},
	} {
		args := []string{"@" + host, "-p", port, "+time=5", "+tries=1"}
		if tc.tool == "kdig" {
			args = []string{"@" + host, "-p", port, "+timeout=5", "+retry=0"}
		}
		args = append(args, tc.args...)
		out := run(tc.tool, args...)
		for _, w := range tc.want {
			if !strings.Contains(out, w) {
				t.Errorf("%s %s: no %q in\n%s", tc.tool, strings.Join(tc.args, " "), w, out)
			}
		}
	}
}
