package ha

import (
	"context"
	"fmt"
	"net"
	"net/netip"
	"os/exec"
	"slices"
	"strconv"
	"strings"
	"text/template"
	"time"
)

// DefaultConntrackd is Debian's conntrackd (package conntrackd).
const DefaultConntrackd = "/usr/sbin/conntrackd"

// SyncPort is the UDP port conntrackd's FTFW messages use on the sync
// link (conntrackd's usual one).
const SyncPort = 3780

// ctPaths are conntrackd's private files: its lock file and control
// socket would otherwise be /var/lock and /var/run, shared by every
// conntrackd on the host (and every namespace in tests).
type ctPaths struct {
	Lock, Ctl string
}

var ctTemplate = template.Must(template.New("conntrackd.conf").Parse(`# Written by edgegw for its own conntrackd; replaced at every start.
General {
	HashSize 32768
	HashLimit 262144
	# conntrackd runs in the foreground; edgegw reads its output.
	LogFile off
	Syslog off
	LockFile {{.Lock}}
	UNIX {
		Path {{.Ctl}}
	}
	NetlinkBufferSize 2097152
	NetlinkBufferSizeMaxGrowth 8388608
	Filter From Userspace {
		Protocol Accept {
			TCP
			SCTP
			DCCP
			UDP
		}
		# The nodes' own and the LAN virtual addresses as a connection's
		# real ends: sessions of the node itself, not forwarded ones. The
		# WAN virtual addresses are not here: sessions to them (remote
		# users' WireGuard, with the mark that names the peer) are what
		# the next active node needs to reach its users first.
		Address Ignore {
{{- range .Ignore}}
			{{if .Is4}}IPv4_address{{else}}IPv6_address{{end}} {{.}}
{{- end}}
		}
	}
}
Sync {
	# FTFW: acknowledged, resent on loss. The standby writes the active
	# node's sessions into its kernel table as they arrive (no external
	# cache to commit at failover): a segment that reaches the new active
	# node before a commit finished would meet its own stack, which
	# answers with a reset.
	Mode FTFW {
		DisableExternalCache On
		StartupResync On
	}
	UDP {
		IPv4_address {{.Local}}
		IPv4_Destination_Address {{.Peer}}
		Port {{.Port}}
		Interface {{.Interface}}
		Checksum on
	}
}
`))

// RenderConntrackd returns conntrackd.conf for c: FTFW over UDP between
// local (this node's address on the sync link) and the peer; sessions
// whose real ends are in ignore (the nodes' own addresses) or the LAN
// virtual addresses are not synced. Sessions to the WAN virtual addresses
// are: the WireGuard part marks remote users' sessions with their tunnel
// address, and the node that takes over reads them to initiate handshakes
// (wireguard.Takeover).
func RenderConntrackd(c Config, p ctPaths, local netip.Addr, ignore []netip.Addr) (string, error) {
	if !local.Is4() || !c.Peer.Is4() {
		return "", fmt.Errorf("conntrackd: sync addresses must be IPv4 (local %v, peer %v)", local, c.Peer)
	}
	for _, f := range []string{p.Lock, p.Ctl} {
		if f == "" || strings.ContainsAny(f, " \t\n\"{}#") {
			return "", fmt.Errorf("conntrackd: unusable path %q", f)
		}
	}
	if !validIfname(c.Interface) {
		return "", fmt.Errorf("conntrackd: invalid interface %q", c.Interface)
	}
	ign := []netip.Addr{netip.MustParseAddr("127.0.0.1"), netip.IPv6Loopback(), local, c.Peer}
	wan := map[netip.Addr]bool{}
	for _, v := range c.VirtualAddresses.WAN {
		wan[v.Addr()] = true
	}
	for _, a := range ignore {
		// A WAN virtual address this node holds now is no own address.
		if !wan[a.Unmap()] {
			ign = append(ign, a.Unmap())
		}
	}
	for _, v := range c.VirtualAddresses.LAN {
		ign = append(ign, v.Addr())
	}
	slices.SortFunc(ign, func(a, b netip.Addr) int { return a.Compare(b) })
	ign = slices.Compact(ign)
	var b strings.Builder
	err := ctTemplate.Execute(&b, struct {
		ctPaths
		Ignore      []netip.Addr
		Local, Peer netip.Addr
		Port        int
		Interface   string
	}{p, ign, local, c.Peer, SyncPort, c.Interface})
	return b.String(), err
}

