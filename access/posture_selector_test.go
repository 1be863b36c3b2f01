package access

import (
	"net/http"
	"net/netip"
	"sync/atomic"
	"testing"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/firewall/rules"
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

// attrDevices is one enrolled device whose posture attributes the test
// sets.
type attrDevices struct {
	postureDevices
	attrs atomic.Pointer[rules.Posture]
}

func (p *attrDevices) DevicePostureAttributes(a netip.Addr) (rules.Posture, bool) {
	if a != p.addr || p.attrs.Load() == nil {
		return rules.Posture{}, false
	}
	return *p.attrs.Load(), true
}

// TestPostureSelector: a policy requiring a posture expression admits the
// user's own device while its attributes satisfy it, refuses the same
// session on its next request once they do not (or are unknown), and
// admits it again after; another user's device never counts.
func TestPostureSelector(t *testing.T) {
	dir := t.TempDir()
	f := newFakeIdP(t)
	up := newUpstream(t)
	cfg := defaultConfig(t, up.URL, dir)
	cfg.Apps[0].Policies[0].Require = []policy.Selector{{Posture: `device.posture.disk_encrypted and device.posture.os_version >= "6.1"`}}
	devs := &attrDevices{postureDevices: postureDevices{addr: netip.MustParseAddr("127.0.0.1"), owner: identity.SubjectOf(f.issuer, "user-1")}}
	good := rules.Posture{OS: "linux", OSVersion: "6.12.3", DiskEncrypted: rules.CheckYes}
	devs.attrs.Store(&good)
	e := startEnv(t, cfg, idpConfig(t, f, dir), dir, up, func(o *Options) { o.Devices = devs })
	c := e.client(true)
	for _, step := range []struct {
		name  string
		attrs *rules.Posture
		want  int
	}{
		{"encrypted, recent kernel", &good, http.StatusOK},
		{"disk not encrypted", &rules.Posture{OS: "linux", OSVersion: "6.12.3", DiskEncrypted: rules.CheckNo}, http.StatusForbidden},
		{"old kernel", &rules.Posture{OS: "linux", OSVersion: "5.10.0-30-amd64", DiskEncrypted: rules.CheckYes}, http.StatusForbidden},
		{"no attributes", nil, http.StatusForbidden},
		{"encrypted again", &good, http.StatusOK},
	} {
		devs.attrs.Store(step.attrs)
		if resp, _ := e.get(c, e.url("wiki.test", "/")); resp.StatusCode != step.want {
			t.Errorf("%s: %d, want %d", step.name, resp.StatusCode, step.want)
		}
	}
	devs.owner = identity.SubjectOf(f.issuer, "user-2")
	if resp, _ := e.get(e.client(true), e.url("wiki.test", "/")); resp.StatusCode != http.StatusForbidden {
		t.Errorf("another user's device: %d, want 403", resp.StatusCode)
	}
}
