package gateway_test

import (
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/ha"
	"github.com/edgegw/edgegw/gateway/netlab"
)

// consoleLogin opens the console at url in the tab, logs in with the API
// token and waits for the console to show the session.
func consoleLogin(t *testing.T, ctx context.Context, url, token string) {
	t.Helper()
	must(t, chromedp.Do(ctx,
		chromedp.Navigate(url),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), token),
		chromedp.Click(chromedp.ID("login")),
	))
	// The login navigates: poll, which survives it, for the session.
	consolePoll(t, ctx, "the console after login", `!!document.getElementById("role") && document.getElementById("role").textContent !== ""`)
}

// consoleEval runs a JavaScript expression in the page and returns its
// value.
func consoleEval[T any](t *testing.T, ctx context.Context, expr string) T {
	t.Helper()
	v, err := chromedp.Run(ctx, chromedp.Evaluate[T](expr))
	if err != nil {
		t.Fatalf("evaluate %s: %v", expr, err)
	}
	return v
}

// socketGet GETs an admin path over a gateway's admin socket.
func socketGet(t *testing.T, sock, path string) []byte {
	t.Helper()
	c := &http.Client{Timeout: 30 * time.Second, Transport: &http.Transport{
		DisableKeepAlives: true,
		DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
			var d net.Dialer
			return d.DialContext(ctx, "unix", sock)
		},
	}}
	resp, err := c.Get("http://localhost" + path)
	must(t, err)
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	must(t, err)
	if resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %s", path, resp.Status, b)
	}
	return b
}

