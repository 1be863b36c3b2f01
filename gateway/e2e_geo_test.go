package gateway_test

import (
	"context"
	"fmt"
	"net/netip"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/firewall/geo/geotest"
	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestGeoThroughGateway runs firewall rules on GeoIP fields against
// traffic from a remote WireGuard user to the office: a country rule on
// the user's address blocks SSH and counts, an ASN rule on the office
// server's address blocks the web, and a database file replaced on disk
// (no SIGHUP) lets SSH through once the user's network has another
// country, with the ASN rule still in force.
func TestGeoThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	key, pub := wgKey(t, ra.User, s.dir, "alice")
	s.addPeer("alice", pub, "100.96.0.10/32")
	db := filepath.Join(s.dir, "geo.mmdb")
	write := func(userCountry string) {
		t.Helper()
		must(t, geotest.WriteFile(db, []geotest.Entry{
			{Prefix: netip.MustParsePrefix("100.96.0.0/24"), Country: userCountry, ASN: 64512},
			{Prefix: netip.MustParsePrefix("10.0.0.0/24"), Country: "DE", ASN: 64999},
		}))
	}
	write("KP")
	s.extras = fmt.Sprintf(`firewall:
  geoip:
    country: %[1]s
    asn: %[1]s
  rules:
    - id: no-ssh-from-kp
      expression: ip.src.country in {"KP" "IR"} and tcp.dstport == 22
      action: block
    - id: no-web-to-as64999
      expression: ip.dst.asnum == 64999 and tcp.dstport == 80
      action: block
`, db)
	s.writeConfig()
	s.start()
	s.client(ra.User, s.lab.ID()+"u", "alice", key)
	echoServer(t, ra.LAN, ":22")
	echoServer(t, ra.LAN, ":80")
	echoServer(t, ra.LAN, ":443")

	dial := func(port string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		c, err := ra.User.DialContext(ctx, "tcp", "10.0.0.5:"+port)
		if err == nil {
			c.Close()
		}
		return err
	}
	netlab.Eventually(t, 15*time.Second, "tunnel up", func() error { return ra.User.Ping("10.0.0.5") })
	if err := dial("443"); err != nil {
		t.Fatalf("port 443 should pass: %v", err)
	}
	if err := dial("22"); err == nil {
		t.Fatal("SSH from a KP address passed; rule no-ssh-from-kp should block it")
	}
	if err := dial("80"); err == nil {
		t.Fatal("web to AS64999 passed; rule no-web-to-as64999 should block it")
	}
	if n := counter(t, s, "no-ssh-from-kp"); n == 0 {
		t.Error("the no-ssh-from-kp counter did not move")
	}
	if n := counter(t, s, "no-web-to-as64999"); n == 0 {
		t.Error("the no-web-to-as64999 counter did not move")
	}
	if m := s.get("/metrics"); !strings.Contains(m, `edgegw_geoip_networks{kind="country"} 2`) {
		t.Errorf("metrics lack the GeoIP snapshot:\n%s", grepLines(m, "edgegw_geoip"))
	}

	// The user's network moves to GB in a new file: no reload.
	write("GB")
	netlab.Eventually(t, 20*time.Second, "SSH after the database swap", func() error { return dial("22") })
	if err := dial("80"); err == nil {
		t.Error("web to AS64999 passed after the swap; the ASN rule should still block it")
	}
	if strings.Contains(s.proc.Output(), "configuration reloaded") {
		t.Error("the swap went through a configuration reload")
	}
	if c := strings.Count(s.proc.Output(), "geoip database loaded"); c < 2 {
		t.Errorf("%d \"geoip database loaded\" lines, want 2 (start and swap)", c)
	}
	if m := s.get("/metrics"); !strings.Contains(m, "edgegw_geoip_loads_total 2") {
		t.Errorf("metrics after the swap:\n%s", grepLines(m, "edgegw_geoip"))
	}
}
