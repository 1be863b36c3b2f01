package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/tunnel"
)

// TestWireGuardSitePeerQuality runs edgegw with a WireGuard site-to-site
// peer that has a health check, a branch router on stock wg-quick: the
// peer's latency, jitter, loss and grades reach GET /api/v1/status and
// /metrics as a GRE tunnel's do, and a remote user without a health
// check has none.
func TestWireGuardSitePeerQuality(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	branchKey, branchPub := wgKey(t, ra.User, s.dir, "branch")
	s.peers = []string{fmt.Sprintf(`
      - name: branch
        public_key: %q
        allowed_ips: [100.96.0.20/32, 10.30.0.0/24]
        health_check: {rate: high}`, branchPub)}
	s.writeConfig()
	s.start()
	s.upClient(ra.User, s.lab.ID()+"b", run(t, ra.GW, binary, "peer", "config", "branch", "--config", s.cfg,
		"--endpoint", ra.GWWANAddr.String()+":51820", "--private-key-file", branchKey, "--allowed-ips", "100.96.0.1/32"), "")

	// What the status says of a WireGuard peer (tunnel.State is written
	// as its name).
	type peerStatus struct {
		Name   string `json:"name"`
		Health *struct {
			State   string `json:"state"`
			Quality struct {
				Samples int            `json:"samples"`
				Latency time.Duration  `json:"latency_ns"`
				Jitter  time.Duration  `json:"jitter_ns"`
				Loss    float64        `json:"loss"`
				Scores  map[string]any `json:"scores"`
			} `json:"quality"`
		} `json:"health"`
	}
	branch := func() (*peerStatus, error) {
		var st struct {
			Tunnels []struct {
				WireGuard *struct {
					Peers []peerStatus `json:"peers"`
				} `json:"wireguard"`
			} `json:"tunnels"`
		}
		if err := json.Unmarshal([]byte(s.get("/api/v1/status")), &st); err != nil {
			return nil, err
		}
		for _, tun := range st.Tunnels {
			if tun.WireGuard == nil {
				continue
			}
			for _, p := range tun.WireGuard.Peers {
				if p.Name == "branch" {
					return &p, nil
				}
			}
		}
		return nil, fmt.Errorf("no peer branch in the status")
	}
	netlab.Eventually(t, 40*time.Second, "the branch's quality in /api/v1/status", func() error {
		// The branch's first packet tells the gateway where it is.
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		ra.User.Exec(ctx, "ping", "-c1", "-W1", "100.96.0.1")
		p, err := branch()
		if err != nil {
			return err
		}
		h := p.Health
		switch {
		case h == nil:
			return fmt.Errorf("no health: %+v", p)
		case h.State != tunnel.Healthy.String():
			return fmt.Errorf("state %s", h.State)
		case h.Quality.Scores["video_calls"] == nil || h.Quality.Latency <= 0 || h.Quality.Loss > 0.05:
			return fmt.Errorf("quality %+v", h.Quality)
		}
		return nil
	})
	m := s.get("/metrics")
	label := `tunnel="` + s.wgIf + `/branch"`
	for _, name := range []string{"edgegw_tunnel_latency_seconds", "edgegw_tunnel_jitter_seconds", "edgegw_tunnel_loss_ratio"} {
		if !regexp.MustCompile(`(?m)^` + name + `\{` + regexp.QuoteMeta(label) + `\} `).MatchString(m) {
			t.Errorf("/metrics lacks %s{%s}", name, label)
		}
	}
	if !strings.Contains(m, `edgegw_tunnel_quality_grade{experience="video_calls",`+label+"}") {
		t.Errorf("/metrics lacks the branch's grades")
	}
}
