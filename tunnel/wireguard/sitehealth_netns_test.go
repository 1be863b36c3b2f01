package wireguard

import (
	"fmt"
	"io"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel"
	"github.com/edgegw/edgegw/tunnel/health"
)

// TestSitePeerQuality checks a WireGuard site-to-site peer's health check
// against a real branch (Debian's wireguard-go in another namespace, its
// kernel answering the probes): the peer's status gets healthy with
// latency, jitter, loss and grades; traffic through the tunnel gives
// latency under load; 50 % loss of the probes, made by nftables on the
// branch (numgen), shows in the loss ratio and lowers the scores, which
// come back when the impairment is lifted; the metrics carry the same;
// a peer without a health check has none, and removing the check, then
// the device, leaves no goroutine behind.
func TestSitePeerQuality(t *testing.T) {
	l := newLab(t)
	testkit.NeedTool(t, "nft", "nftables")
	gwIf, brIf := "ewg"+l.suffix, "ebr"+l.suffix
	port := 21000 + int(l.suffix[0])*50 + int(l.suffix[1])
	branchPriv, _ := GeneratePrivateKey()
	cfg := Config{
		Interface:  gwIf,
		ListenPort: port,
		Address:    netip.MustParsePrefix("100.96.0.1/12"),
		Peers: []Peer{
			{Name: "branch", PublicKey: branchPriv.PublicKey(), AllowedIPs: pfx("100.96.0.20/32", "10.20.0.0/24"),
				HealthCheck: &tunnel.HealthCheck{Rate: "high"}},
			{Name: "laptop", PublicKey: testKeyC, AllowedIPs: pfx("100.96.0.21/32")},
		},
	}
	baseline := runtime.NumGoroutine()
	var d *Device
	var err error
	l.inNetns(l.a, func() { d, err = New(cfg, Options{StateDir: t.TempDir(), Logger: testLogger(t)}) })
	if err != nil {
		t.Fatal(err)
	}
	defer d.Close()

	// The branch router: stock wireguard-go, configured with wg.
	l.startStockClient(l.b, brIf)
	dir := t.TempDir()
	keyFile := filepath.Join(dir, "branch.key")
	if err := os.WriteFile(keyFile, []byte(branchPriv.String()+"\n"), 0o600); err != nil {
		t.Fatal(err)
	}
	l.mustExec(l.b, "wg", "set", brIf, "private-key", keyFile, "peer", d.PublicKey().String(),
		"endpoint", fmt.Sprintf("192.0.2.1:%d", port), "allowed-ips", "100.96.0.0/12", "persistent-keepalive", "1")
	l.mustExec(l.b, "ip", "addr", "add", "100.96.0.20/12", "dev", brIf)
	l.mustExec(l.b, "ip", "link", "set", brIf, "up")

	peer := func() PeerStatus {
		for _, p := range d.Status().Peers {
			if p.Name == "branch" {
				return p
			}
		}
		return PeerStatus{}
	}
	var clean health.Scores
	testkit.Eventually(t, 30*time.Second, "the branch is healthy with grades", func() error {
		h := peer().Health
		switch {
		case h == nil:
			return fmt.Errorf("no health in the branch's status (is it up? %+v)", peer())
		case h.State != tunnel.Healthy || h.Target != netip.MustParseAddr("100.96.0.20"):
			return fmt.Errorf("state %s, target %s", h.State, h.Target)
		case h.Quality.Scores == nil || h.Quality.Loss > 0.05 || h.Quality.Latency <= 0:
			return fmt.Errorf("quality %+v", h.Quality)
		}
		clean = *h.Quality.Scores
		return nil
	})
	for _, p := range d.Status().Peers {
		if p.Name != "branch" && p.Health != nil {
			t.Errorf("peer %s without a health_check has health %+v", p.Name, p.Health)
		}
	}
	label := `tunnel="` + gwIf + `/branch"`
	if m := gather(t, d); !strings.Contains(m, "edgegw_tunnel_latency_seconds{"+label+"}") ||
		!strings.Contains(m, `edgegw_tunnel_quality_grade{experience="gaming",`+label+"}") ||
		!strings.Contains(m, `edgegw_tunnel_health_state{state="healthy",`+label+"} 1") {
		t.Errorf("metrics lack the branch's quality:\n%s", m)
	}

	t.Run("latency under load", func(t *testing.T) {
		stop := blast(t, l)
		defer stop()
		testkit.Eventually(t, 30*time.Second, "loaded samples", func() error {
			if q := peer().Health.Quality; q.LoadedSamples == 0 || q.LoadedLatency <= 0 {
				return fmt.Errorf("quality %+v", q)
			}
			return nil
		})
		if m := gather(t, d); !strings.Contains(m, "edgegw_tunnel_loaded_latency_seconds{"+label+"}") {
			t.Errorf("no loaded latency metric:\n%s", m)
		}
	})

	t.Run("loss lowers the grades, and they come back", func(t *testing.T) {
		l.mustExec(l.b, "nft", "add table inet impair")
		l.mustExec(l.b, "nft", "add chain inet impair in { type filter hook input priority -10 ; }")
		l.mustExec(l.b, "nft", "add rule inet impair in iifname "+brIf+" icmp type echo-request numgen random mod 100 < 50 counter drop")
		testkit.Eventually(t, 30*time.Second, "loss seen", func() error {
			q := peer().Health.Quality
			// The rubric is lenient with loss alone (a clean, fast path
			// keeps "great" for gaming at 40 %): the points show it.
			if q.Loss < 0.25 || q.Scores == nil || q.Scores.GamingPoints >= clean.GamingPoints ||
				q.Scores.VideoCallsPoints >= clean.VideoCallsPoints || q.Scores.StreamingPoints >= clean.StreamingPoints {
				return fmt.Errorf("quality %+v scores %+v (clean %+v)", q, q.Scores, clean)
			}
			return nil
		})
		if m := gather(t, d); !strings.Contains(m, "edgegw_tunnel_loss_ratio{"+label+"} 0.") {
			t.Errorf("the loss metric does not show the loss:\n%s", m)
		}
		l.mustExec(l.b, "nft", "delete table inet impair")
		testkit.Eventually(t, 40*time.Second, "loss gone", func() error {
			if q := peer().Health.Quality; q.Loss > 0.05 || q.Scores == nil || q.Scores.GamingPoints < clean.GamingPoints-5 {
				return fmt.Errorf("quality %+v scores %+v (clean %+v)", q, q.Scores, clean)
			}
			return nil
		})
	})

	t.Run("removing the check", func(t *testing.T) {
		off := *cfg.Clone()
		off.Peers[0].HealthCheck = nil
		if err := d.Set(off); err != nil {
			t.Fatal(err)
		}
		if h := peer().Health; h != nil {
			t.Errorf("health after its removal: %+v", h)
		}
		if m := gather(t, d); strings.Contains(m, label) {
			t.Errorf("metrics of a removed check:\n%s", m)
		}
	})
	d.Close()
	noLeak(t, baseline)
}

