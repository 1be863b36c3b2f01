package admin

import (
	"fmt"
	"testing"
	"time"

	"github.com/chromedp/chromedp"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// TestChromiumDevicesQuarantined: a device the registry holds in
// quarantine (it failed its posture checks) shows on the Devices page as
// quarantined, the others as active; the device table sorts by a
// header's click (the order kept across the page's refresh) and by Enter
// on a focused header; "enroll a user's device" shows the enrollment
// page's link on the host the console was reached by, the command, and
// the link's QR code (a PNG the page loads), and refuses a user that is
// no e-mail address.
func TestChromiumDevicesQuarantined(t *testing.T) {
	if testing.Short() {
		t.Skip("browser test skipped in -short mode")
	}
	e := newEnvWith(t, Config{Listen: gwAddr + ":9100", TLS: &TLS{}, Hosts: []string{"gw.corp.test"}}, func(_ *env, o *Options) {
		// Enrollment on, on an Access listener at port 8443.
		o.EnrollPort = func() (string, bool) { return "8443", true }
	})
	var devs []identity.Device
	for i, name := range []string{"bravo", "alpha", "charlie"} {
		k, _ := wireguard.GeneratePrivateKey()
		d, err := e.reg.Enroll(t.Context(), identity.Enrollment{
			Name: name + "-laptop", Email: fmt.Sprintf("%s@corp.test", name), Subject: fmt.Sprint("s", i),
			Groups: []string{"staff"}, PublicKey: k.PublicKey(), Expires: time.Now().Add(time.Hour),
		})
		if err != nil {
			t.Fatal(err)
		}
		devs = append(devs, d)
	}
	if _, err := e.reg.RecordPosture(t.Context(), devs[2].ID, time.Now(), []byte(`{"disk_encrypted":"no"}`), true, rules.Posture{}); err != nil {
		t.Fatal(err)
	}
	// alpha reported a passing posture: its status cell's tooltip says
	// what posture rules see of it.
	if _, err := e.reg.RecordPosture(t.Context(), devs[1].ID, time.Now(), []byte(`{}`), false,
		rules.Posture{OS: "linux", OSVersion: "6.12.3", ClientVersion: "1.4.2", DiskEncrypted: rules.CheckYes, Firewall: rules.CheckNo, Compliant: rules.CheckYes}); err != nil {
		t.Fatal(err)
	}
	tok := e.createToken("noc", RoleViewer)
	b := newChromium(t, e)
	ctx, done := b.session("viewer", "/api/v1/enroll/link?user=not")
	defer done()
	if err := chromedp.Do(ctx,
		chromedp.Navigate(consoleBase+"/"),
		chromedp.WaitVisible(chromedp.ID("token")),
		chromedp.SendKeys(chromedp.ID("token"), tok),
		chromedp.Click(chromedp.ID("login")),
	); err != nil {
		t.Fatal(err)
	}
	b.poll(ctx, "the console", `!!document.getElementById("nav-devices") && !!document.getElementById("who") && document.getElementById("who").textContent === "noc"`)
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.ID("nav-devices")), chromedp.WaitVisible(chromedp.ID("page-devices"))); err != nil {
		t.Fatal(err)
	}
	b.poll(ctx, "the devices", `document.querySelectorAll("#devices tr[data-device]").length === 3`)
	for i, d := range devs {
		want := "active"
		if i == 2 {
			want = "quarantined"
		}
		got, err := chromedp.Run(ctx, chromedp.Text(chromedp.CSS(`#devices tr[data-device="`+d.ID+`"] td:nth-child(6)`)))
		if err != nil || got != want {
			t.Errorf("%s: status %q, want %q (%v)", d.Name, got, want, err)
		}
	}
	b.screenshot(ctx, "devices-quarantined")
	for i, want := range []string{
		"no current posture report",
		"linux 6.12.3, disk encrypted, firewall off, client 1.4.2, compliant",
	} {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.querySelector('#devices tr[data-device="`+devs[i].ID+`"] td:nth-child(6)').title`))
		if err != nil || got != want {
			t.Errorf("%s: posture %q, want %q (%v)", devs[i].Name, got, want, err)
		}
	}

	names := func() string {
		s, err := chromedp.Run(ctx, chromedp.Evaluate[string](`[...document.querySelectorAll("#devices tbody tr")].map((tr) => tr.cells[0].textContent).join(",")`))
		if err != nil {
			t.Fatal(err)
		}
		return s
	}
	name := `#devices thead th:nth-child(1)`
	if err := chromedp.Do(ctx, chromedp.Click(chromedp.CSS(name))); err != nil {
		t.Fatal(err)
	}
	if got := names(); got != "alpha-laptop,bravo-laptop,charlie-laptop" {
		t.Errorf("sorted by name: %s", got)
	}
	if err := chromedp.Do(ctx, chromedp.Focus(chromedp.CSS(name)), chromedp.KeyEvent("\r")); err != nil {
		t.Fatal(err)
	}
	if got := names(); got != "charlie-laptop,bravo-laptop,alpha-laptop" {
		t.Errorf("Enter on the header: %s", got)
	}
	// The list refreshes every 2 s: the order stays.
	b.poll(ctx, "a refresh of the list", `(() => { window.__marked = window.__marked || document.querySelector("#devices tbody tr"); return document.querySelector("#devices tbody tr") !== window.__marked; })()`)
	if got := names(); got != "charlie-laptop,bravo-laptop,alpha-laptop" {
		t.Errorf("after a refresh: %s", got)
	}

	// Enrollment link and QR code.
	if err := chromedp.Do(ctx,
		chromedp.Click(chromedp.CSS("#enroll summary")),
		chromedp.SendKeys(chromedp.ID("enroll-user"), "alpha@corp.test"),
		chromedp.Click(chromedp.ID("enroll-go")),
		chromedp.WaitVisible(chromedp.ID("enroll-result")),
	); err != nil {
		t.Fatal(err)
	}
	for id, want := range map[string]string{"enroll-url": "https://gw.corp.test:8443/enroll", "enroll-command": "edgegw enroll https://gw.corp.test:8443", "enroll-for": "alpha@corp.test"} {
		got, err := chromedp.Run(ctx, chromedp.Evaluate[string](`document.getElementById("`+id+`").textContent`))
		if err != nil || got != want {
			t.Errorf("#%s = %q, want %q", id, got, want)
		}
	}
	b.poll(ctx, "the QR code", `document.getElementById("enroll-qr").complete && document.getElementById("enroll-qr").naturalWidth === 256`)
	b.screenshot(ctx, "devices-enroll")
	// The API refuses a user that is no address (the form's type=email
	// keeps the browser from sending one).
	res, err := chromedp.Run(ctx, chromedp.Evaluate[float64](`fetch("/api/v1/enroll/link?user=" + encodeURIComponent("not an address"), {credentials: "same-origin"}).then((r) => r.status)`, chromedp.EvalAwaitPromise))
	if err != nil || res != 400 {
		t.Errorf("a bad user: %v %v", res, err)
	}
}
