package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
	"sync"
	"syscall"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/netlab"
)

// TestEgressByIdentity runs edgegw with two egress addresses on its WAN
// and egress policies by group: a server on the internet sees alice's
// connections (through her WireGuard tunnel) from egress A and bob's
// from egress B, and a resolver there gets their Gateway DNS queries from
// their own egress with its subnet; a reload that moves alice to bob's
// group moves her new connections and queries, in place; the geofeed of
// the egress addresses is published in the state directory and served,
// open to all, on the admin listener; GET /api/v1/egress and `edgegw
// egress` show which identity leaves from where, with the connections and
// bytes connection tracking holds for each.
func TestEgressByIdentity(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	// The internet: a server behind wan that tells each connection where
	// it came from, and a resolver beside it that records who asked with
	// which client subnet. bob is a second remote user on his own network.
	web, err := s.lab.NS("web")
	must(t, err)
	must(t, s.lab.Link(ra.WAN, "eth2", "203.0.113.1/24", web, "eth0", "203.0.113.80/24"))
	must(t, web.AddAddr("eth0", "203.0.113.53/24"))
	must(t, web.Route("default", "203.0.113.1"))
	whoServer(t, web, ":8080")
	resolver := recordingResolver(t, web, "203.0.113.53:53")
	user2, err := s.lab.NS("user2")
	must(t, err)
	must(t, s.lab.Link(ra.WAN, "eth3", "192.0.3.1/24", user2, "eth0", "192.0.3.2/24"))
	must(t, user2.Route("default", "192.0.3.1"))
	// The egress addresses, on the WAN beside its own, in two /24s; the
	// internet routes the second to the gateway.
	for _, a := range []string{"198.51.100.10/32", "198.18.0.11/32"} {
		must(t, ra.GW.AddAddr("eth0", a))
	}
	must(t, ra.WAN.Route("198.18.0.0/24", ra.GWWANAddr.String()))

	aliceKey, alicePub := wgKey(t, ra.User, s.dir, "alice")
	bobKey, bobPub := wgKey(t, user2, s.dir, "bob")
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
      - {name: nyc, address: 198.18.0.11, country: US, region: US-NY}
    policies:
      - id: eu-staff
        expression: identity.groups contains "eu"
        egress: fra
      - id: us-staff
        expression: identity.groups contains "us"
        egress: nyc
    geofeed_path: /geofeed.csv
gateway:
  dns:
    listen: [100.96.0.1:53]
    upstreams: [203.0.113.53:53]
    ecs: egress
`
	peers("eu")
	s.writeConfig()
	s.start()
	for _, c := range []struct {
		ns        *netlab.NS
		name, key string
	}{{ra.User, "alice", aliceKey}, {user2, "bob", bobKey}} {
		s.upClient(c.ns, s.lab.ID()+c.name[:1], run(t, ra.GW, binary, "peer", "config", c.name, "--config", s.cfg,
			"--endpoint", ra.GWWANAddr.String()+":51820", "--private-key-file", c.key,
			"--allowed-ips", "203.0.113.80/32,100.96.0.1/32"), "")
	}
	seen := func(ns *netlab.NS) (string, error) {
		ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
		defer cancel()
		c, err := ns.DialContext(ctx, "tcp", "203.0.113.80:8080")
		if err != nil {
			return "", err
		}
		defer c.Close()
		c.SetDeadline(time.Now().Add(3 * time.Second))
		line, err := bufio.NewReader(c).ReadString('\n')
		return strings.TrimSpace(line), err
	}
	expect := func(who string, ns *netlab.NS, want string) {
		t.Helper()
		netlab.Eventually(t, 15*time.Second, who+" leaves from "+want, func() error {
			got, err := seen(ns)
			if err != nil {
				return err
			}
			if got != want {
				return fmt.Errorf("the server saw %s from %s", who, got)
			}
			return nil
		})
	}
	expect("alice", ra.User, "198.51.100.10")
	expect("bob", user2, "198.18.0.11")
	for _, policy := range []string{"eu-staff", "us-staff"} {
		if !regexp.MustCompile(`(?m)^edgegw_firewall_egress_connections_total\{policy="` + policy + `"\} [1-9]`).MatchString(s.get("/metrics")) {
			t.Errorf("no connections counted for egress policy %s", policy)
		}
	}

	// DNS from the egress: each user's query reaches the resolver from
	// the user's egress address, with its subnet.
	dig := func(ns *netlab.NS, name string) {
		t.Helper()
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := ns.Exec(ctx, "dig", "+short", "+tries=2", "+time=2", "@100.96.0.1", name, "A")
		if err != nil || strings.TrimSpace(string(out)) != "192.0.2.99" {
			t.Fatalf("dig %s: %v %q", name, err, out)
		}
	}
	dig(ra.User, "alice.example.com")
	dig(user2, "bob.example.com")
	for name, want := range map[string]string{
		"alice.example.com.": "from 198.51.100.10 ecs 198.51.100.0/24/0",
		"bob.example.com.":   "from 198.18.0.11 ecs 198.18.0.0/24/0",
	} {
		if got := resolver.get(name); got != want {
			t.Errorf("%s at the resolver: %q, want %q", name, got, want)
		}
	}

	geofeed, err := os.ReadFile(filepath.Join(s.dir, "state", "egress", "geofeed.csv"))
	must(t, err)
	for _, line := range []string{"198.51.100.10/32,DE,DE-HE,Frankfurt,", "198.18.0.11/32,US,US-NY,,"} {
		if !strings.Contains(string(geofeed), line+"\n") {
			t.Errorf("geofeed lacks %q:\n%s", line, geofeed)
		}
	}
	checkGeofeedServed(t, ra.GW, string(geofeed))
	checkEgressView(t, s, map[string]string{"alice@corp.example": "fra", "bob@corp.example": "nyc"})

	// alice moves to "us": an identity change, the sets updated in place.
	peers("us")
	s.writeConfig()
	s.signal(syscall.SIGHUP)
	s.waitLog("configuration reloaded", 1)
	expect("alice", ra.User, "198.18.0.11")
	dig(ra.User, "alice2.example.com")
	if got, want := resolver.get("alice2.example.com."), "from 198.18.0.11 ecs 198.18.0.0/24/0"; got != want {
		t.Errorf("alice2.example.com. at the resolver after the move: %q, want %q", got, want)
	}
	checkEgressView(t, s, map[string]string{"alice@corp.example": "nyc", "bob@corp.example": "nyc"})
	if t.Failed() {
		t.Logf("nft list table inet edgegw:\n%s", run(t, ra.GW, "nft", "list", "table", "inet", "edgegw"))
	}
}

// egressAddrs are the egress addresses of TestEgressByIdentity by name.
var egressAddrs = map[string]string{"fra": "198.51.100.10", "nyc": "198.18.0.11"}

// checkEgressView checks GET /api/v1/egress and `edgegw egress` against
// where each identity should leave from (want: email → egress name): each
// address lists the identities and policies that map to it and counts the
// connections given to it, and connection tracking shows each identity's
// connections through its egress address, with bytes both ways. After a
// move, an identity's earlier connections still show through the address
// they began on (conntrack keeps them), so only the presence of the new
// one is checked.
func checkEgressView(t *testing.T, s *site, want map[string]string) {
	t.Helper()
	var v admin.EgressView
	must(t, json.Unmarshal([]byte(s.get(admin.PathEgress)), &v))
	if v.GeofeedPath != "/geofeed.csv" {
		t.Errorf("geofeed_path = %q", v.GeofeedPath)
	}
	if v.FlowsError != "" {
		t.Errorf("flows_error: %s", v.FlowsError)
	}
	byName := map[string]admin.EgressAddress{}
	for _, a := range v.Addresses {
		byName[a.Name] = a
	}
	for name, addr := range egressAddrs {
		a := byName[name]
		var ids []string
		for email, eg := range want {
			if eg == name {
				ids = append(ids, email)
			}
		}
		slices.Sort(ids)
		got := slices.Sorted(slices.Values(a.Identities))
		if a.Address != addr || !slices.Equal(got, ids) {
			t.Errorf("egress %s: address %s identities %v, want %s %v", name, a.Address, got, addr, ids)
		}
		if len(ids) > 0 && (a.ConnectionsTotal == 0 || a.ActiveConnections == 0 || a.BytesOut == 0 || a.BytesIn == 0) {
			t.Errorf("egress %s: no connections or bytes counted: %+v", name, a)
		}
	}
	if p := byName["fra"].Policies; !slices.Equal(p, []string{"eu-staff"}) {
		t.Errorf("fra's policies = %v", p)
	}
	seen := map[string]bool{}
	for _, id := range v.Identities {
		eg, ok := want[id.Email]
		if !ok {
			t.Errorf("unexpected identity %+v", id)
			continue
		}
		seen[id.Email] = true
		if id.Egress != eg || id.EgressAddress != egressAddrs[eg] {
			t.Errorf("%s leaves from %s (%s), want %s", id.Email, id.Egress, id.EgressAddress, eg)
		}
		if !slices.ContainsFunc(id.Active, func(a admin.EgressActive) bool {
			return a.EgressAddress == egressAddrs[eg] && a.ActiveConnections > 0 && a.BytesIn > 0
		}) {
			t.Errorf("%s: no tracked connections through %s: %+v", id.Email, egressAddrs[eg], id.Active)
		}
	}
	if len(seen) != len(want) {
		t.Errorf("identities shown: %v, want %v", seen, want)
	}
	// The CLI, as an operator runs it on the box.
	out := run(t, s.ra.GW, binary, "egress", "--socket", s.socket())
	for email, eg := range want {
		re := `(?m)^` + regexp.QuoteMeta(email) + `\s+100\.96\.0\.1[01]/32\s+` + eg + `\s+` + regexp.QuoteMeta(egressAddrs[eg]) + `\s`
		if !regexp.MustCompile(re).MatchString(out) {
			t.Errorf("edgegw egress does not show %s leaving from %s:\n%s", email, eg, out)
		}
	}
	if !regexp.MustCompile(`(?m)^fra\s+198\.51\.100\.10\s+eth0\s+DE DE-HE Frankfurt\s+eu-staff\s`).MatchString(out) {
		t.Errorf("edgegw egress does not show the fra address:\n%s", out)
	}
}

// checkGeofeedServed fetches the geofeed from the admin TCP listener as a
// geolocation provider would: no token, under a name not in admin.hosts.
// The API beside it still needs a token.
func checkGeofeedServed(t *testing.T, gw *netlab.NS, want string) {
	t.Helper()
	c := &http.Client{Timeout: 10 * time.Second, Transport: &http.Transport{DialContext: gw.DialContext}}
	get := func(path string) (*http.Response, string) {
		req, err := http.NewRequest(http.MethodGet, "http://127.0.0.1:9100"+path, nil)
		must(t, err)
		req.Host = "geofeed.corp.example"
		resp, err := c.Do(req)
		must(t, err)
		defer resp.Body.Close()
		b, err := io.ReadAll(resp.Body)
		must(t, err)
		return resp, string(b)
	}
	resp, body := get("/geofeed.csv")
	if resp.StatusCode != http.StatusOK || body != want || !strings.HasPrefix(resp.Header.Get("Content-Type"), "text/csv") {
		t.Errorf("GET /geofeed.csv: %s %q %q, want 200 text/csv %q", resp.Status, resp.Header.Get("Content-Type"), body, want)
	}
	if resp, _ := get(admin.PathEgress); resp.StatusCode == http.StatusOK {
		t.Errorf("GET %s without a token under another Host: %s", admin.PathEgress, resp.Status)
	}
}

// queryLog is what a recording resolver saw, by query name.
type queryLog struct {
	mu   sync.Mutex
	seen map[string]string // name → "from <source> ecs <subnet>"
}

func (l *queryLog) get(name string) string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.seen[name]
}

// recordingResolver answers every A query with 192.0.2.99 on addr (UDP)
// in ns and records where each query came from and its client subnet.
func recordingResolver(t *testing.T, ns *netlab.NS, addr string) *queryLog {
	l := &queryLog{seen: map[string]string{}}
	var pc net.PacketConn
	must(t, ns.Do(func() (err error) {
		pc, err = net.ListenPacket("udp", addr)
		return err
	}))
	srv := &mdns.Server{PacketConn: pc, Handler: mdns.HandlerFunc(func(w mdns.ResponseWriter, r *mdns.Msg) {
		ecs := ""
		if o := r.IsEdns0(); o != nil {
			for _, opt := range o.Option {
				if e, ok := opt.(*mdns.EDNS0_SUBNET); ok {
					ecs = e.String()
				}
			}
		}
		from := w.RemoteAddr().(*net.UDPAddr).AddrPort().Addr().Unmap()
		l.mu.Lock()
		l.seen[strings.ToLower(r.Question[0].Name)] = fmt.Sprintf("from %s ecs %s", from, ecs)
		l.mu.Unlock()
		m := new(mdns.Msg)
		m.SetReply(r)
		if q := r.Question[0]; q.Qtype == mdns.TypeA {
			rr, _ := mdns.NewRR(q.Name + " 300 IN A 192.0.2.99")
			m.Answer = append(m.Answer, rr)
		}
		w.WriteMsg(m)
	})}
	// Served by the test: ends at Shutdown.
	go srv.ActivateAndServe()
	t.Cleanup(func() { srv.Shutdown() })
	return l
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
