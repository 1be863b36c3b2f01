// Package swanbranch is the one IPsec branch fixture of edgegw's tests
// and demo: a stock strongSwan charon in a network namespace, configured
// with swanctl as a branch router's documentation would, independent of
// edgegw's own IPsec code. It writes the branch's strongswan.conf and
// swanctl.conf, runs its charon, loads the connection and drives it with
// swanctl.
//
// It imports nothing of edgegw's tunnel packages, so tunnel/ipsec's own
// (internal) tests may use it without an import cycle: the caller names
// the charon binary and the backend.
package swanbranch

import (
	"context"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// Backends, as tunnel/ipsec names them: where the branch's ESP runs.
const (
	// BackendLibipsec is ESP in charon's kernel-libipsec (a TUN): the
	// only choice on kernels without ESP.
	BackendLibipsec = "kernel-libipsec"
	// BackendKernel is ESP in the kernel's xfrm.
	BackendKernel = "kernel"
)

// DefaultProposals and DefaultESPProposals are what a Conn offers unless
// it says otherwise: the proposals edgegw's own defaults accept.
const (
	DefaultProposals    = "aes256gcm16-prfsha256-ecp384"
	DefaultESPProposals = "aes256gcm16-ecp384"
)

// plugins is the branch charon's load list. An explicit list replaces the
// default set, so nothing from the host's /etc/strongswan.d is picked up.
const plugins = "random nonce openssl aes gcm sha1 sha2 hmac kdf pem pkcs1 x509 pubkey " +
	"kernel-libipsec kernel-netlink socket-default vici"

// Plugins is the branch charon's load list for backend. For
// kernel-libipsec it comes before kernel-netlink, so that it, not the
// kernel, handles SAs and policies; the kernel backend leaves it out.
func Plugins(backend string) string {
	if backend == BackendKernel {
		return strings.Replace(plugins, "kernel-libipsec ", "", 1)
	}
	return plugins
}

// pluginPackages names the Debian package of each plugin that is not in
// charon's own.
var pluginPackages = map[string]string{
	"openssl": "libstrongswan-standard-plugins", "gcm": "libstrongswan-standard-plugins",
	"kernel-libipsec": "libcharon-extra-plugins", "vici": "strongswan-libcharon",
}

// PluginDir is where Debian's strongSwan keeps its plugins.
const PluginDir = "/usr/lib/ipsec/plugins"

// Need fails tb (skips it in -short mode, see [testkit.NeedTool]) unless
// charon, swanctl and the plugins of backend are installed, naming the
// Debian packages that bring what is missing.
func Need(tb testing.TB, charon, backend string) {
	tb.Helper()
	testkit.NeedTool(tb, charon, "charon-systemd")
	testkit.NeedTool(tb, "swanctl", "strongswan-swanctl")
	var missing []string
	for _, p := range strings.Fields(Plugins(backend)) {
		if _, err := os.Stat(filepath.Join(PluginDir, "libstrongswan-"+p+".so")); err != nil {
			if pkg := pluginPackages[p]; pkg != "" {
				p += " (" + pkg + ")"
			}
			missing = append(missing, p)
		}
	}
	if len(missing) > 0 {
		testkit.Unavailable(tb, fmt.Sprintf("strongSwan plugins missing from %s: %s (make deps installs them)", PluginDir, strings.Join(missing, ", ")))
	}
}

// Charon is the branch charon's strongswan.conf.
type Charon struct {
	Backend string // BackendLibipsec or BackendKernel
	VICI    string // the VICI socket's path
	Log     string // charon's log file ("" for none)
	// RetransmitTries is how often charon resends an IKE message, a
	// second apart, before it gives up; 0 means 2, quick for tests.
	RetransmitTries int
}

// Conf is the text of strongswan.conf: policy-based, routes installed in
// table 220 as strongSwan does by default, ESP where Backend says.
func (c Charon) Conf() string {
	tries := c.RetransmitTries
	if tries == 0 {
		tries = 2
	}
	filelog := ""
	if c.Log != "" {
		filelog = fmt.Sprintf(`
	filelog {
		f {
			path = %s
			default = 1
		}
	}`, c.Log)
	}
	return fmt.Sprintf(`charon-systemd {
	load = %s
	install_routes = yes
	retransmit_tries = %d
	retransmit_timeout = 1
	plugins {
		vici {
			socket = unix://%s
		}
	}
	journal {
		default = -1
	}%s
}
`, Plugins(c.Backend), tries, c.VICI, filelog)
}

// Conn is the branch's one IKEv2 connection with a pre-shared key, and
// its one child SA of the same name.
type Conn struct {
	Name              string   // connection and child SA name, as swanctl --initiate --child knows it
	Local, Remote     string   // the branch's and the gateway's public addresses
	LocalID, RemoteID string   // IKE identities
	LocalTS, RemoteTS []string // traffic selectors: the branch's side and the gateway's
	Proposals         string   // IKE proposals; "" is DefaultProposals
	ESPProposals      string   // ESP proposals; "" is DefaultESPProposals
	PSK               string
	Initiate          bool // start the child SA when loaded (start_action = start)
}

// Swanctl is the text of the branch's swanctl.conf, with dead peer
// detection every 2 s that restarts the connection.
func (c Conn) Swanctl() string {
	ike, esp := c.Proposals, c.ESPProposals
	if ike == "" {
		ike = DefaultProposals
	}
	if esp == "" {
		esp = DefaultESPProposals
	}
	start := "none"
	if c.Initiate {
		start = "start"
	}
	return fmt.Sprintf(`connections {
	%[1]s {
		version = 2
		local_addrs = %[2]s
		remote_addrs = %[3]s
		proposals = %[4]s
		dpd_delay = 2s
		local {
			auth = psk
			id = %[5]s
		}
		remote {
			auth = psk
			id = %[6]s
		}
		children {
			%[1]s {
				local_ts = %[7]s
				remote_ts = %[8]s
				esp_proposals = %[9]s
				start_action = %[10]s
				dpd_action = restart
			}
		}
	}
}
secrets {
	ike-%[1]s {
		id-1 = %[5]s
		id-2 = %[6]s
		secret = "%[11]s"
	}
}
`, c.Name, c.Local, c.Remote, ike, c.LocalID, c.RemoteID,
		strings.Join(c.LocalTS, ", "), strings.Join(c.RemoteTS, ", "), esp, start, c.PSK)
}

// Branch is a running branch charon: its files live in Dir (charon.vici,
// charon.log, strongswan.conf, swanctl.conf).
type Branch struct {
	NS      *netlab.NS
	Dir     string
	Charon  string // the charon binary
	Backend string
	// RetransmitTries is passed to [Charon.RetransmitTries].
	RetransmitTries int
	// Proc is the running charon; Start replaces it.
	Proc *netlab.Proc
}

// Start writes the branch's strongswan.conf and swanctl (the text of its
// swanctl.conf) into dir, runs charon in ns and loads the connection.
// The lab that owns ns stops charon with its other processes.
func Start(tb testing.TB, ns *netlab.NS, charon, backend, dir, swanctl string) *Branch {
	tb.Helper()
	b := &Branch{NS: ns, Dir: dir, Charon: charon, Backend: backend}
	b.WriteSwanctl(tb, swanctl)
	b.Start(tb)
	return b
}

// VICI is the path of the branch charon's VICI socket.
func (b *Branch) VICI() string { return filepath.Join(b.Dir, "charon.vici") }

// LogFile is the path of the branch charon's log.
func (b *Branch) LogFile() string { return filepath.Join(b.Dir, "charon.log") }

// Log is the branch charon's log so far ("" if it wrote none).
func (b *Branch) Log() string {
	l, _ := os.ReadFile(b.LogFile())
	return string(l)
}

// WriteSwanctl replaces the branch's swanctl.conf; [Branch.Start] or
// [Branch.Reload] loads it.
func (b *Branch) WriteSwanctl(tb testing.TB, swanctl string) {
	tb.Helper()
	if err := os.WriteFile(filepath.Join(b.Dir, "swanctl.conf"), []byte(swanctl), 0o600); err != nil {
		tb.Fatal(err)
	}
}

// Start (again, after [Branch.Kill]) writes strongswan.conf, runs charon
// until its VICI socket is there and loads swanctl.conf.
func (b *Branch) Start(tb testing.TB) {
	tb.Helper()
	c := Charon{Backend: b.Backend, VICI: b.VICI(), Log: b.LogFile(), RetransmitTries: b.RetransmitTries}
	if err := os.WriteFile(filepath.Join(b.Dir, "strongswan.conf"), []byte(c.Conf()), 0o600); err != nil {
		tb.Fatal(err)
	}
	ctx, cancel := context.WithTimeout(tb.Context(), 30*time.Second)
	defer cancel()
	p, err := Launch(ctx, b.NS, b.Charon, b.Dir, nil)
	if err != nil {
		tb.Fatal(err)
	}
	b.Proc = p
}

// Launch runs charon in ns with the strongswan.conf and swanctl.conf in
// dir (its VICI socket dir/charon.vici), waits for the socket and loads
// swanctl.conf. Charon's output goes to out, or to [netlab.Proc.Output]
// if out is nil. The lab that owns ns stops charon; on an error after
// the start Launch kills it.
func Launch(ctx context.Context, ns *netlab.NS, charon, dir string, out io.Writer) (*netlab.Proc, error) {
	sock := filepath.Join(dir, "charon.vici")
	os.Remove(sock) // a killed charon leaves it behind
	cmd := ns.Command(charon)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+filepath.Join(dir, "strongswan.conf"))
	if out != nil {
		cmd.Stdout, cmd.Stderr = out, out
	}
	p, err := ns.StartCmd(cmd)
	if err != nil {
		return nil, fmt.Errorf("start the branch's charon: %w", err)
	}
	tick := time.NewTicker(20 * time.Millisecond)
	defer tick.Stop()
	for {
		if _, err := os.Stat(sock); err == nil {
			break
		}
		select {
		case <-p.Done():
			return nil, fmt.Errorf("the branch's charon exited: %v\n%s", p.Wait(), p.Output())
		case <-ctx.Done():
			p.Kill()
			return nil, fmt.Errorf("the branch's charon opened no VICI socket: %w", ctx.Err())
		case <-tick.C:
		}
	}
	if b, err := ns.Exec(ctx, "swanctl", "--load-all", "--file", filepath.Join(dir, "swanctl.conf"), "--uri", "unix://"+sock); err != nil {
		p.Kill()
		return nil, fmt.Errorf("swanctl --load-all: %w\n%s", err, b)
	}
	return p, nil
}

