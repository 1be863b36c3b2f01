package gateway_test

import (
	"bufio"
	"context"
	"encoding/json"
	"fmt"
	"strings"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestConsoleDNSFirewallTools: a running edgegw with Gateway DNS (one
// name blocked by policy) and firewall rules; a remote user's stock
// WireGuard asks names and fetches from the office web server. In
// headless Chromium on the office LAN, a viewer sees on the DNS page the
// top domains, the top blocked domain and the user with her counts, and
// her own view (her names, her blocked queries); on the Firewall page
// each rule's sparkline and rate from the plots' history, and "test a
// packet" answers the rule a packet meets and its verdict with the
// identity behind its source filled in, as `edgegw firewall test` does
// (a viewer may ask: it changes nothing), or the parse error of a bad
// description; tables sort by a header's click or Enter; the theme
// button switches to the other theme and the choice outlives a reload.
func TestConsoleDNSFirewallTools(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	aliceKey, alicePub := wgKey(t, ra.User, s.dir, "alice")
	s.addPeer("alice", alicePub, "100.96.0.10/32")
	testkit.NeedTool(t, "dig", "bind9-dnsutils")
	upstreamAnswers(t, ra.LAN, "10.0.0.5:53", "192.0.2.99")
	s.writeFlowConfig(`firewall:
  rules:
    - id: office-web
      expression: tcp.dstport == 80
      action: allow
    - id: no-ssh
      description: no SSH into the office
      expression: tcp.dstport == 22
      action: block
gateway:
  dns:
    listen: [100.96.0.1:53]
    upstreams: [10.0.0.5:53]
    policies:
      - id: ads
        expression: dns.fqdn == "ads.example.net"
        action: block
`)
	s.adminOnLAN()
	s.start()
	echoServer(t, ra.LAN, ":80")
	s.client(ra.User, s.lab.ID()+"u", "alice", aliceKey)
	netlab.Eventually(t, 15*time.Second, "alice's handshake", func() error { return ra.User.Ping("100.96.0.1") })
	nocTok, _, _ := strings.Cut(run(t, ra.GW, binary, "admin", "token", "create", "noc", "--role", "viewer", "--socket", s.socket()), "\n")

	fetch := func() error {
		c, err := ra.User.DialContext(context.Background(), "tcp", "10.0.0.5:80")
		if err != nil {
			return err
		}
		defer c.Close()
		must(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		r := bufio.NewReader(c)
		for range 20 {
			echo(t, c, r, strings.Repeat("x", 500))
		}
		return nil
	}
	dig := func(name, want string) error {
		ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
		defer cancel()
		out, err := ra.User.Exec(ctx, "dig", "+short", "+tries=2", "+time=2", "@100.96.0.1", name, "A")
		if err != nil || strings.TrimSpace(string(out)) != want {
			return fmt.Errorf("dig %s: %v %q, want %q", name, err, out, want)
		}
		return nil
	}
	// Traffic until the history has a rate for the web rule (the sampler
	// needs two samples 10 s apart); the names asked meanwhile.
	netlab.Eventually(t, 60*time.Second, "a rate for rule office-web", func() error {
		if err := fetch(); err != nil {
			return err
		}
		for range 3 {
			if err := dig("www.example.com", "192.0.2.99"); err != nil {
				return err
			}
		}
		// 0.0.0.0: the default block answer.
		if err := dig("ads.example.net", "0.0.0.0"); err != nil {
			return err
		}
		var ans struct {
			Series []struct {
				Values []*float64 `json:"values"`
			} `json:"series"`
		}
		must(t, json.Unmarshal([]byte(s.get("/api/v1/series?name=firewall.packets_per_second:office-web&window=1h")), &ans))
		for _, sr := range ans.Series {
			for _, v := range sr.Values {
				if v != nil && *v > 0 {
					return nil
				}
			}
		}
		return fmt.Errorf("no rate above zero yet: %+v", ans)
	})

	ctx, done := consoleTab(t, s)
	defer done()
	must(t, chromedp.Do(ctx,
		chromedp.Navigate("https://gw.corp.example:9100/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), nocTok),
		chromedp.Click(chromedp.ID("login")),
	))
	consolePoll(t, ctx, "the console", `Number((document.getElementById("updated") || {dataset: {}}).dataset.polls) >= 1`)
	text := func(sel string) string {
		t.Helper()
		s, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(sel)))
		if err != nil {
			t.Fatalf("%s: %v", sel, err)
		}
		return s
	}

	// DNS: the top names, the blocked one, alice and her own view.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-dns")), chromedp.WaitVisible(chromedp.ID("page-dns"))))
	consolePoll(t, ctx, "the top names", `!!document.querySelector('#dns-top-domains tr[data-name="www.example.com"]') && !!document.querySelector('#dns-top-blocked tr[data-name="ads.example.net"]') && !!document.querySelector('#dns-users tr[data-user="alice@corp.example"]')`)
	if got := text(`#dns-top-domains tbody tr:first-child`); !strings.HasPrefix(got, "www.example.com") {
		t.Errorf("the most asked name: %q, want www.example.com", got)
	}
	if got := text(`#dns-top-blocked tr[data-name="ads.example.net"]`); strings.Contains(got, "www.example.com") {
		t.Errorf("blocked: %q", got)
	}
	if !strings.Contains(text("#dns-top-window"), "blocked") {
		t.Errorf("window line: %q", text("#dns-top-window"))
	}
	consoleShot(t, ctx, "dns-top")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(`[data-dns-user="alice@corp.example"]`)), chromedp.WaitVisible(chromedp.ID("dns-user"))))
	consolePoll(t, ctx, "alice's view", `document.getElementById("dns-user-name").textContent === "alice@corp.example" && !!document.querySelector('#dns-user-domains tr[data-name="ads.example.net"]') && !!document.querySelector('#dns-user-domains tr[data-name="www.example.com"]') && Number(document.getElementById("dns-user-blocked").textContent) >= 1`)
	var q, b int
	fmt.Sscan(text("#dns-user-queries"), &q)
	fmt.Sscan(text("#dns-user-blocked"), &b)
	if q < 4 || b < 1 || b >= q {
		t.Errorf("alice: %d queries, %d blocked", q, b)
	}
	consoleShot(t, ctx, "dns-user")
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("dns-user-close")), chromedp.WaitVisible(chromedp.ID("dns-all"))))

	// Firewall: sparklines and rates from the history.
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-firewall")), chromedp.WaitVisible(chromedp.ID("page-firewall"))))
	consolePoll(t, ctx, "office-web's sparkline", `(() => { const s = document.querySelector('#firewall-rules tr[data-rule="office-web"] svg'); return !!s && Number(s.dataset.samples) >= 1 && !!s.querySelector("polyline, circle"); })()`)
	if rate := text(`#firewall-rules tr[data-rule="office-web"] td:nth-child(7)`); rate == "" {
		t.Errorf("office-web has no rate")
	}

	// Sorting: a click on "Rule" sorts by it, again reverses; Enter on a
	// focused header does the same.
	order := func() string {
		o, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#firewall-rules tbody tr")].map((tr) => tr.dataset.rule).join(",")`))
		must(t, err)
		return o
	}
	if o := order(); o != "office-web,no-ssh" {
		t.Errorf("rules in evaluation order: %s", o)
	}
	rule := `#firewall-rules thead th:nth-child(2)`
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.CSS(rule))))
	if o := order(); o != "no-ssh,office-web" {
		t.Errorf("sorted by rule: %s", o)
	}
	must(t, chromedp.Do(ctx, chromedp.Focus(chromedp.CSS(rule)), chromedp.KeyEvent("\r")))
	if o := order(); o != "office-web,no-ssh" {
		t.Errorf("Enter on the header: %s", o)
	}
	if as, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector("`+rule+`").getAttribute("aria-sort")`)); err != nil || as != "descending" {
		t.Errorf("aria-sort %q %v", as, err)
	}
	// The order survives the page's refresh (every 2 s).
	polls := func() string {
		p, _ := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("updated").dataset.polls`))
		return p
	}
	p0 := polls()
	consolePoll(t, ctx, "a refresh", `document.getElementById("updated").dataset.polls !== "`+p0+`"`)
	if o := order(); o != "office-web,no-ssh" {
		t.Errorf("after a refresh: %s", o)
	}

	// Test a packet, as a viewer.
	must(t, chromedp.Do(ctx,
		chromedp.SendKeys(chromedp.ID("fw-packet"), "ip.src == 100.96.0.10 and ip.dst == 10.0.0.5 and tcp.dstport == 22"),
		chromedp.Click(chromedp.ID("fw-test")),
		chromedp.WaitVisible(chromedp.ID("fw-test-result")),
	))
	if v := text("#fw-test-verdict"); v != "block" {
		t.Errorf("verdict %q, want block", v)
	}
	if r := text("#fw-test-rule"); !strings.Contains(r, "no-ssh") || !strings.Contains(r, "rule 2") || !strings.Contains(r, "no SSH into the office") {
		t.Errorf("rule %q", r)
	}
	if p := text("#fw-test-packet"); !strings.Contains(p, "alice@corp.example") {
		t.Errorf("the packet lacks its identity: %q", p)
	}
	consolePoll(t, ctx, "the met rule highlighted", `document.querySelector('#firewall-rules tr[data-rule="no-ssh"]').classList.contains("hit")`)
	consoleShot(t, ctx, "firewall-test")
	must(t, chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("fw-packet"), "udp.dstport == 53"),
		chromedp.Click(chromedp.ID("fw-test")),
	))
	consolePoll(t, ctx, "no rule met", `document.getElementById("fw-test-verdict").textContent === "allow" && document.getElementById("fw-test-rule").textContent.startsWith("none matched")`)
	must(t, chromedp.Do(ctx,
		chromedp.SetValue(chromedp.ID("fw-packet"), "tcp.dstport =="),
		chromedp.Click(chromedp.ID("fw-test")),
	))
	consolePoll(t, ctx, "the parse error", `document.getElementById("fw-test-error").textContent.startsWith("Packet: ") && document.getElementById("fw-test-result").hidden`)

	// Theme: the button switches, and the choice outlives a reload.
	bg := func() string {
		c, err := chromedp.Run(ctx, chromedp.Evaluate[string](`getComputedStyle(document.body).backgroundColor`))
		must(t, err)
		return c
	}
	before, first := bg(), ""
	must(t, chromedp.Do(ctx, chromedp.Click(chromedp.ID("theme"))))
	first, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.dataset.theme`))
	must(t, err)
	if first != "dark" && first != "light" || bg() == before {
		t.Errorf("theme %q, background %s → %s", first, before, bg())
	}
	consoleShot(t, ctx, "firewall-"+first)
	must(t, chromedp.Do(ctx, chromedp.Reload()))
	consolePoll(t, ctx, "the console again", `Number((document.getElementById("updated") || {dataset: {}}).dataset.polls) >= 1`)
	if again, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.documentElement.dataset.theme + " " + localStorage.getItem("edgegw-theme")`)); err != nil || again != first+" "+first {
		t.Errorf("after a reload: %q, want %s (%v)", again, first, err)
	}
}
