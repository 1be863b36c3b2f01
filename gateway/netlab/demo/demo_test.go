package main

import (
	"context"
	"errors"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel/ipsec"
)

// TestDemoCheck runs `make demo-check`: the whole office with the real
// binary, every step asserted, and a teardown that leaves nothing.
func TestDemoCheck(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end: the whole office in network namespaces")
	}
	testkit.NeedRoot(t)
	for _, tool := range [][2]string{{"ip", "iproute2"}, {"wireguard-go", "wireguard-go"}, {"wg", "wireguard-tools"},
		{"wg-quick", "wireguard-tools"}, {"ping", "iputils-ping"}, {"dig", "bind9-dnsutils"},
		{"swanctl", "strongswan-swanctl"}, {ipsec.DefaultCharon, "charon-systemd"}} {
		testkit.NeedTool(t, tool[0], tool[1])
	}
	binary := filepath.Join(t.TempDir(), "edgegw")
	if out, err := exec.Command("go", "build", "-o", binary, "../../../cmd/edgegw").CombinedOutput(); err != nil {
		t.Fatalf("build edgegw: %v\n%s", err, out)
	}
	var out strings.Builder
	err := run(t.Context(), binary, true, &out)
	t.Log("\n" + out.String())
	if err != nil {
		t.Fatal(err)
	}
	for _, want := range []string{"FAIL", "demo-check passed"} {
		if got := strings.Contains(out.String(), want); got != (want != "FAIL") {
			t.Errorf("output contains %q: %v", want, got)
		}
	}
}

// TestCheckRun: a check is retried until it passes or its timeout, and
// its error says for how long it failed; a once check runs one time.
func TestCheckRun(t *testing.T) {
	failUntil := func(n int) (func(context.Context) error, *int) {
		calls := 0
		return func(context.Context) error {
			calls++
			if calls < n {
				return errors.New("not yet")
			}
			return nil
		}, &calls
	}
	for _, tc := range []struct {
		name      string
		once      bool
		timeout   time.Duration
		passAt    int
		wantErr   string
		wantCalls func(int) bool
	}{
		{name: "passes at once", timeout: time.Second, passAt: 1, wantCalls: func(n int) bool { return n == 1 }},
		{name: "passes on the third try", timeout: 10 * time.Second, passAt: 3, wantCalls: func(n int) bool { return n == 3 }},
		{name: "times out", timeout: 300 * time.Millisecond, passAt: 1 << 30, wantErr: "still failing after 300ms: not yet",
			wantCalls: func(n int) bool { return n >= 2 }},
		{name: "once fails without a retry", once: true, passAt: 2, wantErr: "not yet", wantCalls: func(n int) bool { return n == 1 }},
	} {
		t.Run(tc.name, func(t *testing.T) {
			probe, calls := failUntil(tc.passAt)
			err := check{name: tc.name, timeout: tc.timeout, once: tc.once, probe: probe}.run(t.Context())
			if tc.wantErr == "" && err != nil || tc.wantErr != "" && (err == nil || err.Error() != tc.wantErr) {
				t.Errorf("err = %v, want %q", err, tc.wantErr)
			}
			if !tc.wantCalls(*calls) {
				t.Errorf("%d calls", *calls)
			}
		})
	}
}

// TestOfficeResolver: the office's resolver answers its own names and the
// stand-in internet, and NXDOMAIN for the rest (intranet.corp.example
// included: only Gateway DNS's override knows it).
func TestOfficeResolver(t *testing.T) {
	for _, tc := range []struct {
		name  string
		rcode int
		addr  string
	}{
		{"server.corp.example.", dns.RcodeSuccess, "10.0.0.5"},
		{"WWW.Example.COM.", dns.RcodeSuccess, publicAddr},
		{"example.com.", dns.RcodeSuccess, publicAddr},
		{overrideName + ".", dns.RcodeNameError, ""},
		{"notexample.com.", dns.RcodeNameError, ""},
	} {
		q := new(dns.Msg)
		q.SetQuestion(tc.name, dns.TypeA)
		w := &recorder{}
		officeResolver("10.0.0.5")(w, q)
		if w.m == nil || w.m.Rcode != tc.rcode {
			t.Errorf("%s: %v, want rcode %d", tc.name, w.m, tc.rcode)
			continue
		}
		var got string
		if len(w.m.Answer) == 1 {
			got = w.m.Answer[0].(*dns.A).A.String()
		}
		if got != tc.addr {
			t.Errorf("%s = %q, want %q", tc.name, got, tc.addr)
		}
	}
}

// recorder is a dns.ResponseWriter that keeps the reply.
type recorder struct {
	dns.ResponseWriter
	m *dns.Msg
}

func (r *recorder) WriteMsg(m *dns.Msg) error { r.m = m; return nil }
