//go:build linux

package enroll

import (
	"context"
	"errors"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// TestStockWireGuard proves the enrolled configuration works with stock
// WireGuard: edgegw's WireGuard device in one namespace, `edgegw enroll`
// (the Client) on the user's side, then Debian's wg-quick bringing the
// written file up with wireguard-go in another namespace and pinging the
// gateway through the tunnel; revoking the device through the admin API
// cuts the traffic within 5 seconds. The registry-to-device wiring is the
// gateway's; here the Changed and Revoked hooks stand in for it.
func TestStockWireGuard(t *testing.T) {
	for _, tool := range [][2]string{{"wireguard-go", "wireguard-go"}, {"wg", "wireguard-tools"},
		{"wg-quick", "wireguard-tools"}, {"ping", "iputils-ping"}} {
		testkit.NeedTool(t, tool[0], tool[1])
	}
	if _, err := os.Stat("/dev/net/tun"); err != nil {
		testkit.Unavailable(t, fmt.Sprintf("no /dev/net/tun (modprobe tun): %v", err))
	}
	l := netlab.NewT(t)
	gwNS, err := l.NS("gw")
	if err != nil {
		t.Fatal(err)
	}
	clNS, err := l.NS("cl")
	if err != nil {
		t.Fatal(err)
	}
	if err := l.Link(gwNS, "wan", "192.0.2.1/24", clNS, "eth0", "192.0.2.2/24"); err != nil {
		t.Fatal(err)
	}
	suffix := l.ID()[len(netlab.DefaultPrefix):]
	gwIf, clIf := "g"+suffix, "c"+suffix // unique: UAPI sockets share /var/run/wireguard

	// The gateway's WireGuard device, with the peers the registry says.
	var mu sync.Mutex
	cfg := wireguard.Config{Interface: gwIf, ListenPort: 51820, Address: netip.MustParsePrefix("100.96.0.1/12"), MTU: 1420}
	var dev *wireguard.Device
	if err := gwNS.Do(func() (err error) {
		dev, err = wireguard.New(cfg, wireguard.Options{StateDir: t.TempDir()})
		return err
	}); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { dev.Close() })
	setPeers := func(change func([]wireguard.Peer) []wireguard.Peer) {
		mu.Lock()
		defer mu.Unlock()
		cfg.Peers = change(cfg.Peers)
		if err := dev.Set(cfg); err != nil {
			t.Error(err)
		}
	}

	e := newEnv(t, enrolltest.Options{}, func(o *Options) {
		o.Tunnel = func(context.Context) (Tunnel, error) {
			return Tunnel{PublicKey: dev.PublicKey(), Endpoint: "192.0.2.1:51820", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.96.0.0/12")}, MTU: 1420}, nil
		}
		o.Changed = func(_ context.Context, d identity.Device) {
			setPeers(func(ps []wireguard.Peer) []wireguard.Peer {
				return append(ps, wireguard.Peer{Name: d.ID, PublicKey: d.PublicKey, AllowedIPs: []netip.Prefix{netip.PrefixFrom(d.Address, 32)}, Email: d.Email})
			})
		}
	})
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	defer cancel()
	priv, resp, err := e.client().Enroll(ctx, "alice-laptop", false, func(da *oauth2.DeviceAuthResponse, _ string) {
		if err := e.op.Approve(ctx, da.UserCode, e.op.Username(), true); err != nil {
			t.Error(err)
		}
	})
	if err != nil {
		t.Fatal(err)
	}
	conf := filepath.Join(t.TempDir(), clIf+".conf")
	if err := WriteConfig(conf, resp.ClientConfig(priv), false); err != nil {
		t.Fatal(err)
	}

	// The user's side: stock wg-quick (falling back to wireguard-go, as
	// there is no kernel module) with the file as written.
	if out, err := clNS.Exec(ctx, "wg-quick", "up", conf); err != nil {
		t.Fatalf("wg-quick up: %v\n%s", err, out)
	}
	t.Cleanup(func() {
		clNS.Exec(context.Background(), "wg-quick", "down", conf)
		os.Remove("/var/run/wireguard/" + clIf + ".sock")
	})
	netlab.Eventually(t, 15*time.Second, "the enrolled device pings the gateway through the tunnel", func() error {
		return clNS.Ping("100.96.0.1")
	})
	if err := gwNS.Ping(resp.Device.Address.String()); err != nil {
		t.Errorf("gateway → device: %v", err)
	}

	// Revocation through the admin API removes the peer.
	admin := httptest.NewServer(NewAdmin(e.reg, AdminOptions{Revoked: func(_ context.Context, d identity.Device) {
		setPeers(func(ps []wireguard.Peer) []wireguard.Peer {
			return slices.DeleteFunc(ps, func(p wireguard.Peer) bool { return p.Name == d.ID })
		})
	}}))
	defer admin.Close()
	start := time.Now()
	r, err := http.Post(admin.URL+PathDevices+"/"+resp.Device.ID+"/revoke", "", nil)
	if err != nil || r.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", r, err)
	}
	r.Body.Close()
	netlab.Eventually(t, 5*time.Second, "the revoked device loses the tunnel", func() error {
		if clNS.Ping("100.96.0.1") == nil {
			return errTunnelStillUp
		}
		return nil
	})
	t.Logf("traffic cut %s after the revoke call", time.Since(start).Round(time.Millisecond))
}

var errTunnelStillUp = errors.New("ping through the tunnel still answered")
