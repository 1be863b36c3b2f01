package main

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

// A check is one assertion of `make demo-check`: what it shows, how long
// it may take to become true under load, and the probe.
type check struct {
	name    string
	timeout time.Duration
	// once: the probe runs one time (a block must hold, not eventually
	// happen); otherwise it is retried until it passes or timeout.
	once  bool
	probe func(ctx context.Context) error
}

// checks are the demo's steps as assertions, in the order the "try" list
// shows them.
func (d *demo) checks() []check {
	o := d.o
	server := o.ServerAddr.String()
	return []check{
		{name: "alice (enrolled, engineering) pings the office server through WireGuard", timeout: 20 * time.Second,
			probe: func(context.Context) error { return o.User.Ping(server) }},
		{name: "alice reaches the office web server from her tunnel address", timeout: 10 * time.Second,
			probe: func(ctx context.Context) error {
				return httpSays(ctx, o.User, "http://"+server+"/", "hello from the office server; you are 100.9")
			}},
		{name: "alice (engineering) reaches SSH on the office server", timeout: 10 * time.Second,
			probe: func(ctx context.Context) error { return sshBanner(ctx, o.User, server) }},
		{name: "bob (enrolled, contractors) reaches the office web server", timeout: 20 * time.Second,
			probe: func(ctx context.Context) error {
				return httpSays(ctx, o.User2, "http://"+server+"/", "hello from the office server; you are 100.9")
			}},
		{name: "bob (not in engineering) is blocked on SSH by rule " + sshRule, once: true,
			probe: func(ctx context.Context) error {
				ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
				defer cancel()
				if err := sshBanner(ctx, o.User2, server); err == nil {
					return errors.New("bob got the SSH greeting")
				}
				return nil
			}},
		{name: "the GRE branch's LAN reaches the office LAN (edgegw ⇄ edgegw over userspace GRE)", timeout: 30 * time.Second,
			probe: func(ctx context.Context) error {
				return httpSays(ctx, o.GRELAN, "http://"+server+"/", "you are "+o.GREServerAddr.String()+":")
			}},
		{name: "the office LAN reaches the GRE branch's server", timeout: 10 * time.Second,
			probe: func(ctx context.Context) error {
				return httpSays(ctx, o.LAN, "http://"+o.GREServerAddr.String()+"/", "hello from the GRE branch's server; you are "+server+":")
			}},
		{name: "the IPsec branch's LAN reaches the office LAN (edgegw's charon ⇄ stock strongSwan)", timeout: 45 * time.Second,
			probe: func(ctx context.Context) error {
				return httpSays(ctx, o.IPsecLAN, "http://"+server+"/", "you are "+o.IPsecServerAddr.String()+":")
			}},
		{name: "the office LAN reaches the IPsec branch's server", timeout: 10 * time.Second,
			probe: func(ctx context.Context) error {
				return httpSays(ctx, o.LAN, "http://"+o.IPsecServerAddr.String()+"/", "hello from the IPsec branch's server; you are "+server+":")
			}},
		{name: "Gateway DNS answers alice's " + overrideName + " with the engineering override", timeout: 15 * time.Second,
			probe: func(ctx context.Context) error { return digSays(ctx, o.User, overrideName, server) }},
		{name: "Gateway DNS blocks " + blockedName + " for alice (rule " + blockRule + ")", timeout: 10 * time.Second,
			probe: func(ctx context.Context) error { return digSays(ctx, o.User, blockedName, "0.0.0.0") }},
		{name: "Gateway DNS resolves " + publicName + " through the office resolver", timeout: 10 * time.Second,
			probe: func(ctx context.Context) error { return digSays(ctx, o.User, publicName, publicAddr) }},
		{name: "Gateway DNS gives bob (not in engineering) no override for " + overrideName, timeout: 10 * time.Second,
			probe: func(ctx context.Context) error { return digSays(ctx, o.User2, overrideName, "") }},
		{name: "flow records reach the Splunk HEC receiver, bob's blocked SSH among them", timeout: 30 * time.Second,
			probe: d.hecHasBlockedSSH},
		{name: "DNS records reach the Logpush file, with the users' identities and policies", timeout: 30 * time.Second,
			probe: d.fileHasDNSRecords},
	}
}

