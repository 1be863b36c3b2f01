package enroll

import (
	"encoding/json"
	"errors"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"testing"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/identity"
)

// The gateway hands the handler the real registry.
var _ Registry = (*identity.Registry)(nil)

// TestRealRegistry runs enrollment and the admin API against the device
// registry itself (SQLite in a temporary state dir), so the error mapping
// is checked against what the registry really returns.
func TestRealRegistry(t *testing.T) {
	t.Parallel()
	reg, err := identity.Open(t.Context(), identity.Options{
		StateDir: t.TempDir(), Pool: netip.MustParsePrefix("100.96.0.0/29"),
		Reserved: []netip.Addr{netip.MustParseAddr("100.96.0.1")},
	})
	if err != nil {
		t.Fatal(err)
	}
	defer reg.Close()
	e := newEnv(t, enrolltest.Options{}, func(o *Options) { o.Registry = reg })
	toks := e.signIn(t, e.op.Username(), 3)

	foreign := newPub(t)
	if _, err := reg.Enroll(t.Context(), identity.Enrollment{Name: "theirs", Subject: "other#1", PublicKey: foreign}); err != nil {
		t.Fatal(err)
	}
	enroll := func(tok *Tokens, key string) (int, []byte) {
		b, _ := json.Marshal(Request{IDToken: tok.IDToken, AccessToken: tok.AccessToken, PublicKey: key, Name: "laptop"})
		resp, body := e.post(t, PathAPI, b)
		return resp.StatusCode, body
	}
	if code, b := enroll(toks[0], foreign.String()); code != 409 || errorCode(t, b) != CodeKeyInUse {
		t.Fatalf("foreign key: %d %s", code, b)
	}
	code, b := enroll(toks[0], newPub(t).String()) // the refused sign-in may be used again
	var r Response
	if code != 200 || json.Unmarshal(b, &r) != nil {
		t.Fatalf("enroll: %d %s", code, b)
	}
	d, err := reg.Get(t.Context(), r.Device.ID)
	if err != nil || d.Subject != SubjectOf(e.op.Issuer, "id1") || d.Address != r.Device.Address || !r.Interface.Addresses[0].Contains(d.Address) {
		t.Fatalf("registry has %+v, %v; answer %+v", d, err, r.Device)
	}
	for i := 0; ; i++ { // fill the pool
		if _, err := reg.Enroll(t.Context(), identity.Enrollment{Name: "filler", Subject: "other#2", PublicKey: newPub(t)}); err != nil {
			if i == 0 || !errors.Is(err, identity.ErrPoolExhausted) {
				t.Fatalf("filling the pool: %v", err)
			}
			break
		}
	}
	if code, b := enroll(toks[1], newPub(t).String()); code != 503 || errorCode(t, b) != CodePoolExhausted {
		t.Fatalf("pool exhausted: %d %s", code, b)
	}

	// Revoked through the admin API, the address comes free again.
	admin := httptest.NewServer(NewAdmin(reg, AdminOptions{}))
	defer admin.Close()
	resp, err := http.Post(admin.URL+PathDevices+"/"+r.Device.ID+"/revoke", "", nil)
	if err != nil || resp.StatusCode != 200 {
		t.Fatalf("revoke: %v %v", resp, err)
	}
	resp.Body.Close()
	if code, b := enroll(toks[1], newPub(t).String()); code != 200 {
		t.Fatalf("enroll after a revocation: %d %s", code, b)
	}
	// A revoked device's key stays revoked.
	if code, b := enroll(toks[2], r.Device.PublicKey.String()); code != 409 || errorCode(t, b) != CodeDeviceRevoked {
		t.Fatalf("revoked key: %d %s", code, b)
	}
}