// TestConsoleRoutingBGP opens the console's Routing page in headless
// Chromium on the office LAN of a running edgegw that learns the branch
// LAN by BGP over GRE from a BIRD router (the topology of
// TestBGPOverGRE). The page shows every row of GET /api/v1/routes with
// its source, metric and whether it is the prefix's active path (the
// learned 10.20.0.0/24 through the tunnel, active, from bgp:branch), and
// the BGP session established with the prefixes received, accepted and
// advertised, live (no page reload while the session comes up). The HA
// card of the Overview is checked with fixture statuses rendered in the
// page (a pair of gateways is not started): a master in a split brain, a
// backup, and no card without ha. Any JavaScript error fails the test;
// screenshots go to $EDGEGW_SCREENSHOTS.
//
//	olan 10.0.0.5 (Chromium) ── ogw (edgegw, bgp) ── wan ── bgw (edgegw + BIRD 2) ── blan 10.20.0.5
func TestConsoleRoutingBGP(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	if _, err := exec.LookPath("bird"); err != nil {
		t.Fatal("bird not found: install the Debian package bird2")
	}
	lab, ns := siteLab(t)

	dir := t.TempDir()
	tun := lab.ID() + "t"
	certFile, keyFile, _ := writeAdminCert(t, dir, netip.MustParseAddr("10.0.0.1"))
	startGRESite(t, ns["ogw"], dir, officeSite(tun,
		lanAdmin(netip.MustParseAddr("10.0.0.1"), certFile, keyFile),
		officeBGP(tun)))
	startGRESite(t, ns["bgw"], dir, branchSite(tun, greRoute("10.0.0.0/24", tun)))
	officeSock := filepath.Join(dir, "office.sock")
	tok, _, _ := strings.Cut(run(t, ns["ogw"], binary, "admin", "token", "create", "noc", "--role", "viewer", "--socket", officeSock), "\n")

	// The browser first, BIRD after: the page shows the session come up
	// by itself.
	// consoleTab reads only the office LAN host and the gateway's LAN
	// address of a site.
	office := &site{t: t, ra: &netlab.RemoteAccess{LAN: ns["olan"], GWLANAddr: netip.MustParseAddr("10.0.0.1")}}
	ctx, done := consoleTab(t, office)
	defer done()
	consoleLogin(t, ctx, "https://gw.corp.example:9100/", tok)
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-routing"))))
	consolePoll(t, ctx, "the Routing page", `!document.getElementById("page-routing").hidden && document.getElementById("page-overview").hidden && document.getElementById("nav-routing").classList.contains("active")`)
	consolePoll(t, ctx, "the BGP section", `!document.getElementById("bgp-on").hidden && document.querySelector('#bgp-sessions tr[data-neighbor="branch"]') !== null`)
	if sp := consoleEval[string](t, ctx, `document.getElementById("bgp-speaker").textContent`); sp != "AS 65000, router id 203.0.113.10" {
		t.Errorf("BGP speaker: %q", sp)
	}

	bird, _ := startBIRDBranch(t, ns["bgw"])
	defer bird.Stop()
	netlab.Eventually(t, 30*time.Second, "office LAN reaches the branch LAN through the BGP route", func() error {
		return ns["olan"].Ping("10.20.0.5")
	})

	// The session, live: established, one prefix received and accepted,
	// one advertised, up for some seconds.
	session := `document.querySelector('#bgp-sessions tr[data-neighbor="branch"]')`
	consolePoll(t, ctx, "the established session", session+`.dataset.state === "established" && [...`+session+`.cells].slice(6, 9).map((c) => c.textContent).join(",") === "1,1,1"`)
	cells := consoleEval[[]string](t, ctx, `[...`+session+`.cells].map((c) => c.textContent)`)
	if len(cells) != 10 || cells[1] != "10.200.1.1" || cells[2] != "65020" || cells[3] != tun || cells[4] != "established" || !strings.HasSuffix(cells[5], " s") {
		t.Errorf("BGP session row: %q", cells)
	}

	// The route table: every route of the API, in its order, with source,
	// metric and path; the learned prefix active through the tunnel.
	consolePoll(t, ctx, "the learned route, active", `document.querySelector('#route-table tr[data-prefix="10.20.0.0/24"][data-source="bgp:branch"][data-active="true"]') !== null`)
	// The page polls every 2 s and the API's rows change as the tunnel's
	// health settles: compare the two until they agree.
	var wantRows []string
	netlab.Eventually(t, 30*time.Second, "the route table as the API answers it", func() error {
		var view admin.RoutesView
		must(t, json.Unmarshal(socketGet(t, officeSock, admin.PathRoutes), &view))
		wantRows = wantRows[:0]
		for _, r := range view.Routes {
			path, via := "standby", r.Via
			if r.Active {
				path = "active"
			}
			if via == "" {
				via = "unreachable"
			}
			wantRows = append(wantRows, strings.Join([]string{r.Prefix, via, r.Source, fmt.Sprint(r.Metric), path}, "|"))
		}
		got := consoleEval[[]string](t, ctx, `[...document.querySelectorAll("#route-table tbody tr")].map((tr) => [0, 1, 2, 3, 6].map((i) => tr.cells[i]?.textContent).join("|"))`)
		if !slices.Equal(got, wantRows) {
			return fmt.Errorf("page %q, API %q", got, wantRows)
		}
		return nil
	})
	if !slices.ContainsFunc(wantRows, func(r string) bool { return strings.HasPrefix(r, "10.20.0.0/24|"+tun+"|bgp:branch|") }) {
		t.Errorf("the API's routes lack the learned one: %q", wantRows)
	}
	consoleShot(t, ctx, "routing-bgp")

	// The Overview has no HA card on this single gateway; fixtures of a
	// pair's status render one. Each is rendered and read in one script,
	// so no status event comes between.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-overview")), chromedp.WaitVisible(chromedp.ID("page-overview"))))
	consolePoll(t, ctx, "the overview", `document.getElementById("ready").textContent !== ""`)
	if n := consoleEval[int](t, ctx, `document.querySelectorAll("#ha-card").length`); n != 0 {
		t.Errorf("an HA card without ha: %d", n)
	}
	since := time.Now().Add(-90 * time.Second).UTC()
	last := since.Add(-time.Hour)
	for _, c := range []struct {
		name string
		st   ha.Status
		want map[string]string
	}{
		{"master in a split brain", ha.Status{Role: ha.RoleMaster, Peer: "192.0.2.2", Priority: 150, Since: since, Reason: "the peer stopped advertising",
			SplitBrain: true, SplitBrains: 2, LastSplitBrain: &since, Last: &since},
			map[string]string{"ha-role": "master", "ha-peer": "192.0.2.2", "ha-reason": "the peer stopped advertising",
				"ha-split-brain": "split brain now", "ha-split-brains": "2, last "}},
		{"backup", ha.Status{Role: ha.RoleBackup, Peer: "192.0.2.1", Priority: 100, Since: since, Reason: "the peer has the higher priority", Last: &last},
			map[string]string{"ha-role": "backup", "ha-peer": "192.0.2.1", "ha-reason": "the peer has the higher priority",
				"ha-split-brain": "none", "ha-split-brains": "0", "ha-since": "ago"}},
		{"yielded", ha.Status{Role: ha.RoleFault, Peer: "192.0.2.1", Since: since, Yielded: true, SplitBrains: 1, LastSplitBrain: &last},
			map[string]string{"ha-role": "fault", "ha-split-brain": "yielded after a split brain", "ha-last": "none since start"}},
	} {
		fixture, err := json.Marshal(map[string]any{"ha": c.st})
		must(t, err)
		got := consoleEval[map[string]string](t, ctx, fmt.Sprintf(`(() => {
  edgegw.network.renderHA(%s);
  const out = {};
  for (const dd of document.querySelectorAll("#ha-card dd[id]")) out[dd.id] = dd.textContent;
  out.title = document.querySelector("#ha-card h3").textContent;
  out.bad = String(document.querySelectorAll("#ha-card .state.bad").length);
  return out;
})()`, fixture))
		for id, want := range c.want {
			if !strings.Contains(got[id], want) {
				t.Errorf("%s: #%s = %q, want it to hold %q", c.name, id, got[id], want)
			}
		}
		if got["ha-role"] != c.st.Role || got["title"] != "High availability" {
			t.Errorf("%s: %v", c.name, got)
		}
		// A split brain or a fault is shown as bad; a healthy backup not.
		if wantBad := c.st.SplitBrain || c.st.Yielded || c.st.Role == ha.RoleFault; (got["bad"] != "0") != wantBad {
			t.Errorf("%s: %s states shown bad, want bad: %v (%v)", c.name, got["bad"], wantBad, got)
		}
	}
	// The next status (no ha) takes the card away again.
	consolePoll(t, ctx, "the HA card gone with the next status", `document.getElementById("ha-card") === null`)

	// access.acme's certificates: a card on the Overview with each name's
	// expiry, bad when there is none yet or renewals have been failing
	// (under 14 days left).
	acme, err := json.Marshal(map[string]any{"access": map[string]any{"acme": []map[string]any{
		{"domain": "gw.example.com", "expires": time.Now().Add(60 * 24 * time.Hour).UTC()},
		{"domain": "soon.example.com", "expires": time.Now().Add(3 * 24 * time.Hour).UTC()},
		{"domain": "new.example.com"},
	}}})
	must(t, err)
	got := consoleEval[map[string]string](t, ctx, fmt.Sprintf(`(() => {
  edgegw.network.renderACME(%s);
  const out = {};
  for (const dd of document.querySelectorAll("#acme-card dd")) out[dd.dataset.domain] = dd.textContent + (dd.querySelector(".state.bad") ? " [bad]" : "");
  out.title = document.querySelector("#acme-card h3").textContent;
  return out;
})()`, acme))
	for name, want := range map[string]string{
		"title":            "Certificates (ACME)",
		"gw.example.com":   "59 days left",
		"soon.example.com": "2 days left) [bad]",
		"new.example.com":  "no certificate yet: the configured one is served [bad]",
	} {
		if !strings.Contains(got[name], want) {
			t.Errorf("ACME card: %s = %q, want it to hold %q", name, got[name], want)
		}
	}
	if strings.Contains(got["gw.example.com"], "[bad]") {
		t.Errorf("ACME card: a certificate with 59 days left shown bad: %q", got["gw.example.com"])
	}
	consolePoll(t, ctx, "the ACME card gone with the next status", `document.getElementById("acme-card") === null`)
}

