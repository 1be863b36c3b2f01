package main

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"sync"
	"time"

	"github.com/miekg/dns"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/swanbranch"
	"github.com/edgegw/edgegw/netflow/logpush/hectest"
	"github.com/edgegw/edgegw/tunnel/ipsec"
)

// demo is the whole office while it runs: the lab, the provider, the HEC
// receiver, the servers and the processes. close undoes all of it.
type demo struct {
	binary string
	lab    *netlab.Lab
	o      *netlab.Office
	dir    string // configurations, keys, logs, spools: removed by close
	wgIf   string // the gateway's WireGuard interface (named after the lab: its UAPI socket is global)

	op     *enrolltest.OP
	stopOP func()
	hec    *hectest.Server

	gw, gbr, ibr *netlab.Proc
	gwLog        *logFile
	gwStopped    time.Duration // how long the gateway took to exit on SIGTERM

	alice, bob laptop // the remote users' machines, once enrolled

	// The demo's own goroutines (servers, forwarders, the HEC mirror):
	// close runs closers (last first), which makes them return, and waits.
	wg      sync.WaitGroup
	stop    chan struct{}
	closers []func()
}

// laptop is a remote user's machine with its tunnel up.
type laptop struct {
	ns   *netlab.NS
	conf string // the wg-quick file
}

// The remote users: alice is in engineering (and staff), bob is a
// contractor. Both come from the provider's users.
const (
	aliceDevice = "alice-laptop"
	bobDevice   = "bob-laptop"
)