// syncAddrs finds this node's IPv4 address on the sync link (the one
// whose subnet holds the peer) and every address of the node, for
// conntrackd's filter. It runs in the node's network namespace.
func syncAddrs(ifname string, peer netip.Addr) (local netip.Addr, all []netip.Addr, err error) {
	ifi, err := net.InterfaceByName(ifname)
	if err != nil {
		return local, nil, fmt.Errorf("sync link %q: %w", ifname, err)
	}
	addrs, err := ifi.Addrs()
	if err != nil {
		return local, nil, fmt.Errorf("sync link %q: %w", ifname, err)
	}
	for _, a := range addrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil && p.Addr().Is4() && p.Masked().Contains(peer) {
			local = p.Addr()
		}
	}
	if !local.IsValid() {
		return local, nil, fmt.Errorf("sync link %q has no IPv4 address in the peer's (%v) subnet", ifname, peer)
	}
	ifaddrs, err := net.InterfaceAddrs()
	if err != nil {
		return local, nil, fmt.Errorf("interface addresses: %w", err)
	}
	for _, a := range ifaddrs {
		if p, err := netip.ParsePrefix(a.String()); err == nil {
			all = append(all, p.Addr())
		}
	}
	return local, all, nil
}

// ctAction is one conntrackd client command of the primary-backup
// pattern (conntrack-tools' doc/sync/primary-backup.sh).
type ctAction struct {
	flag, what string
}

// ctActions are what a role asks of conntrackd:
//   - master: commit what an external cache would hold (nothing while the
//     cache is off; kept so the steps stay right if it is turned on),
//     flush both caches, resync the internal cache from the kernel (now
//     the peer's sessions too) and send it all to the peer in bulk;
//   - backup: ask the peer for a resync, so its sessions are in this
//     node's kernel before the next failover.
//
// The primary-backup pattern also shortens the kernel timers (-t) on
// backup and fault, to age out sessions the node held as master. With
// the external cache off those entries are the peer's live sessions,
// written here as they change, and shortening their timers would drop
// an idle session's copy before the next failover; so this node lets
// them expire on their own timers.
var ctActions = map[string][]ctAction{
	RoleMaster: {{"-c", "commit"}, {"-f", "flush"}, {"-R", "resync from kernel"}, {"-B", "bulk send"}},
	RoleBackup: {{"-n", "request resync"}},
}

// ctClient runs one conntrackd client command against this node's
// conntrackd (its control socket named in conf).
func (n *Node) ctClient(ctx context.Context, flag string) error {
	_, err := n.ctRun(ctx, flag)
	return err
}

// ctClientOutput runs a conntrackd client command that prints (-s, -i,
// -e) and returns what it printed.
func (n *Node) ctClientOutput(flag string) (string, error) {
	return n.ctRun(context.Background(), flag)
}

func (n *Node) ctRun(ctx context.Context, flag string) (string, error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	// The client reads the same file to find the control socket; it runs
	// in the node's namespace, where the sync interface the file names
	// exists.
	cmd := exec.CommandContext(ctx, n.opts.Conntrackd, "-C", n.ctConf, flag)
	var out []byte
	err := n.opts.Enter(func() error {
		var err error
		out, err = cmd.CombinedOutput()
		return err
	})
	if err != nil {
		return "", fmt.Errorf("conntrackd %s: %w: %s", flag, err, strings.TrimSpace(string(out)))
	}
	return string(out), nil
}

