package health

import (
	"context"
	"encoding/binary"
	"fmt"
	"net/netip"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel"
)

func mustPrefix(s string) netip.Prefix { return netip.MustParsePrefix(s) }

// loopPath is a fake tunnel whose far end answers like a Linux peer:
// echo replies addressed to us are routed back, echo requests to the
// peer are answered. up switches the path on and off.
type loopPath struct {
	mu      sync.Mutex
	handler func([]byte) bool
	up      bool
	seen    []byte // last packet injected
}

func (p *loopPath) SetProbeHandler(f func([]byte) bool) {
	p.mu.Lock()
	p.handler = f
	p.mu.Unlock()
}

func (p *loopPath) setUp(up bool) { p.mu.Lock(); p.up = up; p.mu.Unlock() }

func (p *loopPath) Inject(pkt []byte) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	p.seen = append([]byte(nil), pkt...)
	if !p.up || p.handler == nil {
		return nil
	}
	back := append([]byte(nil), pkt...)
	if back[20] == 8 { // echo request: the peer answers
		copy(back[12:16], pkt[16:20])
		copy(back[16:20], pkt[12:16])
		back[20] = 0
		binary.BigEndian.PutUint16(back[22:], 0)
		binary.BigEndian.PutUint16(back[22:], checksum(back[20:]))
	}
	go p.handler(back)
	return nil
}

func TestCheckerRun(t *testing.T) {
	for _, typ := range []string{"reply", "request"} {
		t.Run(typ, func(t *testing.T) {
			path := &loopPath{up: true}
			changes := make(chan tunnel.State, 16)
			c := New("t1", tunnel.HealthCheck{Type: typ, Rate: "high"}, mustPrefix("10.200.1.0/31"), path,
				Options{OnChange: func(_ string, s tunnel.State) { changes <- s }})
			ctx, cancel := context.WithCancel(t.Context())
			done := make(chan struct{})
			go func() { c.Run(ctx); close(done) }()
			defer func() { cancel(); <-done }()

			waitSent := func(n uint64) {
				t.Helper()
				testkit.Eventually(t, 5*time.Second, fmt.Sprintf("%d probes sent", n), func() error {
					if s := c.Status().Sent; s < n {
						return fmt.Errorf("%d sent", s)
					}
					return nil
				})
			}
			waitSent(3)
			if s := c.State(); s != tunnel.Healthy {
				t.Fatalf("state %s with a working path", s)
			}
			path.mu.Lock()
			pkt := path.seen
			path.mu.Unlock()
			src, dst := netip.AddrFrom4([4]byte(pkt[12:16])), netip.AddrFrom4([4]byte(pkt[16:20]))
			wantSrc, wantDst, wantType := "10.200.1.1", "10.200.1.0", byte(0)
			if typ == "request" {
				wantSrc, wantDst, wantType = wantDst, wantSrc, 8
			}
			if src.String() != wantSrc || dst.String() != wantDst || pkt[20] != wantType || checksum(pkt[20:]) != 0 || checksum(pkt[:20]) != 0 {
				t.Errorf("probe %s → %s type %d", src, dst, pkt[20])
			}

			path.setUp(false)
			start := time.Now()
			for s := range changes {
				if s == tunnel.Down {
					break
				}
			}
			if d := time.Since(start); d > 5*Rates["high"].DetectionTime(DefaultThresholds) { // generous: timing is the e2e test's job
				t.Errorf("down after %v", d)
			}
			path.setUp(true)
			for s := range changes {
				if s == tunnel.Degraded {
					break
				}
			}
		})
	}
}
