package admin

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"testing"

	"github.com/edgegw/edgegw/firewall"
)

// TestFirewallTestRoles: POST /api/v1/firewall/test is the one change-
// shaped request a viewer's token may make (it changes nothing); the
// viewer's other POSTs stay refused, and so does a path beside it. A
// description that does not parse is answered with its error, a body
// that is not the request's JSON is refused.
func TestFirewallTestRoles(t *testing.T) {
	e := newEnvWith(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}, Hosts: []string{"gw.corp.test"}}, func(_ *env, o *Options) {
		// The packet parser is the firewall's own; the rules are the
		// gateway's (TestTestPacket, TestConsoleDNSFirewallTools).
		o.FirewallTest = func(desc string) (FirewallTestResult, error) {
			pkt, err := firewall.ParsePacket(desc)
			if err != nil {
				return FirewallTestResult{}, fmt.Errorf("%w %w", ErrBadPacket, err)
			}
			return FirewallTestResult{Packet: pkt.String(), Verdict: "allow"}, nil
		}
		o.Reload = func(ctx context.Context) (string, error) { return "edgegw.yaml", nil }
	})
	viewer := e.createToken("noc", RoleViewer)
	admin := e.createToken("ops", RoleAdmin)
	for _, tc := range []struct {
		name, method, path, token, body string
		status                          int
		verdict, err                    string
	}{
		{"viewer tests a packet", "POST", PathFirewallTest, viewer, `{"packet": "tcp.dstport == 22"}`, 200, "allow", ""},
		{"admin tests a packet", "POST", PathFirewallTest, admin, `{"packet": "udp.dstport == 53"}`, 200, "allow", ""},
		{"a packet that does not parse", "POST", PathFirewallTest, viewer, `{"packet": "tcp.dstport =="}`, 200, "", "packet"},
		{"no packet", "POST", PathFirewallTest, viewer, `{}`, 400, "", ""},
		{"an unknown field", "POST", PathFirewallTest, viewer, `{"packet": "tcp.dstport == 22", "apply": true}`, 400, "", ""},
		{"without a token", "POST", PathFirewallTest, "", `{"packet": "tcp.dstport == 22"}`, 401, "", ""},
		{"viewer reloads", "POST", PathReload, viewer, "", 403, "", ""},
		{"viewer beside the path", "POST", PathFirewallTest + "/x", viewer, `{"packet": "tcp.dstport == 22"}`, 403, "", ""},
		{"viewer GETs it", "GET", PathFirewallTest, viewer, "", 405, "", ""},
	} {
		t.Run(tc.name, func(t *testing.T) {
			status, body := e.do(request{method: tc.method, path: tc.path, token: tc.token, body: tc.body})
			if status != tc.status {
				t.Fatalf("status %d, want %d: %s", status, tc.status, body)
			}
			if status != http.StatusOK || tc.path != PathFirewallTest {
				return
			}
			var res FirewallTestResult
			if err := json.Unmarshal([]byte(body), &res); err != nil {
				t.Fatal(err)
			}
			if res.Verdict != tc.verdict || (tc.err == "") != (res.Error == "") {
				t.Errorf("answer %+v, want verdict %q, error %v", res, tc.verdict, tc.err != "")
			}
		})
	}
}
