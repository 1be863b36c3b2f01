//go:build linux

package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/mail/smtptest"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// alertHook is a local receiver of alerts: a webhook at /hook (events
// noted as rule, prefix and alert_event) and a PagerDuty-Events-v2-shaped
// endpoint at /v2/enqueue (noted as "pagerduty", the action, the rule).
type alertHook struct {
	mu     sync.Mutex
	events []string
}

func (h *alertHook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m struct {
		Data        struct{ Prefix, Rule string }
		AlertEvent  string `json:"alert_event"`
		RoutingKey  string `json:"routing_key"`
		EventAction string `json:"event_action"`
		DedupKey    string `json:"dedup_key"`
		Payload     struct {
			Source, Severity, Summary, Group string
		}
	}
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	var e string
	switch r.URL.Path {
	case "/hook":
		e = m.Data.Rule + " " + m.Data.Prefix + " " + m.AlertEvent
	case "/v2/enqueue":
		if m.RoutingKey != pdKey || m.DedupKey == "" || (m.EventAction == "trigger" && (m.Payload.Source != "ams-office-1" || m.Payload.Summary == "")) {
			http.Error(w, `{"status":"invalid event"}`, http.StatusBadRequest)
			return
		}
		e = "pagerduty " + m.EventAction + " " + m.Payload.Group
		w.WriteHeader(http.StatusAccepted)
	default:
		http.NotFound(w, r)
		return
	}
	h.mu.Lock()
	h.events = append(h.events, e)
	h.mu.Unlock()
}

// pdKey is the test's PagerDuty integration key.
const pdKey = "0123456789abcdef0123456789abcdef"

func (h *alertHook) seen(e string) error {
	h.mu.Lock()
	defer h.mu.Unlock()
	for _, x := range h.events {
		if x == e {
			return nil
		}
	}
	return fmt.Errorf("no %q among %v", e, h.events)
}