// TestConsoleEgress opens the console's Egress page in headless Chromium
// on the office LAN of a running edgegw with two egress addresses and
// policies by group (the topology of TestEgressByIdentity): after alice
// (group eu) and bob (group us) each open connections to a server on the
// internet through their WireGuard tunnels, the page shows each address
// with its location, link, policies, identities, connections and bytes;
// the policies in order with their counters; who leaves where, with the
// connections tracked now; and a link to the geofeed, which the browser
// fetches from the admin listener. Any JavaScript error fails the test;
// screenshots go to $EDGEGW_SCREENSHOTS.
func TestConsoleEgress(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	web, err := s.lab.NS("web")
	must(t, err)
	must(t, s.lab.Link(ra.WAN, "eth2", "203.0.113.1/24", web, "eth0", "203.0.113.80/24"))
	must(t, web.Route("default", "203.0.113.1"))
	whoServer(t, web, ":8080")
	user2, err := s.lab.NS("user2")
	must(t, err)
	must(t, s.lab.Link(ra.WAN, "eth3", "192.0.3.1/24", user2, "eth0", "192.0.3.2/24"))
	must(t, user2.Route("default", "192.0.3.1"))
	for _, a := range []string{"198.51.100.10/32", "198.18.0.11/32"} {
		must(t, ra.GW.AddAddr("eth0", a))
	}
	must(t, ra.WAN.Route("198.18.0.0/24", ra.GWWANAddr.String()))

	aliceKey, alicePub := wgKey(t, ra.User, s.dir, "alice")
	bobKey, bobPub := wgKey(t, user2, s.dir, "bob")
	s.peers = []string{fmt.Sprintf(`
      - name: alice
        public_key: %q
        allowed_ips: [100.96.0.10/32]
        email: alice@corp.example
        groups: [eu]
      - name: bob
        public_key: %q
        allowed_ips: [100.96.0.11/32]
        email: bob@corp.example
        groups: [us]`, alicePub, bobPub)}
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
`
	s.writeConfig()
	s.adminOnLAN()
	s.start()
	for _, c := range []struct {
		ns        *netlab.NS
		name, key string
	}{{ra.User, "alice", aliceKey}, {user2, "bob", bobKey}} {
		s.upClient(c.ns, s.lab.ID()+c.name[:1], run(t, ra.GW, binary, "peer", "config", c.name, "--config", s.cfg,
			"--endpoint", ra.GWWANAddr.String()+":51820", "--private-key-file", c.key,
			"--allowed-ips", "203.0.113.80/32,100.96.0.1/32"), "")
	}
	// Each user's connections leave from the user's egress address; the
	// server's answer says which.
	for _, c := range []struct {
		who  string
		ns   *netlab.NS
		want string
	}{{"alice", ra.User, "198.51.100.10"}, {"bob", user2, "198.18.0.11"}} {
		netlab.Eventually(t, 15*time.Second, c.who+" leaves from "+c.want, func() error {
			ctx, cancel := context.WithTimeout(context.Background(), 3*time.Second)
			defer cancel()
			conn, err := c.ns.DialContext(ctx, "tcp", "203.0.113.80:8080")
			if err != nil {
				return err
			}
			defer conn.Close()
			conn.SetDeadline(time.Now().Add(3 * time.Second))
			b, err := io.ReadAll(conn)
			if got := strings.TrimSpace(string(b)); got != c.want {
				return fmt.Errorf("the server saw %s from %q (%v)", c.who, got, err)
			}
			return nil
		})
	}
	geofeed, err := os.ReadFile(filepath.Join(s.dir, "state", "egress", "geofeed.csv"))
	must(t, err)
	tok, _, _ := strings.Cut(run(t, ra.GW, binary, "admin", "token", "create", "noc", "--role", "viewer", "--socket", s.socket()), "\n")

	ctx, done := consoleTab(t, s)
	defer done()
	consoleLogin(t, ctx, "https://gw.corp.example:9100/", tok)
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-egress"))))
	consolePoll(t, ctx, "the Egress page", `!document.getElementById("page-egress").hidden && document.getElementById("page-overview").hidden`)
	cells := func(sel string) string {
		return `[...(document.querySelector(` + fmt.Sprintf("%q", sel) + `) || {cells: []}).cells].map((c) => c.textContent)`
	}
	for _, name := range []string{"fra", "nyc"} {
		consolePoll(t, ctx, name+" with its traffic", `((c) => c.length === 10 && c[7] !== "0" && c[8] !== "0 B" && c[9] !== "0 B")(`+cells(`#egress-addresses tr[data-egress="`+name+`"]`)+`)`)
	}
	for name, want := range map[string][]string{
		"fra": {"fra", "198.51.100.10", "eth0", "DE DE-HE Frankfurt", "eu-staff", "alice@corp.example"},
		"nyc": {"nyc", "198.18.0.11", "eth0", "US US-NY", "us-staff", "bob@corp.example"},
	} {
		got := consoleEval[[]string](t, ctx, cells(`#egress-addresses tr[data-egress="`+name+`"]`))
		if len(got) != 10 || !slices.Equal(got[:6], want) || got[6] == "0" || got[7] == "0" || got[8] == "0 B" || got[9] == "0 B" {
			t.Errorf("egress address %s: %q, want %q then connections and bytes", name, got, want)
		}
	}
	for email, want := range map[string][]string{
		"alice@corp.example": {"alice@corp.example", "100.96.0.10/32", "fra (198.51.100.10)", "DE", "eu-staff", "198.51.100.10: "},
		"bob@corp.example":   {"bob@corp.example", "100.96.0.11/32", "nyc (198.18.0.11)", "US", "us-staff", "198.18.0.11: "},
	} {
		got := consoleEval[[]string](t, ctx, cells(`#egress-identities tr[data-identity="`+email+`"]`))
		if len(got) != 8 || !slices.Equal(got[:5], want[:5]) || !strings.HasPrefix(got[5], want[5]) || !strings.HasSuffix(got[5], "connection") && !strings.HasSuffix(got[5], "connections") || got[6] == "0 B" || got[7] == "0 B" {
			t.Errorf("identity %s: %q, want %q, connections and bytes", email, got, want)
		}
	}
	for id, want := range map[string][]string{
		"eu-staff": {"eu-staff", `identity.groups contains "eu"`, "fra"},
		"us-staff": {"us-staff", `identity.groups contains "us"`, "nyc"},
	} {
		got := consoleEval[[]string](t, ctx, cells(`#egress-policies tr[data-policy="`+id+`"]`))
		if len(got) != 4 || !slices.Equal(got[:3], want) || got[3] == "0" {
			t.Errorf("egress policy %s: %q, want %q and its connections", id, got, want)
		}
	}
	if order := consoleEval[[]string](t, ctx, `[...document.querySelectorAll("#egress-policies tbody tr")].map((tr) => tr.dataset.policy)`); !slices.Equal(order, []string{"eu-staff", "us-staff"}) {
		t.Errorf("policies in the order %q", order)
	}
	// The geofeed link, fetched as the viewer's browser follows it.
	href := consoleEval[string](t, ctx, `document.getElementById("egress-geofeed-link").href`)
	if href != "https://gw.corp.example:9100/geofeed.csv" {
		t.Errorf("geofeed link: %q", href)
	}
	feed, err := chromedp.Run(ctx, chromedp.Evaluate[string](`fetch(document.getElementById("egress-geofeed-link").href).then((r) => r.text())`, chromedp.EvalAwaitPromise))
	must(t, err)
	if feed != string(geofeed) {
		t.Errorf("the geofeed behind the link: %q, want %q", feed, geofeed)
	}
	consoleShot(t, ctx, "egress")
}