// up builds the office and starts everything in it; on error the caller
// still calls close.
func (d *demo) up(ctx context.Context, step func(string)) error {
	step("network namespaces")
	if err := netlab.Sweep(netlab.DefaultPrefix); err != nil {
		return err
	}
	lab, err := netlab.New(netlab.DefaultPrefix)
	if err != nil {
		return err
	}
	d.lab = lab
	d.wgIf = lab.ID() + "g"
	if d.o, err = lab.Office(); err != nil {
		return err
	}
	// New namespaces may inherit the host's reverse-path filter
	// (net.core.devconf_inherit_init_net); the tunnel tests run the
	// gateway without one, as the branch routers here do, and so does the
	// demo.
	if err := d.o.GW.Sysctl("net.ipv4.conf.all.rp_filter", "0"); err != nil {
		return err
	}
	if d.dir, err = os.MkdirTemp("", "edgegw-demo-"); err != nil {
		return err
	}
	for _, sub := range []string{"alice", "bob", "ibr"} {
		if err := os.Mkdir(d.path(sub), 0o700); err != nil {
			return err
		}
	}
	d.stop = make(chan struct{})
	d.closers = append(d.closers, func() { close(d.stop) })

	step("office, branch and internet servers")
	if err := d.servers(); err != nil {
		return err
	}

	step("OpenID provider and Splunk HEC receiver")
	if d.op, d.stopOP, err = enrolltest.Run(enrolltest.Options{}); err != nil {
		return err
	}
	d.op.AddDeviceClient("edgegw-cli")
	d.op.AddWebClient("edgegw-web", webSecret, "https://"+d.o.GWWANAddr.String()+":8443/cdn-cgi/access/callback")
	issuer, err := url.Parse(d.op.Issuer)
	if err != nil {
		return err
	}
	// The gateway and the laptops reach the provider at its issuer URL, as
	// they would a cloud provider over the internet.
	for _, ns := range []*netlab.NS{d.o.GW, d.o.User, d.o.User2} {
		if err := d.forward(ns, issuer.Host); err != nil {
			return err
		}
	}
	if err := d.o.GW.Do(func() error {
		d.hec = hectest.New(hectest.Config{Tokens: []string{hecToken}})
		return nil
	}); err != nil {
		return err
	}
	d.closers = append(d.closers, d.hec.Close)

	step("configuration (edgegw check)")
	files := map[string]string{
		"web.secret":          webSecret + "\n",
		"hec-token":           hecToken + "\n",
		"ipsec.psk":           ipsecPSK + "\n",
		"edgegw.yaml":         d.gatewayConfig(),
		"gre-branch.yaml":     d.greBranchConfig(),
		"ibr/swanctl.conf":    d.ipsecBranchSwanctl(),
		"ibr/strongswan.conf": ipsecBranchStrongswan(ipsec.DefaultBackend(), d.path("ibr/charon.vici"), d.path("ibr/charon.log")),
	}
	for name, body := range files {
		if err := os.WriteFile(d.path(name), []byte(body), 0o600); err != nil {
			return err
		}
	}
	for _, cfg := range []string{"edgegw.yaml", "gre-branch.yaml"} {
		if out, err := d.o.GW.Exec(ctx, d.binary, "check", "--config", d.path(cfg)); err != nil {
			return fmt.Errorf("edgegw check %s: %w\n%s", cfg, err, out)
		}
	}

	step("office gateway (edgegw)")
	if d.gw, d.gwLog, err = d.startEdgegw(ctx, d.o.GW, "edgegw.yaml", "gw.log"); err != nil {
		return err
	}
	step("GRE branch router (a second edgegw)")
	if d.gbr, _, err = d.startEdgegw(ctx, d.o.GREBranch, "gre-branch.yaml", "gre-branch.log"); err != nil {
		return err
	}
	step("IPsec branch router (stock strongSwan)")
	if err := d.startIPsecBranch(ctx); err != nil {
		return err
	}
	mirror, err := os.OpenFile(d.path("hec-received.ndjson"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	d.wg.Go(func() { d.mirrorHEC(mirror) })

	step("alice enrolls (test-user, engineering)")
	if d.alice, err = d.enroll(ctx, d.o.User, d.op.Username(), aliceDevice, d.path("alice"), "a"); err != nil {
		return err
	}
	step("bob enrolls (test-user2, contractors)")
	if d.bob, err = d.enroll(ctx, d.o.User2, enrolltest.SecondUser, bobDevice, d.path("bob"), "b"); err != nil {
		return err
	}
	return nil
}

// path is name inside the demo's directory.
func (d *demo) path(name string) string { return filepath.Join(d.dir, name) }

// close tears the office down: the laptops' tunnels, the processes and
// namespaces (Lab.Close), the provider, the receiver, the directory.
// gwStopGrace is how long close waits for the gateway to exit on SIGTERM.
// It stops charon, the dataplanes and its listeners; well under a second
// on a quiet machine, more when CI builds an image beside it.
const gwStopGrace = 30 * time.Second

func (d *demo) close() error {
	var errs []error
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	for _, c := range []laptop{d.alice, d.bob} {
		if c.conf != "" {
			if out, err := c.ns.Exec(ctx, "wg-quick", "down", c.conf); err != nil {
				errs = append(errs, fmt.Errorf("wg-quick down: %w: %s", err, out))
			}
		}
	}
	// The gateway goes first and alone, with time to remove its tunnels,
	// routes, ruleset and UAPI socket: a gateway that had to be killed is
	// a failed teardown, not something to sweep up after.
	if d.gw != nil {
		t := time.Now()
		if killed, _ := d.gw.StopWithin(gwStopGrace); killed {
			errs = append(errs, fmt.Errorf("edgegw did not exit within %s of SIGTERM and was killed\n--- its log ---\n%s",
				gwStopGrace, d.gwLog.String()))
		}
		d.gwStopped = time.Since(t)
	}
	if d.lab != nil {
		errs = append(errs, d.lab.Close())
	}
	for i := len(d.closers) - 1; i >= 0; i-- {
		d.closers[i]()
	}
	d.wg.Wait()
	if d.stopOP != nil {
		d.stopOP()
	}
	if d.gwLog != nil {
		errs = append(errs, d.gwLog.f.Close())
	}
	if d.dir != "" {
		errs = append(errs, os.RemoveAll(d.dir))
	}
	return errors.Join(errs...)
}

// servers starts what the demo's traffic goes to: the office server
// (HTTP, an SSH banner, the office's DNS resolver), and a web server in
// each branch.
func (d *demo) servers() error {
	hello := func(what string) http.Handler {
		return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
			fmt.Fprintf(w, "hello from %s; you are %s\n", what, r.RemoteAddr)
		})
	}
	for _, s := range []struct {
		ns   *netlab.NS
		addr string
		what string
	}{
		{d.o.LAN, d.o.ServerAddr.String() + ":80", "the office server"},
		{d.o.GRELAN, d.o.GREServerAddr.String() + ":80", "the GRE branch's server"},
		{d.o.IPsecLAN, d.o.IPsecServerAddr.String() + ":80", "the IPsec branch's server"},
	} {
		if _, err := s.ns.ServeHTTP(s.addr, hello(s.what)); err != nil {
			return err
		}
	}

	// An SSH server's greeting: enough to tell whether the firewall let
	// the connection through.
	ln, err := d.o.LAN.Listen("tcp", d.o.ServerAddr.String()+":22")
	if err != nil {
		return err
	}
	d.closers = append(d.closers, func() { ln.Close() })
	d.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			c.Write([]byte("SSH-2.0-edgegw_demo office server\r\n"))
			c.Close()
		}
	})

	// The office's resolver: the office's own names, and a stand-in for
	// the internet's (every name under example.com is publicAddr).
	pc, err := d.o.LAN.ListenPacket("udp", d.o.ServerAddr.String()+":53")
	if err != nil {
		return err
	}
	srv := &dns.Server{PacketConn: pc, Handler: dns.HandlerFunc(officeResolver(d.o.ServerAddr.String()))}
	started, failed := make(chan struct{}), make(chan error, 1)
	srv.NotifyStartedFunc = func() { close(started) }
	d.wg.Go(func() { failed <- srv.ActivateAndServe() })
	select {
	case <-started:
	case err := <-failed:
		return fmt.Errorf("the office resolver: %w", err)
	}
	d.closers = append(d.closers, func() { srv.Shutdown() })
	return nil
}

