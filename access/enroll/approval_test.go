package enroll

import (
	"context"
	"encoding/json"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/identity"
)

// TestAdminApproval: with admin approval a device enrolled through the
// gateway-started grant is registered pending (it holds an address and
// gets its configuration, but is in no snapshot, so no tunnel or identity
// set has it) until an admin approves it through the devices API; a
// revoked device cannot be approved. Against the real registry.
func TestAdminApproval(t *testing.T) {
	t.Parallel()
	reg, err := identity.Open(t.Context(), identity.Options{
		StateDir: t.TempDir(), Pool: netip.MustParsePrefix("100.96.0.0/29"),
		Reserved: []netip.Addr{netip.MustParseAddr("100.96.0.1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	e := newEnv(t, enrolltest.Options{}, func(o *Options) { o.Registry, o.AdminApproval, o.ClientTokens = reg, true, false })
	approved := make(chan string, 1)
	admin := httptest.NewServer(NewAdmin(reg, AdminOptions{Approved: func(_ context.Context, d identity.Device) { approved <- d.ID }}))
	defer admin.Close()
	ctx := t.Context()
	c := e.client()
	d, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	pub := newKey(t)
	sr, err := c.StartGrant(ctx, d, pub, "new laptop")
	if err != nil {
		t.Fatal(err)
	}
	if err := e.op.Approve(ctx, sr.UserCode, e.op.Username(), true); err != nil {
		t.Fatal(err)
	}
	r, err := pollUntil(t, c, d, sr.Handle, pub, "new laptop")
	if err != nil {
		t.Fatal(err)
	}
	if !r.Device.Pending || len(r.Interface.Addresses) != 1 {
		t.Fatalf("enrolled %+v, want pending with an address", r.Device)
	}
	if err := reg.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if _, ok := reg.Snapshot().ByKey(pub); ok {
		t.Fatal("a pending device is in the registry's snapshot")
	}
	show := func(id string) Device {
		t.Helper()
		resp, err := http.Get(admin.URL + PathDevices + "/" + id)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var dev Device
		if err := json.NewDecoder(resp.Body).Decode(&dev); err != nil {
			t.Fatal(err)
		}
		return dev
	}
	if dev := show(r.Device.ID); dev.Status != "pending" || !dev.Pending {
		t.Fatalf("admin API shows %+v", dev)
	}
	post := func(path string) (int, []byte) {
		t.Helper()
		resp, err := http.Post(admin.URL+path, "", nil)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		var b json.RawMessage
		json.NewDecoder(resp.Body).Decode(&b)
		return resp.StatusCode, b
	}
	if code, b := post(PathDevices + "/" + r.Device.ID + "/approve"); code != 200 {
		t.Fatalf("approve: %d %s", code, b)
	}
	if id := <-approved; id != r.Device.ID {
		t.Fatalf("Approved called for %s", id)
	}
	if err := reg.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	if s, ok := reg.Snapshot().ByKey(pub); !ok || s.Address != r.Device.Address {
		t.Fatalf("approved device not in the snapshot: %+v %v", s, ok)
	}
	if dev := show(r.Device.ID); dev.Status != "active" || dev.Pending {
		t.Fatalf("admin API shows %+v after approval", dev)
	}
	// Unknown and revoked devices.
	if code, b := post(PathDevices + "/dev_nosuchdevice0000000000000/approve"); code != 404 {
		t.Fatalf("unknown device: %d %s", code, b)
	}
	if code, _ := post(PathDevices + "/" + r.Device.ID + "/revoke"); code != 200 {
		t.Fatal("revoke failed")
	}
	if code, b := post(PathDevices + "/" + r.Device.ID + "/approve"); code != 409 || errorCode(t, b) != CodeDeviceRevoked {
		t.Fatalf("approve a revoked device: %d %s", code, b)
	}
}