// gather is the text of the device's health metrics.
func gather(t *testing.T, d *Device) string {
	t.Helper()
	reg := prometheus.NewRegistry()
	reg.MustRegister(d.HealthCollector())
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	var b strings.Builder
	for _, mf := range mfs {
		for _, m := range mf.GetMetric() {
			var labels []string
			for _, lp := range m.GetLabel() {
				labels = append(labels, fmt.Sprintf("%s=%q", lp.GetName(), lp.GetValue()))
			}
			v := m.GetGauge().GetValue() + m.GetCounter().GetValue()
			fmt.Fprintf(&b, "%s{%s} %v\n", mf.GetName(), strings.Join(labels, ","), v)
		}
	}
	return b.String()
}

// blast sends TCP from the gateway's namespace to the branch through the
// tunnel until stop, so that the tunnel is under load.
func blast(t *testing.T, l *lab) (stop func()) {
	var ln net.Listener
	var err error
	l.inNetns(l.b, func() { ln, err = net.Listen("tcp", "100.96.0.20:0") })
	if err != nil {
		t.Fatal(err)
	}
	var c net.Conn
	l.inNetns(l.a, func() { c, err = net.DialTimeout("tcp", ln.Addr().String(), 10*time.Second) })
	if err != nil {
		ln.Close()
		t.Fatal(err)
	}
	var wg sync.WaitGroup
	// Owned by the test: both end when stop closes the connection and
	// the listener.
	wg.Go(func() {
		s, err := ln.Accept()
		if err != nil {
			return
		}
		defer s.Close()
		io.Copy(io.Discard, s)
	})
	wg.Go(func() {
		buf := make([]byte, 32<<10)
		for {
			if _, err := c.Write(buf); err != nil {
				return
			}
		}
	})
	return func() {
		c.Close()
		ln.Close()
		wg.Wait()
	}
}
