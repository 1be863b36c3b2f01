// Command demo builds the remote-access topology in network namespaces
// (user — wan — gw — lan), runs the real edgegw binary in gw and Debian's
// stock WireGuard client in user, prints what to try, and tears everything
// down on Ctrl-C. It is what `sudo make demo` runs.
package main

import (
	"context"
	"flag"
	"fmt"
	"net/http"
	"os"
	"os/exec"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
)

func main() {
	binary := flag.String("binary", "bin/edgegw", "the edgegw binary to run in the gw namespace")
	flag.Parse()
	if err := run(*binary); err != nil {
		fmt.Fprintln(os.Stderr, "demo:", err)
		os.Exit(1)
	}
}

func run(binary string) error {
	binary, err := filepath.Abs(binary)
	if err != nil {
		return err
	}
	if err := netlab.Sweep(netlab.DefaultPrefix); err != nil {
		return err
	}
	lab, err := netlab.New(netlab.DefaultPrefix)
	if err != nil {
		return err
	}
	defer func() {
		fmt.Println("\ntearing down…")
		lab.Close()
	}()
	ra, err := lab.RemoteAccess()
	if err != nil {
		return err
	}
	dir, err := os.MkdirTemp("", "edgegw-demo-")
	if err != nil {
		return err
	}
	defer os.RemoveAll(dir)

	ctx, cancel := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer cancel()

	// The remote user's key, made with stock wg as a user would.
	priv, err := ra.User.Exec(ctx, "wg", "genkey")
	if err != nil {
		return fmt.Errorf("wg genkey: %w", err)
	}
	keyFile := filepath.Join(dir, "alice.key")
	if err := os.WriteFile(keyFile, priv, 0o600); err != nil {
		return err
	}
	pubCmd := ra.User.Command("wg", "pubkey")
	pubCmd.Stdin = strings.NewReader(string(priv))
	pub, err := pubCmd.Output()
	if err != nil {
		return fmt.Errorf("wg pubkey: %w", err)
	}

	gwIf, userIf := lab.ID()+"g", lab.ID()+"u"
	cfgFile := filepath.Join(dir, "edgegw.yaml")
	cfg := fmt.Sprintf(`appliance:
  name: demo
  state_dir: %[1]s/state
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  listen: 127.0.0.1:9100
  socket: %[1]s/admin.sock
tunnels:
  wireguard:
    interface: %[2]s
    listen_port: 51820
    address: 100.96.0.1/12
    peers:
      - name: alice
        public_key: %[3]q
        allowed_ips: [100.96.0.10/32]
        email: alice@corp.example
`, dir, gwIf, strings.TrimSpace(string(pub)))
	if err := os.WriteFile(cfgFile, []byte(cfg), 0o600); err != nil {
		return err
	}
	gw, err := ra.GW.StartCmd(withOutput(ra.GW.Command(binary, "run", "--config", cfgFile)))
	if err != nil {
		return err
	}
	wctx, wcancel := context.WithTimeout(ctx, 20*time.Second)
	defer wcancel()
	if err := waitReady(wctx, ra.GW); err != nil {
		return fmt.Errorf("edgegw did not become ready: %w", err)
	}

	conf, err := ra.GW.Exec(ctx, binary, "peer", "config", "alice", "--config", cfgFile,
		"--endpoint", ra.GWWANAddr.String()+":51820", "--private-key-file", keyFile)
	if err != nil {
		return fmt.Errorf("edgegw peer config: %w: %s", err, conf)
	}
	confFile := filepath.Join(dir, userIf+".conf")
	if err := os.WriteFile(confFile, conf, 0o600); err != nil {
		return err
	}
	if out, err := ra.User.Exec(ctx, "wg-quick", "up", confFile); err != nil {
		return fmt.Errorf("wg-quick up: %w: %s", err, out)
	}
	defer ra.User.Exec(context.Background(), "wg-quick", "down", confFile)

	srv, err := ra.LAN.ServeHTTP(":80", http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintf(w, "hello from the office server; you are %s\n", r.RemoteAddr)
	}))
	if err != nil {
		return err
	}
	defer srv.Close()

	ns := func(n *netlab.NS) string { return "ip netns exec " + n.Name() }
	fmt.Printf("\nedgegw demo is up (config %s).\n\n", cfgFile)
	fmt.Println("  user (remote laptop, stock wg-quick + wireguard-go) ── wan ── gw (edgegw) ── lan (office server 10.0.0.5)")
	fmt.Println("\nTry, in another shell:")
	tw := tabwriter.NewWriter(os.Stdout, 0, 8, 2, ' ', 0)
	for _, l := range [][2]string{
		{ns(ra.User) + " ping -c 3 10.0.0.5", "through the tunnel"},
		{ns(ra.User) + " curl http://10.0.0.5/", "the office web server sees 100.96.0.10"},
		{ns(ra.User) + " wg show", "the client's view"},
		{ns(ra.GW) + " wg show " + gwIf, "the gateway's view (UAPI)"},
		{binary + " status --socket " + filepath.Join(dir, "admin.sock"), "status JSON (the root-only admin socket)"},
		{ns(ra.GW) + " curl -s 127.0.0.1:9100/metrics | grep ^edgegw_", "metrics"},
		{fmt.Sprintf("kill -HUP %d", gw.Pid()), "reload " + cfgFile + " after editing it"},
	} {
		fmt.Fprintf(tw, "  %s\t# %s\n", l[0], l[1])
	}
	tw.Flush()
	fmt.Println("\nCtrl-C tears everything down.")

	select {
	case <-ctx.Done():
	case <-gw.Done():
		return fmt.Errorf("edgegw exited: %v", gw.Wait())
	}
	return nil
}

// withOutput shows the gateway's log on the terminal.
func withOutput(cmd *exec.Cmd) *exec.Cmd {
	cmd.Stdout, cmd.Stderr = os.Stdout, os.Stderr
	return cmd
}

func waitReady(ctx context.Context, gw *netlab.NS) error {
	c := gw.HTTPClient()
	for {
		req, _ := http.NewRequestWithContext(ctx, "GET", "http://127.0.0.1:9100/readyz", nil)
		resp, err := c.Do(req)
		if err == nil {
			resp.Body.Close()
			if resp.StatusCode == http.StatusOK {
				return nil
			}
		}
		select {
		case <-ctx.Done():
			return ctx.Err()
		case <-time.After(200 * time.Millisecond):
		}
	}
}