// TestFlowAnalyticsThroughGateway runs the gateway with flow ingest, the
// analytics store and an alert rule, no Logpush: the office server, as
// another router would, runs Debian's softflowd on its link to a branch
// network and exports IPFIX to the gateway's LAN address while hping3
// floods a branch host from it (traffic the gateway itself never sees, so only the
// ingested flows can fire the rule). The rule fires to a webhook
// receiver, a PagerDuty-Events-v2-shaped one and Debian's aiosmtpd (over
// STARTTLS), /api/v1/flows on the admin socket names the flooded address
// and the exporter as the top destination, /api/v1/flows/alerts holds the
// history, the alert resolves when the flood stops, and a Logpush job
// writes both events as flow_alerts records to a file.
func TestFlowAnalyticsThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testkit.NeedTool(t, "softflowd", "softflowd")
	testkit.NeedTool(t, "hping3", "hping3")
	smtptest.Need(t)
	s := newSite(t)
	h := &alertHook{}
	recv, err := s.ra.GW.ServeHTTP("127.0.0.1:0", h)
	must(t, err)
	// The mail sink: Debian's aiosmtpd on the gateway's loopback, STARTTLS
	// with a certificate the configuration's ca_file trusts.
	cert := smtptest.NewCert(t, s.dir)
	certFile := cert.CertFile
	smtp := smtptest.Start(t, s.ra.GW, 2525, &cert)
	keyFile := filepath.Join(s.dir, "pagerduty-key")
	alertsFile := filepath.Join(s.dir, "alerts.ndjson")
	must(t, os.WriteFile(keyFile, []byte(pdKey+"\n"), 0o600))
	s.writeFlowConfig(fmt.Sprintf(`  ingest:
    listen: ["10.0.0.1:2055"]
  analytics:
    retention: 1h
  alerts:
    rules:
      - name: branch-flood
        prefixes: [10.9.0.2/32]
        bits_per_second: 200000
        duration: 10s
      - name: quiet
        prefixes: [10.0.0.99/32]
        packets_per_second: 1
        duration: 10s
    webhooks:
      - url: %s/hook
    pagerduty:
      - routing_key_file: %s
        url: %s/v2/enqueue
    email:
      - server: 127.0.0.1:2525
        from: edgegw <edgegw@office.example>
        to: [noc@office.example]
        ca_file: %s
logpush:
  - name: alerts
    dataset: flow_alerts
    destination: file://%s
    max_upload_interval: 1s
`, recv.URL, keyFile, recv.URL, certFile, alertsFile))
	s.start()
	branch, err := s.lab.NS("branch")
	must(t, err)
	must(t, s.lab.Link(s.ra.LAN, "eth9", "10.9.0.1/24", branch, "eth0", "10.9.0.2/24"))

	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl")
	sf, err := s.ra.LAN.Start("softflowd", "-d", "-v", "10", "-i", "eth9", "-n", "10.0.0.1:2055",
		"-c", ctl, "-p", filepath.Join(dir, "pid"), "udp and dst port 7777")
	must(t, err)
	defer sf.Stop()
	netlab.Eventually(t, 10*time.Second, "softflowd control socket", func() error {
		_, err := os.Stat(ctl)
		return err
	})

	// The flood: hping3 from the office server, 1000 UDP datagrams a
	// second of 200 bytes (about 1.8 Mbit/s), softflowd told to export
	// what it holds every second.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rx, err := branch.ListenPacket("udp", "10.9.0.2:7777") // no ICMP errors back
	must(t, err)
	defer rx.Close()
	flood, err := s.ra.LAN.Start("hping3", "--udp", "-p", "7777", "-d", "200", "-i", "u1000", "-q", "10.9.0.2")
	must(t, err)
	defer flood.Stop()
	exporting := make(chan struct{})
	go func() { // owned by this test: ends with ctx
		defer close(exporting)
		tick := time.NewTicker(time.Second)
		defer tick.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-tick.C:
				s.ra.LAN.Exec(ctx, "softflowctl", "-c", ctl, "expire-all")
			}
		}
	}()
	defer func() { cancel(); <-exporting }()
	stopFlood := func() {
		if err := flood.Stop(); err != nil {
			t.Logf("hping3: %v", err)
		}
	}

	netlab.Eventually(t, 90*time.Second, "the alert at the webhook", func() error {
		if err := h.seen("branch-flood 10.9.0.2/32 ALERT_STATE_EVENT_START"); err != nil {
			return err
		}
		if err := h.seen("pagerduty trigger branch-flood"); err != nil {
			return err
		}
		if !strings.Contains(smtp.Output(), "Subject: [edgegw] Flow alert: branch-flood firing on 10.9.0.2/32") {
			return fmt.Errorf("no mail yet")
		}
		return nil
	})

	q := url.Values{"group_by": {"dst,exporter,source"}, "top": {"1"}, "protocol": {"udp"}}
	var res struct {
		Groups []struct {
			Key     map[string]string
			Packets uint64
		}
	}
	body := s.get("/api/v1/flows?" + q.Encode())
	must(t, json.Unmarshal([]byte(body), &res))
	if len(res.Groups) != 1 || res.Groups[0].Key["dst"] != "10.9.0.2" || res.Groups[0].Key["exporter"] != "10.0.0.5" ||
		res.Groups[0].Key["source"] != "ipfix" || res.Groups[0].Packets < 1000 {
		t.Errorf("top destination: %s", body)
	}
	if body := s.get("/api/v1/flows?group_by=colour"); !strings.Contains(body, `cannot group by \"colour\"`) {
		t.Errorf("a bad query: %s", body)
	}

	stopFlood()
	netlab.Eventually(t, 90*time.Second, "the resolve at the webhook", func() error {
		if err := h.seen("branch-flood 10.9.0.2/32 ALERT_STATE_EVENT_END"); err != nil {
			return err
		}
		if err := h.seen("pagerduty resolve "); err != nil {
			return err
		}
		if !strings.Contains(smtp.Output(), "Subject: [edgegw] Flow alert: branch-flood resolved on 10.9.0.2/32") {
			return fmt.Errorf("no resolve mail yet")
		}
		return nil
	})
	if i, j := strings.Index(smtp.Output(), "STARTTLS"), strings.Index(smtp.Output(), "MAIL FROM"); i < 0 || j < i {
		t.Errorf("mail sent before STARTTLS:\n%s", smtp.Output())
	}
	var hist struct {
		Events []struct{ Rule, Prefix, State string }
	}
	body = s.get("/api/v1/flows/alerts")
	must(t, json.Unmarshal([]byte(body), &hist))
	if len(hist.Events) != 2 || hist.Events[0].State != "firing" || hist.Events[1].State != "resolved" || hist.Events[0].Rule != "branch-flood" {
		t.Errorf("alert history: %s", body)
	}
	// The same history as Logpush's flow_alerts dataset, in a file.
	netlab.Eventually(t, 20*time.Second, "flow_alerts records in the Logpush file", func() error {
		b, err := os.ReadFile(alertsFile)
		if err != nil {
			return err
		}
		var recs []map[string]any
		for _, line := range strings.Split(strings.TrimSpace(string(b)), "\n") {
			var r map[string]any
			if err := json.Unmarshal([]byte(line), &r); err != nil {
				return fmt.Errorf("%v: %s", err, line)
			}
			recs = append(recs, r)
		}
		if len(recs) != 2 {
			return fmt.Errorf("%d records: %s", len(recs), b)
		}
		for i, want := range []struct{ event, state string }{{"ALERT_STATE_EVENT_START", "firing"}, {"ALERT_STATE_EVENT_END", "resolved"}} {
			r := recs[i]
			if r["AlertEvent"] != want.event || r["State"] != want.state || r["PolicyName"] != "branch-flood" || r["Prefix"] != "10.9.0.2/32" ||
				r["AlertType"] != "fbm_volumetric_attack" || r["ColoName"] != "ams-office-1" || r["AlertCorrelationID"] != recs[0]["AlertCorrelationID"] ||
				r["ThresholdBitsPerSecond"] != float64(200000) || r["DurationSeconds"] != float64(10) {
				t.Errorf("flow_alerts record %d: %v", i, r)
			}
		}
		if bps, _ := recs[0]["BitsPerSecond"].(float64); bps < 200000 {
			t.Errorf("the firing record's BitsPerSecond %v is below the threshold", recs[0]["BitsPerSecond"])
		}
		return nil
	})
	if m := s.get("/metrics"); !strings.Contains(m, `edgegw_flow_alert_events_total{state="resolved"} 1`) ||
		!strings.Contains(m, `edgegw_flow_alert_notifications_total{result="delivered"} 6`) {
		t.Errorf("metrics lack the alert's events and deliveries")
	}
}