// Kill kills the branch's charon (its SAs and TUN die with it) and waits
// for it to exit.
func (b *Branch) Kill() {
	b.Proc.Kill() // its error is the "signal: killed" it died of
}

// Swanctl runs swanctl with args against the branch's charon and returns
// its output; a failure fails tb.
func (b *Branch) Swanctl(tb testing.TB, args ...string) string {
	tb.Helper()
	out, err := b.swanctl(tb, args...)
	if err != nil {
		tb.Fatalf("swanctl %v: %v\n%s", args, err, out)
	}
	return out
}

func (b *Branch) swanctl(tb testing.TB, args ...string) (string, error) {
	ctx, cancel := context.WithTimeout(tb.Context(), 20*time.Second)
	defer cancel()
	out, err := b.NS.Exec(ctx, "swanctl", append(args, "--uri", "unix://"+b.VICI())...)
	return string(out), err
}

// Reload replaces the branch's swanctl.conf and restarts its SA:
// terminate, load, initiate. Terminating and initiating may fail (no SA
// yet, a peer that refuses), which is what some tests are after; loading
// may not.
func (b *Branch) Reload(tb testing.TB, swanctl string, name string) {
	tb.Helper()
	b.WriteSwanctl(tb, swanctl)
	b.swanctl(tb, "--terminate", "--ike", name, "--force", "--timeout", "2")
	b.Swanctl(tb, "--load-all", "--file", filepath.Join(b.Dir, "swanctl.conf"))
	b.swanctl(tb, "--initiate", "--child", name, "--timeout", "10")
}
