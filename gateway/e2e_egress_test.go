package gateway_test

import (
	"bufio"
	"context"
	"fmt"
	"net"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestEgressByIdentity runs edgegw with two egress addresses on its WAN
// and egress policies by group: a server on the internet sees alice's
// connections (through her WireGuard tunnel) from egress A and bob's
// from egress B; a reload that moves alice to bob's group moves her new
// connections, in place; the geofeed of the egress addresses is
// published in the state directory.
func TestEgressByIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	// The internet server: web, behind wan, with an address per user so
	// that each user's client routes only its own through its tunnel.
	web, err := s.lab.NS("web")
	must(t, err)
	must(t, s.lab.Link(ra.WAN, "eth2", "203.0.113.1/24", web, "eth0", "203.0.113.80/24"))
	must(t, web.AddAddr("eth0", "203.0.113.81/24"))
	must(t, web.Route("default", "203.0.113.1"))
	whoServer(t, web, ":8080")
	// The egress addresses, on the WAN beside its own.
	for _, a := range []string{"198.51.100.10/32", "198.51.100.11/32"} {
		must(t, ra.GW.AddAddr("eth0", a))
	}

	aliceKey, alicePub := wgKey(t, ra.User, s.dir, "alice")
	bobKey, bobPub := wgKey(t, ra.User, s.dir, "bob")
	peers := func(aliceGroup string) {
		s.peers = []string{fmt.Sprintf(`
      - name: alice
        public_key: %q
        allowed_ips: [100.96.0.10/32]
        email: alice@corp.example
        groups: [%s]
      - name: bob
        public_key: %q
        allowed_ips: [100.96.0.11/32]
        email: bob@corp.example
        groups: [us]`, alicePub, aliceGroup, bobPub)}
	}
	s.extras = `firewall:
  egress:
    addresses:
      - {name: fra, address: 198.51.100.10, country: DE, region: DE-HE, city: Frankfurt}
      - {name: nyc, address: 198.51.100.11, country: US, region: US-NY}
    policies:
      - id: eu-staff
        expression: identity.groups contains "eu"
        egress: fra
      - id: us-staff
        expression: identity.groups contains "us"
        egress: nyc
`
	peers("eu")
	s.writeConfig()
	s.start()
	for _, c := range []struct{ name, key, ifc, dst string }{
		{"alice", aliceKey, s.lab.ID() + "a", "203.0.113.80/32"},
		{"bob", bobKey, s.lab.ID() + "b", "203.0.113.81/32"},
	} {
		conf := run(t, ra.GW, binary, "peer", "config", c.name, "--config", s.cfg,
			"--endpoint", ra.GWWANAddr.String()+":51820", "--private-key-file", c.key, "--allowed-ips", c.dst)
		// Only the user's own server through the tunnel: both clients
		// share one namespace, so they cannot both route the tunnel network.
		conf = regexp.MustCompile(`(?m)^AllowedIPs = .*$`).ReplaceAllString(conf, "AllowedIPs = "+c.dst)
		s.upClient(ra.User, c.ifc, conf, "")
	}
	seen := func(dst string) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := ra.User.DialContext(ctx, "tcp", dst+":8080")
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	expect := func(who, dst, want string) {
		t.Helper()
		netlab.Eventually(t, 15*time.Second, who+" leaves from "+want, func() error {
			got, err := seen(dst)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("the server saw %s from %s", who, got)
			}
			return nil
		})
	}
	expect("alice", "203.0.113.80", "198.51.100.10")
	expect("bob", "203.0.113.81", "198.51.100.11")

	for _, policy := range []string{"eu-staff", "us-staff"} {
		if !regexp.MustCompile(`(?m)^edgegw_firewall_egress_connections_total\{policy="` + policy + `"\} [1-9]`).MatchString(s.get("/metrics")) {
			t.Errorf("no connections counted for egress policy %s", policy)
		}
	}

	geofeed, err := os.ReadFile(filepath.Join(s.dir, "state", "egress", "geofeed.csv"))
	must(t, err)
	for _, line := range []string{"198.51.100.10/32,DE,DE-HE,Frankfurt,", "198.51.100.11/32,US,US-NY,,"} {
		if !strings.Contains(string(geofeed), line+"\n") {
			t.Errorf("geofeed lacks %q:\n%s", line, geofeed)
		}
	}

	// alice moves to "us": an identity change, the sets updated in place.
	peers("us")
	s.writeConfig()
	s.signal(syscall.SIGHUP)
	s.waitLog("configuration reloaded", 1)
	expect("alice", "203.0.113.80", "198.51.100.11")
	if t.Failed() {
		t.Logf("nft list table inet edgegw:\n%s", run(t, ra.GW, "nft", "list", "table", "inet", "edgegw"))
	}
}

// whoServer answers each TCP connection with the address it came from.
func whoServer(t *testing.T, ns *netlab.NS, addr string) {
	ln, err := ns.Listen("tcp", addr)
	must(t, err)
	t.Cleanup(func() { ln.Close() })
	// Owned by the test: ends when the listener closes.
	go func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			fmt.Fprintf(c, "%s\n", c.RemoteAddr().(*net.TCPAddr).AddrPort().Addr().Unmap())
			c.Close()
		}
	}()
}
