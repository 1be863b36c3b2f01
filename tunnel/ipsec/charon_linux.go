package ipsec

import (
	"bufio"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"runtime"
	"strconv"
	"strings"
	"syscall"
	"text/template"
	"time"

	"golang.org/x/sys/unix"
)

// DefaultCharon is Debian's foreground charon (package charon-systemd).
// Unlike /usr/lib/ipsec/charon it writes no pid file of its own to
// /var/run, so it can run beside a system charon or a test's branch.
const DefaultCharon = "/usr/sbin/charon-systemd"

// The plugins edgegw's charon loads; an explicit list replaces the
// default set, so nothing from /etc/strongswan.d is picked up.
const plugins = "random nonce openssl aes gcm sha1 sha2 hmac kdf pem pkcs1 x509 pubkey " +
	"kernel-libipsec kernel-netlink socket-default vici"

// pluginList is the load list for a backend. For kernel-libipsec,
// kernel-libipsec comes before kernel-netlink so that it, not the kernel,
// handles SAs and policies; kernel-netlink still provides routes and
// addresses. The kernel backend leaves kernel-libipsec out: kernel-netlink
// installs the SAs and policies in xfrm.
func pluginList(backend string) string {
	if backend == BackendKernel {
		return strings.Replace(plugins, "kernel-libipsec ", "", 1)
	}
	return plugins
}

var confTemplate = template.Must(template.New("strongswan.conf").Parse(`# Written by edgegw for its own charon; replaced at every start.
charon-systemd {
	load = {{.Plugins}}
	# edgegw's route manager owns routes; tunnel addresses are its own.
	install_routes = no
	install_virtual_ip = no
	# kernel-libipsec installs a route per remote selector whatever
	# install_routes says; they go to a table no rule consults (edgegw
	# deletes the rule charon adds for it), as edgegw's route manager
	# decides what goes through which tunnel. The kernel backend
	# installs none, but charon still adds the rule.
	routing_table = {{.Table}}
	routing_table_prio = {{.Table}}
	# Dead peers: 3 retransmits 2s, 3s, 4.5s apart, so DPD gives up within
	# about 20s instead of strongSwan's default 165s.
	retransmit_tries = 3
	retransmit_timeout = 2
	retransmit_base = 1.5
	# IKE_SA_INIT floods: answer with cookies once {{.Cookie}} half-open SAs
	# exist, and refuse a source with more than {{.Block}} half-open SAs, so a
	# flooding peer cannot starve other tunnels.
	cookie_threshold = {{.Cookie}}
	block_threshold = {{.Block}}
	half_open_timeout = 15
	plugins {
		vici {
			socket = unix://{{.Socket}}
		}
{{- if eq .Backend "kernel"}}
		kernel-netlink {
			# Routes into the xfrm interfaces are edgegw's too.
			install_routes_xfrmi = no
		}
{{- else}}
		kernel-libipsec {
			allow_peer_ts = no
		}
{{- end}}
	}
	# Logs go to edgegw over VICI, nowhere else.
	journal {
		default = -1
	}
	syslog {
		daemon {
			default = -1
		}
		auth {
			default = -1
		}
	}
}
`))

type confParams struct {
	Plugins, Backend     string
	Socket               string
	Cookie, Block, Table int
}

// charonTable is the routing table charon's own routes go to, unused.
const charonTable = 2370

// writeConf writes the private strongswan.conf.
func writeConf(path string, p confParams) error {
	var b strings.Builder
	if err := confTemplate.Execute(&b, p); err != nil {
		return err
	}
	return os.WriteFile(path, []byte(b.String()), 0o600)
}

// pluginDir is where Debian installs charon's plugins.
const pluginDir = "/usr/lib/ipsec/plugins"

// checkPlugins reports plugins of the load list that are not installed,
// with the Debian package that has them: charon would start without them
// and then fail every negotiation with "DH group not supported".
func checkPlugins(backend string) error {
	pkgs := map[string]string{"openssl": "libstrongswan-standard-plugins", "gcm": "libstrongswan-standard-plugins",
		"kernel-libipsec": "libcharon-extra-plugins", "vici": "strongswan-libcharon"}
	var missing []string
	for _, p := range strings.Fields(pluginList(backend)) {
		if _, err := os.Stat(filepath.Join(pluginDir, "libstrongswan-"+p+".so")); err != nil {
			missing = append(missing, p+" ("+pkgs[p]+")")
		}
	}
	if len(missing) > 0 {
		return fmt.Errorf("strongSwan plugins missing from %s: %s", pluginDir, strings.Join(missing, ", "))
	}
	return nil
}

// inNS runs fn on a thread in the network namespace open at fd.
func inNS(fd int, fn func() error) error {
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		orig, err := unix.Open("/proc/thread-self/ns/net", unix.O_RDONLY|unix.O_CLOEXEC, 0)
		if err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("open network namespace: %w", err)
			return
		}
		defer unix.Close(orig)
		if err := unix.Setns(fd, unix.CLONE_NEWNET); err != nil {
			runtime.UnlockOSThread()
			errc <- fmt.Errorf("enter network namespace: %w", err)
			return
		}
		err = fn()
		if unix.Setns(orig, unix.CLONE_NEWNET) == nil {
			runtime.UnlockOSThread()
		} // else: the thread stays locked and dies with this goroutine
		errc <- err
	}()
	return <-errc
}

// charonProc is one running charon.
type charonProc struct {
	cmd  *exec.Cmd
	done chan struct{}
	err  error // after done
}

// startCharon starts charon in the namespace fd with conf, its output
// going line by line to logLine, and records its pid in pidFile.
func startCharon(path, conf, pidFile string, nsFD int, logLine func(string)) (*charonProc, error) {
	cmd := exec.Command(path)
	cmd.Env = append(os.Environ(), "STRONGSWAN_CONF="+conf)
	// If edgegw dies without closing, charon goes with it.
	cmd.SysProcAttr = &syscall.SysProcAttr{Pdeathsig: syscall.SIGTERM, Setpgid: true}
	r, w := io.Pipe()
	cmd.Stdout, cmd.Stderr = w, w
	if err := inNS(nsFD, cmd.Start); err != nil {
		w.Close()
		return nil, fmt.Errorf("start %s: %w", path, err)
	}
	p := &charonProc{cmd: cmd, done: make(chan struct{})}
	go func() {
		sc := bufio.NewScanner(r)
		for sc.Scan() {
			logLine(sc.Text())
		}
	}()
	go func() {
		p.err = cmd.Wait()
		w.Close()
		close(p.done)
	}()
	if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o644); err != nil {
		p.stop(0)
		return nil, fmt.Errorf("write %s: %w", pidFile, err)
	}
	return p, nil
}

// stop asks charon to leave (it deletes its SAs and its TUN), and kills
// it after grace.
func (p *charonProc) stop(grace time.Duration) error {
	select {
	case <-p.done:
		return nil
	default:
	}
	p.cmd.Process.Signal(syscall.SIGTERM)
	t := time.NewTimer(grace)
	defer t.Stop()
	select {
	case <-p.done:
		return nil
	case <-t.C:
	}
	p.cmd.Process.Kill()
	<-p.done
	return fmt.Errorf("charon (pid %d) did not stop within %v and was killed", p.cmd.Process.Pid, grace)
}