// waitConntrackd polls conntrackd's control socket until it answers.
func (n *Node) waitConntrackd(ctx context.Context) error {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	for {
		err := n.ctClient(ctx, "-s")
		if err == nil {
			return nil
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("conntrackd does not answer: %w", err)
		case <-time.After(50 * time.Millisecond):
		}
	}
}

// followRole runs conntrackd's part of every role change, and again
// after conntrackd restarts (a new conntrackd knows nothing of the role).
// It is the Node's goroutine; it returns when the Node stops.
func (n *Node) followRole(ctx context.Context) {
	defer close(n.followed)
	doneRole, doneGen := "", uint64(0)
	for {
		role, changed := n.Role()
		n.mu.Lock()
		gen, started := n.ctGen, n.ctStarted
		n.mu.Unlock()
		if gen > 0 && (role != doneRole || gen != doneGen) {
			doneRole, doneGen = role, gen
			if acts := ctActions[role]; len(acts) > 0 {
				n.runActions(ctx, role, acts)
			}
			continue // the role may have moved on meanwhile
		}
		select {
		case <-ctx.Done():
			return
		case <-changed:
		case <-started:
		}
	}
}

func (n *Node) runActions(ctx context.Context, role string, acts []ctAction) {
	if err := n.waitConntrackd(ctx); err != nil {
		n.ctFailed(role, "wait", err)
		return
	}
	start := time.Now()
	for _, a := range acts {
		if err := n.ctClient(ctx, a.flag); err != nil {
			n.ctFailed(role, a.what, err)
			return
		}
	}
	n.log.Info("conntrackd follows the role", "role", role, "took", time.Since(start))
	n.mu.Lock()
	n.ctSynced[role]++
	n.mu.Unlock()
}

func (n *Node) ctFailed(role, what string, err error) {
	n.log.Error("conntrackd could not follow the role", "role", role, "step", what, "err", err)
	n.mu.Lock()
	n.ctFailures++
	n.mu.Unlock()
}

// SyncStats are conntrackd's counters of its sync channel: datagrams
// sent to and received from the peer over the sync link, and the peer's
// session messages written into this node's kernel (created or updated
// entries).
type SyncStats struct {
	PacketsSent     uint64 `json:"packets_sent"`
	PacketsReceived uint64 `json:"packets_received"`
	Injected        uint64 `json:"sessions_injected"`
}

// parseCtStats reads `conntrackd -s` output: the UDP channel's
// "N Pckts sent  M Pckts recv" line and the "external inject" section's
// "connections created" and "connections updated" counts.
func parseCtStats(out string) (SyncStats, bool) {
	var s SyncStats
	var pk, inj bool
	section := ""
	for _, line := range strings.Split(out, "\n") {
		f := strings.Fields(line)
		if len(f) == 0 {
			continue
		}
		if strings.HasSuffix(line, ":") && !strings.HasPrefix(line, " ") && !strings.HasPrefix(line, "\t") {
			section = strings.TrimSuffix(strings.TrimSpace(line), ":")
			continue
		}
		if len(f) == 6 && f[1] == "Pckts" && f[2] == "sent" && f[4] == "Pckts" && f[5] == "recv" {
			a, err1 := strconv.ParseUint(f[0], 10, 64)
			b, err2 := strconv.ParseUint(f[3], 10, 64)
			if err1 == nil && err2 == nil {
				s.PacketsSent, s.PacketsReceived, pk = a, b, true
			}
		}
		if section == "external inject" && len(f) >= 3 && f[0] == "connections" && (f[1] == "created:" || f[1] == "updated:") {
			if v, err := strconv.ParseUint(f[2], 10, 64); err == nil {
				s.Injected += v
				inj = true
			}
		}
	}
	return s, pk && inj
}

// Sync asks this node's conntrackd for its sync channel's counters.
func (n *Node) Sync() (SyncStats, error) {
	out, err := n.ctClientOutput("-s")
	if err != nil {
		return SyncStats{}, err
	}
	s, ok := parseCtStats(out)
	if !ok {
		return SyncStats{}, fmt.Errorf("conntrackd -s: unexpected output %q", out)
	}
	return s, nil
}