// run runs c: until it passes or its timeout, or once.
func (c check) run(ctx context.Context) error {
	if c.once {
		return c.probe(ctx)
	}
	deadline := time.Now().Add(c.timeout)
	for {
		pctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		err := c.probe(pctx)
		cancel()
		if err == nil {
			return nil
		}
		if time.Now().After(deadline) || ctx.Err() != nil {
			return fmt.Errorf("still failing after %s: %w", c.timeout, err)
		}
		select {
		case <-ctx.Done():
		case <-time.After(200 * time.Millisecond):
		}
	}
}

// httpSays gets url from inside ns and wants want in the body.
func httpSays(ctx context.Context, ns *netlab.NS, url, want string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodGet, url, nil)
	if err != nil {
		return err
	}
	resp, err := ns.HTTPClient().Do(req)
	if err != nil {
		return err
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(resp.Body)
	if err != nil {
		return err
	}
	if !strings.Contains(string(b), want) {
		return fmt.Errorf("GET %s from %s: %q, want %q in it", url, ns.Name(), b, want)
	}
	return nil
}

// sshBanner connects to server:22 from ns and reads the SSH greeting.
func sshBanner(ctx context.Context, ns *netlab.NS, server string) error {
	ctx, cancel := context.WithTimeout(ctx, 3*time.Second)
	defer cancel()
	c, err := ns.DialContext(ctx, "tcp", net.JoinHostPort(server, "22"))
	if err != nil {
		return err
	}
	defer c.Close()
	deadline, _ := ctx.Deadline()
	c.SetReadDeadline(deadline)
	b := make([]byte, 64)
	n, err := io.ReadAtLeast(c, b, 8)
	if err != nil {
		return fmt.Errorf("read the SSH greeting: %w", err)
	}
	if !strings.HasPrefix(string(b[:n]), "SSH-2.0-") {
		return fmt.Errorf("greeting %q", b[:n])
	}
	return nil
}

// digSays asks Gateway DNS (on the gateway's tunnel address, so through
// the WireGuard tunnel) for name's A record from ns; want "" means no
// address (NXDOMAIN).
func digSays(ctx context.Context, ns *netlab.NS, name, want string) error {
	out, err := ns.Exec(ctx, "dig", "+short", "+tries=1", "+time=2", "@"+gwTunnelIP, name, "A")
	if err != nil {
		return err
	}
	if got := strings.TrimSpace(string(out)); got != want {
		return fmt.Errorf("dig @%s %s from %s: %q, want %q", gwTunnelIP, name, ns.Name(), got, want)
	}
	return nil
}

// hecHasBlockedSSH wants a network_analytics_logs record of bob's SSH
// attempt, dropped by the identity rule, among the HEC receiver's events.
func (d *demo) hecHasBlockedSSH(context.Context) error {
	evs := d.hec.Events()
	for _, e := range evs {
		var r map[string]any
		if json.Unmarshal(e.Event, &r) != nil {
			continue
		}
		if r["RuleID"] == sshRule && r["Outcome"] == "drop" && r["DestinationPort"] == float64(22) && r["Email"] == bobEmail {
			return nil
		}
	}
	return fmt.Errorf("%d events, none a drop by %s of %s's SSH", len(evs), sshRule, bobEmail)
}

// fileHasDNSRecords wants, in the Logpush file of gateway_dns records,
// alice's blocked query and her overridden one, each with her identity and
// the policy that decided it.
func (d *demo) fileHasDNSRecords(context.Context) error {
	b, err := os.ReadFile(d.path("dns.ndjson"))
	if err != nil {
		return err
	}
	want := map[string]string{blockedName: blockRule, overrideName: overrideRule}
	for line := range strings.Lines(string(b)) {
		var r map[string]any
		if json.Unmarshal([]byte(line), &r) != nil {
			return fmt.Errorf("dns.ndjson: not JSON: %q", line)
		}
		name, _ := r["QueryName"].(string)
		if p, ok := want[name]; ok && r["PolicyID"] == p && r["Email"] == aliceEmail {
			delete(want, name)
		}
	}
	if len(want) > 0 {
		return fmt.Errorf("dns.ndjson (%d bytes) lacks %s's queries for %v with their policies", len(b), aliceEmail, want)
	}
	return nil
}
