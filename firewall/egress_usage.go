package firewall

import (
	"errors"
	"fmt"
	"io/fs"
	"net/netip"
	"os"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"
)

// EgressUsage is what the kernel's connection tracking holds, now, for
// traffic leaving from one egress address: the connections and the bytes
// they carried each way. Bytes are counted only while flow accounting is
// on ([EnableFlowAccounting]), and only for connections that began after.
type EgressUsage struct {
	Connections int
	// Out is client to internet, In internet to client.
	BytesOut, BytesIn     uint64
	PacketsOut, PacketsIn uint64
}

// EgressFlows is connection tracking read for the egress addresses: the
// usage by egress address, and by (client source, egress address).
type EgressFlows struct {
	ByEgress map[netip.Addr]EgressUsage
	ByClient map[EgressPair]EgressUsage
}

// EgressPair is one client address leaving from one egress address.
type EgressPair struct {
	Client, Egress netip.Addr
}

// ReadEgressFlows reads the connection tracking table of the caller's
// network namespace and sums, for each of e's addresses, the connections
// translated to it: those whose reply goes to the egress address but
// whose original source is another (the gateway's own connections from
// an egress address, such as upstream DNS, are not translated and not
// counted). It is a dump of the whole table: for the admin API, not for a
// packet path.
func ReadEgressFlows(e *Egress) (EgressFlows, error) {
	out := EgressFlows{ByEgress: map[netip.Addr]EgressUsage{}, ByClient: map[EgressPair]EgressUsage{}}
	if e == nil || len(e.addrs) == 0 {
		return out, nil
	}
	mine := map[netip.Addr]bool{}
	fams := map[netlink.InetFamily]bool{}
	for _, a := range e.addrs {
		mine[a.Address] = true
		out.ByEgress[a.Address] = EgressUsage{}
		if a.Address.Is4() {
			fams[unix.AF_INET] = true
		} else {
			fams[unix.AF_INET6] = true
		}
	}
	for _, fam := range []netlink.InetFamily{unix.AF_INET, unix.AF_INET6} {
		if !fams[fam] {
			continue
		}
		flows, err := netlink.ConntrackTableList(netlink.ConntrackTable, fam)
		if err != nil {
			return out, fmt.Errorf("read the connection tracking table: %w", err)
		}
		for _, f := range flows {
			addFlow(&out, mine, f)
		}
	}
	return out, nil
}

// addFlow counts f if it was translated to one of the addresses in mine.
func addFlow(out *EgressFlows, mine map[netip.Addr]bool, f *netlink.ConntrackFlow) {
	eg, ok1 := netip.AddrFromSlice(f.Reverse.DstIP)
	src, ok2 := netip.AddrFromSlice(f.Forward.SrcIP)
	if !ok1 || !ok2 {
		return
	}
	eg, src = eg.Unmap(), src.Unmap()
	if !mine[eg] || src == eg {
		return
	}
	add := func(u EgressUsage) EgressUsage {
		u.Connections++
		u.BytesOut += f.Forward.Bytes
		u.PacketsOut += f.Forward.Packets
		u.BytesIn += f.Reverse.Bytes
		u.PacketsIn += f.Reverse.Packets
		return u
	}
	out.ByEgress[eg] = add(out.ByEgress[eg])
	k := EgressPair{Client: src, Egress: eg}
	out.ByClient[k] = add(out.ByClient[k])
}

// flowAccounting is the sysctl that makes connection tracking count
// packets and bytes per connection; it is per network namespace.
const flowAccounting = "/proc/sys/net/netfilter/nf_conntrack_acct"

// EnableFlowAccounting turns on connection tracking's packet and byte
// counts in the caller's network namespace, so that [ReadEgressFlows]
// can say how much each egress address carried. It costs a few bytes per
// connection and two additions per packet. The sysctl exists once the
// conntrack module is loaded, which a table with NAT does.
func EnableFlowAccounting() error {
	b, err := os.ReadFile(flowAccounting)
	if errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("flow accounting: %s is missing (no connection tracking in this kernel): %w", flowAccounting, err)
	}
	if err != nil {
		return fmt.Errorf("flow accounting: %w", err)
	}
	if len(b) > 0 && b[0] == '1' {
		return nil
	}
	if err := os.WriteFile(flowAccounting, []byte("1\n"), 0o644); err != nil {
		return fmt.Errorf("flow accounting: turn on %s: %w", flowAccounting, err)
	}
	return nil
}
