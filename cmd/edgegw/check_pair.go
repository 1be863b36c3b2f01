package main

import (
	"cmp"
	"fmt"
	"io"
	"net/netip"
	"os"
	"slices"

	"github.com/vishvananda/netlink"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/ha"
)

// checkPair is `edgegw check --config A --pair B`: both files of an HA
// pair validated as `check` does each, then compared. How an admin keeps
// the halves in step: one template rendered per node, with only the
// per-node values (ha.priority, ha.peer, interface names, the appliance's
// name) filled in differently, and this check run in CI on the rendered
// pair and on a node before `systemctl reload edgegw`. A running node
// shows the digest of the same facts as ha.config_digest in its status:
// the two nodes agree when their digests are equal.
//
// Every problem is printed as `file:line:col: field: message`, the other
// file's position in the message; the exit status is 1 when there is any.
func checkPair(pathA, pathB string, skip bool, stdout io.Writer) error {
	if pathA == pathB {
		return fmt.Errorf("check --pair: %s is both halves: name the other node's file", pathA)
	}
	all := &config.Errors{File: pathA + " + " + pathB}
	var halves [2]ha.Half
	var digests [2]string
	for i, path := range []string{pathA, pathB} {
		h, digest, err := loadHalf(path, skip)
		if err != nil {
			ce, ok := err.(*config.Errors)
			if !ok {
				return err
			}
			all.List = append(all.List, ce.List...)
			continue
		}
		halves[i], digests[i] = h, digest
	}
	if len(all.List) > 0 {
		return all // each file's own problems first: a comparison of broken files says little
	}
	mismatches := ha.ComparePair(halves[0], halves[1])
	mismatches = append(mismatches, onThisNode(halves[0], halves[1])...)
	for _, m := range mismatches {
		all.List = append(all.List, config.Error{File: m.File, Pos: config.Pos{Line: m.Line, Col: m.Col}, Path: m.Path, Msg: m.Msg})
	}
	if len(all.List) > 0 {
		slices.SortStableFunc(all.List, func(a, b config.Error) int {
			return cmp.Or(cmp.Compare(fileRank(a.File, pathA), fileRank(b.File, pathA)),
				cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
		})
		return all
	}
	note := ""
	if skip {
		note = ", file contents not compared (--skip-files)"
	}
	fmt.Fprintf(stdout, "%s: ok\n%s: ok\npair: the halves agree (digest %s%s)\n", pathA, pathB, digests[0], note)
	return nil
}

func fileRank(file, first string) int {
	if file == first {
		return 0
	}
	return 1
}

// loadHalf validates and compiles one node's file as `edgegw check` does,
// and collects what the pair check compares. A file without ha: is an
// error: it cannot be half of a pair.
func loadHalf(path string, skip bool) (ha.Half, string, error) {
	cfg, err := config.Load(path, config.Options{SkipFiles: skip})
	if err != nil {
		return ha.Half{}, "", err
	}
	if cfg.HA == nil {
		return ha.Half{}, "", &config.Errors{File: path, List: []config.Error{{File: path, Path: "ha",
			Msg: "missing: a file checked with --pair is one node of an HA pair and needs the ha: section"}}}
	}
	plan, err := gateway.Prepare(cfg, gateway.PrepareOptions{SkipFiles: skip})
	if err != nil {
		return ha.Half{}, "", err
	}
	facts, err := gateway.PairFacts(plan, skip)
	if err != nil {
		return ha.Half{}, "", fmt.Errorf("%s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return ha.Half{}, "", fmt.Errorf("read config: %w", err)
	}
	return ha.Half{File: path, HA: *cfg.HA, Facts: facts, Pos: ha.Positions(data)}, ha.Digest(facts), nil
}

// onThisNode checks the peers against the kernel when the check runs on
// the node of --config (its ha.interface exists here with an IPv4
// address): the file alone cannot say what a node's own sync address is.
// The other file's ha.peer must be one of this interface's addresses, and
// this file's must not (it names the other node). Elsewhere (CI, an admin
// workstation) nothing is read and nothing is reported.
func onThisNode(a, b ha.Half) []ha.Mismatch {
	local := ipv4Addrs(a.HA.Interface)
	if len(local) == 0 {
		return nil
	}
	var out []ha.Mismatch
	report := func(h ha.Half, msg string) {
		out = append(out, ha.Mismatch{File: h.File, Pos: h.Position("ha.peer"), Path: "ha.peer", Msg: msg})
	}
	if slices.Contains(local, a.HA.Peer) {
		report(a, fmt.Sprintf("%s is this host's own address on %s: name the other node (checked on the node of %s, where %s exists)", a.HA.Peer, a.HA.Interface, a.File, a.HA.Interface))
	}
	if !slices.Contains(local, b.HA.Peer) {
		report(b, fmt.Sprintf("%s is not this node's address on %s (%s): the other node's peer must name it (checked on the node of %s, where %s exists)", b.HA.Peer, a.HA.Interface, addrList(local), a.File, a.HA.Interface))
	}
	return out
}

// ipv4Addrs are the IPv4 addresses of the interface name on this host;
// none when it does not exist here.
func ipv4Addrs(name string) []netip.Addr {
	l, err := netlink.LinkByName(name)
	if err != nil {
		return nil
	}
	as, err := netlink.AddrList(l, netlink.FAMILY_V4)
	if err != nil {
		return nil
	}
	var out []netip.Addr
	for _, a := range as {
		if ip, ok := netip.AddrFromSlice(a.IP); ok {
			out = append(out, ip.Unmap())
		}
	}
	return out
}

func addrList(as []netip.Addr) string {
	s := ""
	for i, a := range as {
		if i > 0 {
			s += ", "
		}
		s += a.String()
	}
	return s
}
