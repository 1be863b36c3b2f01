//go:build linux

package alert_test

import (
	"context"
	"encoding/json"
	"fmt"
	"net"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/netflow/alert"
	"github.com/edgegw/edgegw/netflow/ingest"
	"github.com/edgegw/edgegw/netflow/logpush"
	"github.com/edgegw/edgegw/netflow/store"
)

// tee is the gateway's record stream in small: every record to each sink.
type tee []logpush.Sink

func (t tee) Push(ds string, r logpush.Record) {
	for _, s := range t {
		s.Push(ds, r)
	}
}

// hook is a local webhook receiver.
type hook struct {
	mu  sync.Mutex
	got []map[string]any
}

func (h *hook) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	var m map[string]any
	if err := json.NewDecoder(r.Body).Decode(&m); err != nil {
		http.Error(w, err.Error(), http.StatusBadRequest)
		return
	}
	h.mu.Lock()
	h.got = append(h.got, m)
	h.mu.Unlock()
}

func (h *hook) events() []string {
	h.mu.Lock()
	defer h.mu.Unlock()
	var out []string
	for _, m := range h.got {
		data, _ := m["data"].(map[string]any)
		out = append(out, fmt.Sprintf("%v %v", data["prefix"], m["alert_event"]))
	}
	return out
}

// TestSoftflowdFlood runs Debian's softflowd exporting IPFIX from a
// namespace while the test floods a LAN address across it: the flows
// arrive through the ingest listener, the rule for that address fires to
// a local webhook receiver while the rule for another address stays
// quiet, the store's top destination is the flooded address, and the
// alert resolves after the flood stops.
func TestSoftflowdFlood(t *testing.T) {
	testkit.NeedTool(t, "softflowd", "softflowd")
	lab := netlab.NewT(t)
	exp, err := lab.NS("exp")
	if err != nil {
		t.Fatal(err)
	}
	col, err := lab.NS("col")
	if err != nil {
		t.Fatal(err)
	}
	if err := lab.Link(exp, "lan0", "10.81.0.1/24", col, "lan1", "10.81.0.2/24"); err != nil {
		t.Fatal(err)
	}

	h := &hook{}
	receiver := httptest.NewServer(h)
	defer receiver.Close()
	// 200 kbit/s in every second of 10: the flood below sends about
	// 1.8 Mbit/s, so a second the loaded CI machine stalls the sender for
	// most of does not hold the alert off.
	rules := []alert.Rule{
		{Name: "flooded", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.81.0.2/32")}, BitsPerSecond: 200_000, Duration: 10 * time.Second},
		{Name: "quiet", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.81.0.99/32")}, PacketsPerSecond: 1, Duration: 10 * time.Second},
	}
	eng, err := alert.New(alert.Options{Rules: rules, Webhooks: []alert.Webhook{{URL: receiver.URL}}, RetryDelay: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- eng.Run(ctx) }() // stopped by cancel below
	defer func() { cancel(); <-runDone }()

	st, err := store.New(store.Options{})
	if err != nil {
		t.Fatal(err)
	}
	srv, err := ingest.New(ingest.Options{Listen: []string{"10.81.0.2:0"}, Sink: tee{st, eng}, ListenPacket: col.ListenPacket})
	if err != nil {
		t.Fatal(err)
	}
	defer srv.Close()
	port := srv.Addrs()[0].(*net.UDPAddr).Port

	rx, err := col.ListenPacket("udp", "10.81.0.2:7777")
	if err != nil {
		t.Fatal(err)
	}
	defer rx.Close()
	dir := t.TempDir()
	ctl := filepath.Join(dir, "ctl")
	sf, err := exp.Start("softflowd", "-d", "-v", "10", "-i", "lan0", "-n", "10.81.0.2:"+strconv.Itoa(port),
		"-c", ctl, "-p", filepath.Join(dir, "pid"), "udp and dst port 7777")
	if err != nil {
		t.Fatal(err)
	}
	defer sf.Stop()
	testkit.Eventually(t, 10*time.Second, "softflowd control socket", func() error {
		_, err := os.Stat(ctl)
		return err
	})

	// The flood: 200-byte datagrams, 20 every 10 ms, with softflowd told
	// to export what it holds every second, until stop.
	c, err := exp.DialContext(ctx, "udp", "10.81.0.2:7777")
	if err != nil {
		t.Fatal(err)
	}
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
				exp.Exec(ctx, "softflowctl", "-c", ctl, "expire-all")
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

	testkit.Eventually(t, 90*time.Second, "the flood's alert at the webhook", func() error {
		for _, e := range h.events() {
			if e == "10.81.0.2/32 ALERT_STATE_EVENT_START" {
				return nil
			}
		}
		return fmt.Errorf("events %v; alert stats %+v; ingest %+v", h.events(), eng.Stats(), srv.Stats())
	})
	res, err := st.Query(store.Query{From: time.Now().Add(-time.Hour), To: time.Now().Add(time.Minute), GroupBy: []store.Dimension{store.DimDst}, Top: 1})
	if err != nil {
		t.Fatal(err)
	}
	if len(res.Groups) != 1 || res.Groups[0].Key[store.DimDst] != "10.81.0.2" || res.Groups[0].Packets < 1000 {
		t.Errorf("top destination: %+v", res.Groups)
	}

	stopFlood()
	exp.Exec(ctx, "softflowctl", "-c", ctl, "expire-all")
	testkit.Eventually(t, 90*time.Second, "the resolve at the webhook", func() error {
		for _, e := range h.events() {
			if e == "10.81.0.2/32 ALERT_STATE_EVENT_END" {
				return nil
			}
		}
		return fmt.Errorf("events %v; alert stats %+v", h.events(), eng.Stats())
	})
	for _, e := range h.events() {
		if e != "10.81.0.2/32 ALERT_STATE_EVENT_START" && e != "10.81.0.2/32 ALERT_STATE_EVENT_END" {
			t.Errorf("unexpected event %s", e)
		}
	}
	if n := len(eng.History()); n != 2 {
		t.Errorf("history %+v", eng.History())
	}
}
