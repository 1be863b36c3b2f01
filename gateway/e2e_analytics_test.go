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
// network and exports IPFIX to the gateway's LAN address while it floods
// a branch host (traffic the gateway itself never sees, so only the
// ingested flows can fire the rule). The rule fires to a webhook
// receiver and a PagerDuty-Events-v2-shaped one, /api/v1/flows on the admin socket names the flooded address
// and the exporter as the top destination, /api/v1/flows/alerts holds the
// history, and the alert resolves when the flood stops.
func TestFlowAnalyticsThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testkit.NeedTool(t, "softflowd", "softflowd")
	s := newSite(t)
	h := &alertHook{}
	recv, err := s.ra.GW.ServeHTTP("127.0.0.1:0", h)
	must(t, err)
	keyFile := filepath.Join(s.dir, "pagerduty-key")
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
`, recv.URL, keyFile, recv.URL))
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

	// The flood: 20 datagrams of 200 bytes every 10 ms from the office
	// server (about 1.8 Mbit/s), softflowd exporting every second.
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	rx, err := branch.ListenPacket("udp", "10.9.0.2:7777") // no ICMP errors back
	must(t, err)
	defer rx.Close()
	c, err := s.ra.LAN.DialContext(ctx, "udp", "10.9.0.2:7777")
	must(t, err)
	defer c.Close()
	stop := make(chan struct{})
	flooding := make(chan struct{})
	go func() { // owned by this test: ends on stop
		defer close(flooding)
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		for i := 0; ; i++ {
			select {
			case <-stop:
				return
			case <-tick.C:
			}
			for range 20 {
				c.Write(make([]byte, 200))
			}
			if i%100 == 0 {
				s.ra.LAN.Exec(ctx, "softflowctl", "-c", ctl, "expire-all")
			}
		}
	}()
	stopped := false
	stopFlood := func() {
		if !stopped {
			stopped = true
			close(stop)
			<-flooding
		}
	}
	defer stopFlood()

	netlab.Eventually(t, 90*time.Second, "the alert at the webhook", func() error {
		if err := h.seen("branch-flood 10.9.0.2/32 ALERT_STATE_EVENT_START"); err != nil {
			return err
		}
		return h.seen("pagerduty trigger branch-flood")
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
	s.ra.LAN.Exec(ctx, "softflowctl", "-c", ctl, "expire-all")
	netlab.Eventually(t, 90*time.Second, "the resolve at the webhook", func() error {
		if err := h.seen("branch-flood 10.9.0.2/32 ALERT_STATE_EVENT_END"); err != nil {
			return err
		}
		return h.seen("pagerduty resolve ")
	})
	var hist struct {
		Events []struct{ Rule, Prefix, State string }
	}
	body = s.get("/api/v1/flows/alerts")
	must(t, json.Unmarshal([]byte(body), &hist))
	if len(hist.Events) != 2 || hist.Events[0].State != "firing" || hist.Events[1].State != "resolved" || hist.Events[0].Rule != "branch-flood" {
		t.Errorf("alert history: %s", body)
	}
	if m := s.get("/metrics"); !strings.Contains(m, `edgegw_flow_alert_events_total{state="resolved"} 1`) ||
		!strings.Contains(m, `edgegw_flow_alert_notifications_total{result="delivered"} 4`) {
		t.Errorf("metrics lack the alert's events and deliveries")
	}
}
