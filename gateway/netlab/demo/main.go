// Command demo builds a whole office in network namespaces and runs the real
// edgegw binary in it; it is what `sudo make demo` and `sudo make
// demo-check` run.
//
// The office (netlab.Office): a gateway (edgegw) between the internet and
// the office LAN; two remote users who enroll their laptops through a local
// OpenID provider (alice in engineering, bob a contractor) and connect with
// stock wg-quick; a branch over GRE whose router is a second edgegw; a
// branch over IPsec whose router is a stock strongSwan. The gateway runs an
// identity firewall rule (SSH on the office server for engineering only),
// Gateway DNS with a blocked name and an override for engineering, flow
// sampling, and Logpush to a Splunk HEC receiver (in this process) and to a
// file.
//
// Without flags the demo prints what to try and runs until Ctrl-C; with
// --check it asserts each step instead, prints one line per step, and
// exits non-zero naming the step that failed, with the gateway's log.
// Either way it tears everything down at the end: processes, namespaces,
// files.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

func main() {
	binary := flag.String("binary", "bin/edgegw", "the edgegw binary to run in the gateway and the GRE branch")
	checkMode := flag.Bool("check", false, "assert every step unattended, then tear down; exit 1 naming the failed step")
	flag.Parse()
	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()
	if err := run(ctx, *binary, *checkMode, os.Stdout); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

// run builds the office, then either asserts the checks (check) or waits
// for ctx, and tears the office down. Progress goes to w.
func run(ctx context.Context, binary string, check bool, w io.Writer) (err error) {
	binary, err = filepath.Abs(binary)
	if err != nil {
		return err
	}
	if _, err := os.Stat(binary); err != nil {
		return fmt.Errorf("the edgegw binary: %w (make build)", err)
	}
	begin := time.Now()
	d := &demo{binary: binary}
	defer func() {
		fmt.Fprintln(w, "tearing down…")
		err = errors.Join(err, d.close())
		if !check {
			return
		}
		if gone := d.verifyGone(); gone != nil {
			fmt.Fprintf(w, "FAIL  teardown\n")
			err = errors.Join(err, fmt.Errorf("step \"teardown\" failed: %w", gone))
		} else {
			fmt.Fprintf(w, "ok    teardown left no namespace, process, socket or file (edgegw exited %s after SIGTERM)\n",
				d.gwStopped.Round(10*time.Millisecond))
		}
		if err == nil {
			fmt.Fprintf(w, "demo-check passed in %s\n", time.Since(begin).Round(100*time.Millisecond))
		}
	}()

	step := func(s string) { fmt.Fprintf(w, "…     %s\n", s) }
	if err := d.up(ctx, step); err != nil {
		if ctx.Err() != nil {
			return errors.New("interrupted while bringing up the office")
		}
		return d.failed("bring up the office", err)
	}
	if check {
		for _, c := range d.checks() {
			t := time.Now()
			if err := c.run(ctx); err != nil {
				if ctx.Err() != nil {
					return errors.New("interrupted")
				}
				fmt.Fprintf(w, "FAIL  %s\n", c.name)
				return d.failed(c.name, err)
			}
			fmt.Fprintf(w, "ok    %s (%s)\n", c.name, time.Since(t).Round(10*time.Millisecond))
		}
		return nil
	}
	d.printTry(w)
	select {
	case <-ctx.Done():
	case <-d.gw.Done():
		return d.failed("the office gateway", fmt.Errorf("edgegw exited: %v", d.gw.Wait()))
	}
	return nil
}

// failed names the step and adds the gateway's log.
func (d *demo) failed(step string, err error) error {
	log := "(not started)"
	if d.gwLog != nil {
		log = d.gwLog.String()
	}
	return fmt.Errorf("step %q failed: %w\n--- the office gateway's log ---\n%s", step, err, log)
}

// verifyGone checks that close left nothing: no namespace of the lab, no
// lab marker, no WireGuard UAPI socket of its interfaces, no process it
// started, not the demo's directory.
func (d *demo) verifyGone() error {
	var errs []error
	if d.lab != nil {
		for _, dir := range []string{"/run/netns", "/run/netlab", "/var/run/wireguard"} {
			ents, _ := os.ReadDir(dir)
			for _, e := range ents {
				if strings.HasPrefix(e.Name(), d.lab.ID()) {
					errs = append(errs, fmt.Errorf("%s/%s left behind", dir, e.Name()))
				}
			}
		}
	}
	for _, p := range []*netlab.Proc{d.gw, d.gbr, d.ibr} {
		if p != nil && syscall.Kill(p.Pid(), 0) == nil {
			errs = append(errs, fmt.Errorf("process %d left running", p.Pid()))
		}
	}
	if _, err := os.Stat(d.dir); err == nil {
		errs = append(errs, fmt.Errorf("%s left behind", d.dir))
	}
	return errors.Join(errs...)
}

// printTry prints the office and commands to try in another shell.
func (d *demo) printTry(w io.Writer) {
	o := d.o
	ns := func(n *netlab.NS) string { return "ip netns exec " + n.Name() }
	server := o.ServerAddr.String()
	ssh := fmt.Sprintf(" timeout 3 bash -c 'head -1 </dev/tcp/%s/22'", server)
	fmt.Fprintf(w, `
The whole office is up (files in %s).

  alice (laptop, engineering) ─┐                        ┌─ gw: edgegw ── lan: office server %s
  bob (laptop, contractors) ───┼── wan (the internet) ──┤    (WireGuard, firewall, Gateway DNS, Logpush)
  GRE branch (edgegw) ─────────┤                        │
  IPsec branch (strongSwan) ───┘                        └─ branches: 10.20.0.5 (GRE), 10.30.0.5 (IPsec)

alice and bob enrolled through the OpenID provider at %s
(users %s and %s, password verysecure) and connected with wg-quick.

Try, in another shell:
`, d.dir, server, d.op.Issuer, d.op.Username(), "test-user2")
	try := [][2]string{
		{ns(o.User) + " curl -s http://" + server + "/", "alice through WireGuard: the server sees her tunnel address"},
		{ns(o.User) + ssh, "SSH greeting: alice is in engineering"},
		{ns(o.User2) + ssh, "nothing: rule " + sshRule + " blocks bob"},
		{ns(o.User2) + " curl -s http://" + server + "/", "but bob reaches the web server"},
		{ns(o.User) + " dig +short @" + gwTunnelIP + " " + overrideName, "Gateway DNS override for engineering: " + server},
		{ns(o.User2) + " dig +short @" + gwTunnelIP + " " + overrideName, "nothing for bob (NXDOMAIN from the office resolver)"},
		{ns(o.User) + " dig +short @" + gwTunnelIP + " " + blockedName, "blocked: 0.0.0.0"},
		{ns(o.GRELAN) + " curl -s http://" + server + "/", "the GRE branch reaches the office"},
		{ns(o.IPsecLAN) + " curl -s http://" + server + "/", "the IPsec branch reaches the office"},
		{ns(o.LAN) + " curl -s http://" + o.IPsecServerAddr.String() + "/", "and the office the IPsec branch"},
		{ns(o.GW) + " wg show " + d.wgIf, "the gateway's WireGuard peers"},
		{ns(o.GW) + " ip route show proto 237", "the routes to the branches"},
		{ns(o.GW) + " nft list table inet edgegw", "the firewall"},
		{ns(o.IPsecBranch) + " swanctl --list-sas --uri unix://" + d.path("ibr/charon.vici"), "the IPsec branch's SAs"},
		{"tail -f " + d.path("hec-received.ndjson"), "flow records the Splunk HEC receiver got"},
		{"tail -f " + d.path("dns.ndjson"), "DNS records in the Logpush file"},
		{"tail -f " + d.path("gw.log"), "the gateway's log"},
		{ns(o.User2) + " " + d.binary + " enroll https://" + o.GWWANAddr.String() + ":8443 --insecure --name my-laptop --out " + d.path("bob/my-laptop.conf"),
			"enroll a device yourself: approve the code at " + d.op.Issuer + "/device"},
		{fmt.Sprintf("kill -HUP %d", d.gw.Pid()), "reload " + d.path("edgegw.yaml") + " after editing it"},
	}
	{
		try = append(try, [2]string{d.binary + " status --socket " + d.adminSocketPath("gw"), "the gateway's status over its root-only admin socket"})
	}
	for _, l := range try {
		fmt.Fprintf(w, "  # %s\n  %s\n", l[1], l[0])
	}
	fmt.Fprintln(w, "\nCtrl-C tears everything down.")
}