// TestConsoleHAPair opens the console of the first node of a running HA
// pair (keepalived and conntrackd under two real edgegw, the pair of
// TestHASplitBrain) in headless Chromium beside it, over its loopback
// admin listener: the Overview's HA card shows the node master with its
// peer, the reason of its last transition and no split brain; when VRRP
// is cut on the sync link, the open page (no reload) counts the split
// brain the node went through. Any JavaScript error fails the test;
// screenshots go to $EDGEGW_SCREENSHOTS.
func TestConsoleHAPair(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	nodes := startHAPair(t)
	const deadline = 30 * time.Second
	netlab.Eventually(t, deadline, "n1 master", nodes[0].wantRole("master"))
	netlab.Eventually(t, deadline, "n2 backup", nodes[1].wantRole("backup"))
	tok, _, _ := strings.Cut(run(t, nodes[0].ns, binary, "admin", "token", "create", "noc", "--role", "viewer",
		"--socket", filepath.Join(nodes[0].dir, "admin.sock")), "\n")

	// consoleTab reads only the host Chromium runs on and the gateway's
	// address of a site: here the node itself, on its loopback.
	n1 := &site{t: t, ra: &netlab.RemoteAccess{LAN: nodes[0].ns, GWLANAddr: netip.MustParseAddr("127.0.0.1")}}
	ctx, done := consoleTab(t, n1)
	defer done()
	consoleLogin(t, ctx, "http://127.0.0.1:9100/", tok)
	consolePoll(t, ctx, "the HA card", `!!document.getElementById("ha-role") && document.getElementById("ha-role").textContent === "master"`)
	card := func() map[string]string {
		return consoleEval[map[string]string](t, ctx, `Object.fromEntries([...document.querySelectorAll("#ha-card dd[id]")].map((dd) => [dd.id, dd.textContent]))`)
	}
	got := card()
	if got["ha-peer"] != "10.255.0.2" || got["ha-split-brain"] != "none" || !strings.HasPrefix(got["ha-split-brains"], "0") || got["ha-reason"] == "" || !strings.Contains(got["ha-since"], "ago") {
		t.Errorf("HA card of the master: %v", got)
	}
	// The pair's configuration digest, when this edgegw reports one.
	var raw struct {
		HA map[string]any `json:"ha"`
	}
	must(t, json.Unmarshal(socketGet(t, filepath.Join(nodes[0].dir, "admin.sock"), "/api/v1/status"), &raw))
	if d, _ := raw.HA["config_digest"].(string); d != "" && (len(d) < 12 || got["ha-digest"] != d[:12]) {
		t.Errorf("HA card digest %q, status %q", got["ha-digest"], d)
	}
	consoleShot(t, ctx, "overview-ha")

	cut := `table ip hacut {
	chain out {
		type filter hook output priority filter; policy accept;
		oifname "sync0" ip protocol vrrp drop
	}
}`
	for _, n := range nodes {
		cmd := n.ns.Command("nft", "-f", "-")
		cmd.Stdin = strings.NewReader(cut)
		if out, err := cmd.CombinedOutput(); err != nil {
			t.Fatalf("nft: %v: %s", err, out)
		}
	}
	consolePoll(t, ctx, "the split brain counted on the open page", `document.getElementById("ha-split-brains").textContent.startsWith("1, last ")`)
	if got := card(); got["ha-role"] != "master" {
		t.Errorf("n1 after the split brain (n2 yields): %v", got)
	}
	consoleShot(t, ctx, "overview-ha-split-brain")
}
