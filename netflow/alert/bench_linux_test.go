//go:build linux

package alert_test

import (
	"context"
	"fmt"
	"net"
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
)

// BenchmarkAlertLatency measures how long a flood takes to reach a
// webhook as an alert, end to end: Debian's softflowd exports IPFIX from
// a namespace (told to export what it holds every second, as a router
// with a 1 s active timeout would), edgegw's ingest listener decodes it,
// the engine judges a 10 s rule and posts the webhook. It reports the
// time from the flood's first datagram to the webhook's arrival, that
// time less the rule's duration (the goal: at most 10 s), and the time
// from the flood's end to the resolve.
//
//	go test -run '^$' -bench AlertLatency -benchtime 1x ./netflow/alert/
func BenchmarkAlertLatency(b *testing.B) {
	testkit.NeedTool(b, "softflowd", "softflowd")
	const duration = 10 * time.Second
	lab := netlab.NewT(b)
	exp, err := lab.NS("exp")
	if err != nil {
		b.Fatal(err)
	}
	col, err := lab.NS("col")
	if err != nil {
		b.Fatal(err)
	}
	if err := lab.Link(exp, "lan0", "10.82.0.1/24", col, "lan1", "10.82.0.2/24"); err != nil {
		b.Fatal(err)
	}
	var mu sync.Mutex
	arrived := map[string]time.Time{} // alert_event → first arrival
	h := &hook{}
	receiver := httptest.NewServer(h)
	defer receiver.Close()
	rules := []alert.Rule{{Name: "flooded", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.82.0.2/32")}, BitsPerSecond: 200_000, Duration: duration}}
	eng, err := alert.New(alert.Options{Rules: rules, Webhooks: []alert.Webhook{{URL: receiver.URL}}, RetryDelay: 100 * time.Millisecond})
	if err != nil {
		b.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	defer cancel()
	runDone := make(chan error, 1)
	go func() { runDone <- eng.Run(ctx) }() // stopped by cancel below
	defer func() { cancel(); <-runDone }()
	srv, err := ingest.New(ingest.Options{Listen: []string{"10.82.0.2:0"}, Sink: eng, ListenPacket: col.ListenPacket})
	if err != nil {
		b.Fatal(err)
	}
	defer srv.Close()
	port := srv.Addrs()[0].(*net.UDPAddr).Port
	rx, err := col.ListenPacket("udp", "10.82.0.2:7777")
	if err != nil {
		b.Fatal(err)
	}
	defer rx.Close()
	dir := b.TempDir()
	ctl := filepath.Join(dir, "ctl")
	sf, err := exp.Start("softflowd", "-d", "-v", "10", "-i", "lan0", "-n", "10.82.0.2:"+strconv.Itoa(port),
		"-c", ctl, "-p", filepath.Join(dir, "pid"), "udp and dst port 7777")
	if err != nil {
		b.Fatal(err)
	}
	defer sf.Stop()
	testkit.Eventually(b, 10*time.Second, "softflowd control socket", func() error {
		_, err := os.Stat(ctl)
		return err
	})
	c, err := exp.DialContext(ctx, "udp", "10.82.0.2:7777")
	if err != nil {
		b.Fatal(err)
	}
	defer c.Close()
	// seen notes when each event first reached the webhook.
	seen := func(event string) error {
		for _, e := range h.events() {
			if e == "10.82.0.2/32 "+event {
				mu.Lock()
				if _, ok := arrived[event]; !ok {
					arrived[event] = time.Now()
				}
				mu.Unlock()
				return nil
			}
		}
		return fmt.Errorf("no %s yet; alert stats %+v; ingest %+v", event, eng.Stats(), srv.Stats())
	}
	var fire, resolve time.Duration
	for b.Loop() {
		h.mu.Lock()
		h.got = nil
		h.mu.Unlock()
		mu.Lock()
		clear(arrived)
		mu.Unlock()
		// The flood: 200-byte datagrams, 20 every 10 ms (about 2.6
		// Mbit/s on the wire), softflowd exporting every second.
		stop, flooding := make(chan struct{}), make(chan struct{})
		start := time.Now()
		go func() { // owned by this iteration: ends on stop
			defer close(flooding)
			tick := time.NewTicker(10 * time.Millisecond)
			defer tick.Stop()
			next := time.Now().Add(time.Second)
			for {
				for range 20 {
					c.Write(make([]byte, 200))
				}
				if time.Now().After(next) {
					exp.Exec(ctx, "softflowctl", "-c", ctl, "expire-all")
					next = next.Add(time.Second)
				}
				select {
				case <-stop:
					return
				case <-tick.C:
				}
			}
		}()
		// Poll often: the arrival time is the measurement.
		for deadline := time.Now().Add(2 * time.Minute); seen("ALERT_STATE_EVENT_START") != nil; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal(seen("ALERT_STATE_EVENT_START"))
			}
		}
		mu.Lock()
		fire += arrived["ALERT_STATE_EVENT_START"].Sub(start)
		mu.Unlock()
		close(stop)
		<-flooding
		stopped := time.Now()
		exp.Exec(ctx, "softflowctl", "-c", ctl, "expire-all")
		for deadline := time.Now().Add(2 * time.Minute); seen("ALERT_STATE_EVENT_END") != nil; time.Sleep(20 * time.Millisecond) {
			if time.Now().After(deadline) {
				b.Fatal(seen("ALERT_STATE_EVENT_END"))
			}
		}
		mu.Lock()
		resolve += arrived["ALERT_STATE_EVENT_END"].Sub(stopped)
		mu.Unlock()
	}
	n := float64(b.N)
	b.ReportMetric(fire.Seconds()/n, "fire-s")
	b.ReportMetric((fire.Seconds()/n)-duration.Seconds(), "over-duration-s")
	b.ReportMetric(resolve.Seconds()/n, "resolve-s")
}