// officeResolver answers A queries: server.corp.example is the office
// server, names under example.com are publicAddr, anything else is
// NXDOMAIN (intranet.corp.example too: only Gateway DNS's override knows
// it, and only for engineering).
func officeResolver(server string) func(dns.ResponseWriter, *dns.Msg) {
	return func(w dns.ResponseWriter, r *dns.Msg) {
		m := new(dns.Msg)
		m.SetReply(r)
		if len(r.Question) == 1 {
			q := r.Question[0]
			var addr string
			switch name := strings.ToLower(q.Name); {
			case name == "server.corp.example.":
				addr = server
			case name == "example.com." || strings.HasSuffix(name, ".example.com."):
				addr = publicAddr
			}
			switch {
			case addr == "":
				m.Rcode = dns.RcodeNameError
			case q.Qtype == dns.TypeA:
				rr, _ := dns.NewRR(q.Name + " 300 IN A " + addr)
				m.Answer = append(m.Answer, rr)
			}
		}
		w.WriteMsg(m)
	}
}

// forward makes the demo process's loopback address hostport reachable at
// the same address inside ns.
func (d *demo) forward(ns *netlab.NS, hostport string) error {
	ln, err := ns.Listen("tcp", hostport)
	if err != nil {
		return err
	}
	var mu sync.Mutex
	conns := map[net.Conn]bool{}
	track := func(c net.Conn, on bool) {
		mu.Lock()
		defer mu.Unlock()
		if on {
			conns[c] = true
		} else {
			delete(conns, c)
		}
	}
	d.closers = append(d.closers, func() {
		ln.Close()
		mu.Lock()
		defer mu.Unlock()
		for c := range conns {
			c.Close()
		}
	})
	d.wg.Go(func() {
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			up, err := net.DialTimeout("tcp", hostport, 5*time.Second)
			if err != nil {
				c.Close()
				continue
			}
			track(c, true)
			track(up, true)
			d.wg.Go(func() {
				defer func() { track(c, false); track(up, false); c.Close(); up.Close() }()
				done := make(chan struct{})
				go func() { // owned by the enclosing goroutine, which waits for it
					defer close(done)
					io.Copy(up, c)
					up.(*net.TCPConn).CloseWrite()
				}()
				io.Copy(c, up)
				c.Close()
				<-done
			})
		}
	})
	return nil
}

// logFile is a process's log: on disk for `tail -f`, in memory for a
// failed check's report.
type logFile struct {
	f   *os.File
	mu  sync.Mutex
	buf bytes.Buffer
}

func (l *logFile) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	l.buf.Write(p)
	return l.f.Write(p)
}

func (l *logFile) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.buf.String()
}

// startEdgegw runs `edgegw run` in ns with the configuration cfg, its log
// in logName, and waits until it is up.
func (d *demo) startEdgegw(ctx context.Context, ns *netlab.NS, cfg, logName string) (*netlab.Proc, *logFile, error) {
	f, err := os.OpenFile(d.path(logName), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return nil, nil, err
	}
	lf := &logFile{f: f}
	cmd := ns.Command(d.binary, "run", "--config", d.path(cfg))
	cmd.Stdout, cmd.Stderr = lf, lf
	p, err := ns.StartCmd(cmd)
	if err != nil {
		f.Close()
		return nil, nil, err
	}
	if logName != "gw.log" {
		d.closers = append(d.closers, func() { f.Close() })
	}
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	for !strings.Contains(lf.String(), gatewayTag) {
		select {
		case <-p.Done():
			return nil, nil, fmt.Errorf("edgegw (%s) exited: %v\n%s", cfg, p.Wait(), lf)
		case <-ctx.Done():
			return nil, nil, fmt.Errorf("edgegw (%s) is not up: %w\n%s", cfg, ctx.Err(), lf)
		case <-time.After(50 * time.Millisecond):
		}
	}
	return p, lf, nil
}

