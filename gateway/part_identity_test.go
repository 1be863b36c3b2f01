package gateway

import (
	"context"
	"net/netip"
	"slices"
	"sync/atomic"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall/rules"
)

// TestSCIMRevocationEndsSessions: the registry SCIM writes through ends
// the user's Access sessions when it revokes them, devices or not, and
// does nothing while no Access server runs.
func TestSCIMRevocationEndsSessions(t *testing.T) {
	ctx := context.Background()
	reg, err := identity.Open(ctx, identity.Options{StateDir: t.TempDir(), Pool: netip.MustParsePrefix("100.96.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	if _, err := reg.Enroll(ctx, identity.Enrollment{Email: "alice@corp.example", Subject: "iss#alice", PublicKey: [32]byte{1}}); err != nil {
		t.Fatal(err)
	}
	var l local
	r := endingSessions{reg, &l.sessions}
	if _, err := r.RevokeUser(ctx, []string{"nobody@corp.example"}); err != nil {
		t.Fatalf("without an Access server: %v", err)
	}
	var ended [][]string
	l.sessions.set(func(emails []string) int { ended = append(ended, emails); return 0 })
	devs, err := r.RevokeUser(ctx, []string{"alice@corp.example"})
	if err != nil || len(devs) != 1 {
		t.Fatalf("revoke alice: %v %v", devs, err)
	}
	if _, err := r.RevokeUser(ctx, []string{"carol@corp.example"}); err != nil { // no devices
		t.Fatal(err)
	}
	if len(ended) != 2 || !slices.Equal(ended[0], []string{"alice@corp.example"}) || !slices.Equal(ended[1], []string{"carol@corp.example"}) {
		t.Errorf("sessions ended for %v", ended)
	}
	l.sessions.set(nil)
	if _, err := r.RevokeUser(ctx, []string{"dave@corp.example"}); err != nil || len(ended) != 2 {
		t.Errorf("after the Access server stopped: %v, %v", ended, err)
	}
}

// TestDNSIdentityQuarantined: with posture on, a quarantined device's DNS
// identity carries only the quarantine group (its address stays, for the
// query log); with posture off, its own groups.
func TestDNSIdentityQuarantined(t *testing.T) {
	ctx := context.Background()
	reg, err := identity.Open(ctx, identity.Options{StateDir: t.TempDir(), Pool: netip.MustParsePrefix("100.96.0.0/24")})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	d, err := reg.Enroll(ctx, identity.Enrollment{Email: "alice@corp.example", Subject: "iss#alice", Groups: []string{"finance"}, PublicKey: [32]byte{1}})
	if err != nil {
		t.Fatal(err)
	}
	if _, err := reg.RecordPosture(ctx, d.ID, time.Now(), []byte(`{}`), true, rules.Posture{}); err != nil {
		t.Fatal(err)
	}
	if err := reg.Refresh(ctx); err != nil {
		t.Fatal(err)
	}
	devs := identity.NewDevices()
	devs.Publish(reg.Snapshot())
	var tun atomic.Pointer[string]
	ids := dnsIdentities{identity.NewResolver(devs), &tun}
	if id, ok := ids.Identify(d.Address); !ok || !slices.Equal(id.Groups, []string{"finance"}) {
		t.Errorf("posture off: %+v %v", id, ok)
	}
	devs.SetPosture(true)
	if id, ok := ids.Identify(d.Address); !ok || !slices.Equal(id.Groups, []string{QuarantineGroup}) || id.Email != "alice@corp.example" {
		t.Errorf("quarantined: %+v %v", id, ok)
	}
}
