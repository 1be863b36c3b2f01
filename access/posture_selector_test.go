package access

import (
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
)

// postureDevices is one enrolled device whose compliance the test flips.
type postureDevices struct {
	addr      netip.Addr
	owner     string
	compliant atomic.Bool
}

func (p *postureDevices) DeviceOwner(a netip.Addr) (string, bool) {
	return p.owner, a == p.addr
}

func (p *postureDevices) DeviceCompliant(a netip.Addr) bool {
	return a == p.addr && p.compliant.Load()
}

// TestDevicePostureSelector: a policy requiring device_posture admits the
// user's own compliant device, and the same session is refused on its
// next request once the device falls out of compliance (network
// selectors are judged on every request), and admitted again after.
func TestDevicePostureSelector(t *testing.T) {
	dir := t.TempDir()
	f := newFakeIdP(t)
	up := newUpstream(t)
	cfg := defaultConfig(t, up.URL, dir)
	cfg.Apps[0].Policies[0].Require = []policy.Selector{{DevicePosture: yes()}}
	devs := &postureDevices{addr: netip.MustParseAddr("127.0.0.1"), owner: identity.SubjectOf(f.issuer, "user-1")}
	devs.compliant.Store(true)
	e := startEnv(t, cfg, idpConfig(t, f, dir), dir, up, func(o *Options) { o.Devices = devs })
	c := e.client(true)
	if resp, _ := e.get(c, e.url("wiki.test", "/")); resp.StatusCode != http.StatusOK {
		t.Fatalf("compliant device: %d", resp.StatusCode)
	}
	devs.compliant.Store(false)
	if resp, _ := e.get(c, e.url("wiki.test", "/")); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("quarantined device: %d, want 403", resp.StatusCode)
	}
	devs.compliant.Store(true)
	if resp, _ := e.get(c, e.url("wiki.test", "/")); resp.StatusCode != http.StatusOK {
		t.Fatalf("released device: %d", resp.StatusCode)
	}
	// Another user's compliant device does not count.
	devs.owner = identity.SubjectOf(f.issuer, "user-2")
	if resp, _ := e.get(e.client(true), e.url("wiki.test", "/")); resp.StatusCode != http.StatusForbidden {
		t.Fatalf("another user's device: %d, want 403", resp.StatusCode)
	}
}