// startIPsecBranch runs the IPsec branch's charon and loads its
// swanctl.conf; the branch then initiates the tunnel.
func (d *demo) startIPsecBranch(ctx context.Context) error {
	ns := d.o.IPsecBranch
	if _, err := ns.IP("addr", "add", "10.200.2.1/32", "dev", "lo"); err != nil {
		return err
	}
	out, err := os.OpenFile(d.path("ibr/charon-console.log"), os.O_WRONLY|os.O_CREATE|os.O_APPEND, 0o600)
	if err != nil {
		return err
	}
	d.closers = append(d.closers, func() { out.Close() })
	ctx, cancel := context.WithTimeout(ctx, 30*time.Second)
	defer cancel()
	d.ibr, err = swanbranch.Launch(ctx, ns, ipsec.DefaultCharon, d.path("ibr"), out)
	return err
}

// mirrorHEC appends what the HEC receiver gets to f (hec-received.ndjson)
// once a second, so that it can be watched with tail -f, until the demo
// stops; it closes f.
func (d *demo) mirrorHEC(f *os.File) {
	defer f.Close()
	seen := 0
	t := time.NewTicker(time.Second)
	defer t.Stop()
	for {
		select {
		case <-d.stop:
			return
		case <-t.C:
		}
		evs := d.hec.Events()
		for _, e := range evs[seen:] {
			f.Write(append(bytes.Clone(e.Event), '\n'))
		}
		seen = len(evs)
	}
}

var enrollCodeRE = regexp.MustCompile(`(?m)^    ([A-Z0-9-]{6,})$`)

// enroll runs `edgegw enroll` in ns as a user would, approves the code it
// shows at the provider as user (what the user does in a browser), and
// brings the tunnel up with stock wg-quick and the file enroll wrote. suffix
// names the WireGuard interface; dir holds the files.
func (d *demo) enroll(ctx context.Context, ns *netlab.NS, user, device, dir, suffix string) (laptop, error) {
	out := filepath.Join(dir, device+".conf")
	p, err := ns.Start(d.binary, "enroll", "https://"+d.o.GWWANAddr.String()+":8443",
		"--name", device, "--out", out, "--insecure", "--timeout", "60s")
	if err != nil {
		return laptop{}, err
	}
	defer p.Stop()
	ctx, cancel := context.WithTimeout(ctx, 60*time.Second)
	defer cancel()
	var code string
	for code == "" {
		if m := enrollCodeRE.FindStringSubmatch(p.Output()); m != nil {
			code = m[1]
			break
		}
		select {
		case <-p.Done():
			return laptop{}, fmt.Errorf("edgegw enroll exited before showing a code: %v\n%s", p.Wait(), p.Output())
		case <-ctx.Done():
			return laptop{}, fmt.Errorf("edgegw enroll showed no code: %w\n%s", ctx.Err(), p.Output())
		case <-time.After(50 * time.Millisecond):
		}
	}
	if err := d.op.Approve(ctx, code, user, true); err != nil {
		return laptop{}, fmt.Errorf("approve %s as %s: %w", code, user, err)
	}
	select {
	case <-p.Done():
		if err := p.Wait(); err != nil {
			return laptop{}, fmt.Errorf("edgegw enroll: %w\n%s", err, p.Output())
		}
	case <-ctx.Done():
		return laptop{}, fmt.Errorf("edgegw enroll did not finish: %w\n%s", ctx.Err(), p.Output())
	}
	conf, err := os.ReadFile(out)
	if err != nil {
		return laptop{}, err
	}
	// wg-quick hands DNS = to resolvconf, which would rewrite the host's
	// resolver configuration: the laptops ask Gateway DNS by address.
	conf = regexp.MustCompile(`(?m)^DNS = .*\n`).ReplaceAll(conf, nil)
	// wg-quick names the interface after the file.
	wgFile := filepath.Join(dir, d.lab.ID()+suffix+".conf")
	if err := os.WriteFile(wgFile, conf, 0o600); err != nil {
		return laptop{}, err
	}
	if out, err := ns.Exec(ctx, "wg-quick", "up", wgFile); err != nil {
		return laptop{}, fmt.Errorf("wg-quick up: %w\n%s", err, out)
	}
	return laptop{ns: ns, conf: wgFile}, nil
}
