package ipsec

import (
	"errors"
	"fmt"
	"hash/fnv"
	"maps"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"

	"github.com/vishvananda/netlink"
	"golang.org/x/sys/unix"

	"github.com/edgegw/edgegw/tunnel"
)

// The ESP dataplanes an engine can drive.
const (
	// BackendKernel is ESP in the kernel's xfrm layer, route-based: each
	// tunnel has an xfrm interface of its own name, and its child SA's
	// states and policies carry that interface's if_id.
	BackendKernel = "kernel"
	// BackendLibipsec is ESP in charon's userspace kernel-libipsec, over
	// one TUN device (ipsec0) that every tunnel shares.
	BackendLibipsec = "kernel-libipsec"
)

// DefaultBackend is the backend this kernel allows: BackendKernel where
// it has ESP (esp4) and xfrm interfaces (xfrm_interface), as in the
// appliance image, else BackendLibipsec.
func DefaultBackend() string {
	if KernelESP() && kernelModule("xfrm_interface", "net/xfrm") {
		return BackendKernel
	}
	return BackendLibipsec
}

// KernelESP reports whether this kernel can do ESP itself (esp4 loaded,
// built in, or installed as a module).
func KernelESP() bool { return kernelModule("esp4", "net/ipv4") }

// kernelModule reports whether the module is loaded, built in, or can be
// loaded from dir under the running kernel's module tree.
func kernelModule(name, dir string) bool {
	if _, err := os.Stat("/sys/module/" + name); err == nil {
		return true
	}
	var u unix.Utsname
	if unix.Uname(&u) != nil {
		return false
	}
	root := "/lib/modules/" + unix.ByteSliceToString(u.Release[:])
	if b, err := os.ReadFile(root + "/modules.builtin"); err == nil &&
		strings.Contains("\n"+string(b), "\nkernel/"+dir+"/"+name+".ko\n") {
		return true
	}
	m, _ := filepath.Glob(root + "/kernel/" + dir + "/" + name + ".ko*")
	return len(m) > 0
}

// edgegw's xfrm interface ids: the upper 16 bits mark an if_id as
// edgegw's, so that crash cleanup removes the xfrm interfaces, states and
// policies edgegw and its charon made, and no one else's; the lower 16
// bits tell the tunnels apart.
const (
	ifIDMark = 0x6567_0000 // "eg"
	ifIDMask = 0xffff_0000
)

func ownIfID(id uint32) bool { return id&ifIDMask == ifIDMark }

// allocIfID picks the if_id of a new tunnel: a hash of its name, so that
// it is the same from run to run, moved on while another tunnel of this
// engine has it.
func allocIfID(name string, taken map[uint32]bool) uint32 {
	h := fnv.New32a()
	h.Write([]byte(name))
	low := h.Sum32() & 0xffff
	for {
		id := ifIDMark | low
		// 0 is "no interface" to the kernel: never hand out the mark alone.
		if low != 0 && !taken[id] {
			return id
		}
		low = (low + 1) & 0xffff
	}
}

// syncXfrmLinksLocked gives every wanted tunnel its xfrm interface (named
// after the tunnel, with its if_id, MTU and tunnel address, up) and
// deletes those of tunnels that are gone. Kernel backend only.
func (e *Engine) syncXfrmLinksLocked() error {
	var errs error
	for _, name := range slices.Sorted(maps.Keys(e.want)) {
		if err := e.ensureXfrmLink(name, e.want[name].t); err != nil {
			errs = errors.Join(errs, fmt.Errorf("tunnel %q: %w", name, err))
		}
	}
	for name := range e.links {
		if _, ok := e.want[name]; ok {
			continue
		}
		link, err := e.nl.LinkByName(name)
		if err == nil {
			err = e.nl.LinkDel(link)
		}
		var notFound netlink.LinkNotFoundError
		if err != nil && !errors.As(err, &notFound) && !errors.Is(err, unix.ENODEV) {
			errs = errors.Join(errs, fmt.Errorf("tunnel %q: delete xfrm interface: %w", name, err))
			continue
		}
		delete(e.links, name)
		e.log.Info("ipsec xfrm interface removed", "tunnel", name)
	}
	return errs
}

// ensureXfrmLink makes the tunnel's xfrm interface match t.
func (e *Engine) ensureXfrmLink(name string, t Tunnel) error {
	ifID := e.ifIDs[name]
	link, err := e.nl.LinkByName(name)
	var notFound netlink.LinkNotFoundError
	switch {
	case errors.As(err, &notFound):
		x := &netlink.Xfrmi{LinkAttrs: netlink.NewLinkAttrs(), Ifid: ifID}
		x.Name, x.MTU = name, t.MTU
		if err := e.nl.LinkAdd(x); err != nil {
			return fmt.Errorf("create xfrm interface (if_id %#x): %w", ifID, err)
		}
		if link, err = e.nl.LinkByName(name); err != nil {
			return fmt.Errorf("xfrm interface: %w", err)
		}
		e.log.Info("ipsec xfrm interface created", "tunnel", name, "if_id", ifID, "mtu", t.MTU)
	case err != nil:
		return fmt.Errorf("xfrm interface: %w", err)
	default:
		x, ok := link.(*netlink.Xfrmi)
		if !ok || x.Ifid != ifID {
			// Not ours (or not ours any more): refuse rather than take
			// over someone else's interface.
			return fmt.Errorf("interface %s exists and is not this tunnel's xfrm interface (if_id %#x)", name, ifID)
		}
	}
	e.links[name] = true
	var errs error
	if link.Attrs().MTU != t.MTU {
		if err := e.nl.LinkSetMTU(link, t.MTU); err != nil {
			errs = errors.Join(errs, fmt.Errorf("mtu %d on %s: %w", t.MTU, name, err))
		}
	}
	addrs, err := e.nl.AddrList(link, netlink.FAMILY_ALL)
	if err != nil {
		return errors.Join(errs, fmt.Errorf("addresses of %s: %w", name, err))
	}
	have := false
	for _, a := range addrs {
		p, ok := netip.AddrFromSlice(a.IP)
		ones, _ := a.Mask.Size()
		if ok && netip.PrefixFrom(p.Unmap(), ones) == t.Address {
			have = true
			continue
		}
		if p.IsLinkLocalUnicast() {
			continue // the kernel's own IPv6 link-local address
		}
		if err := e.nl.AddrDel(link, &a); err != nil && !errors.Is(err, unix.EADDRNOTAVAIL) {
			errs = errors.Join(errs, fmt.Errorf("remove address %s from %s: %w", a.IPNet, name, err))
		}
	}
	if !have {
		if err := e.nl.AddrReplace(link, &netlink.Addr{IPNet: tunnel.IPNet(t.Address)}); err != nil {
			errs = errors.Join(errs, fmt.Errorf("address %s on %s: %w", t.Address, name, err))
		}
	}
	if link.Attrs().Flags&unix.IFF_UP == 0 {
		if err := e.nl.LinkSetUp(link); err != nil {
			errs = errors.Join(errs, fmt.Errorf("set %s up: %w", name, err))
		}
	}
	return errs
}

// sweepXfrm deletes the xfrm policies and states that carry one of
// edgegw's if_ids (those a charon that died without cleaning up left),
// and with links also edgegw's xfrm interfaces. It touches nothing else.
func sweepXfrm(nl *netlink.Handle, links bool) (n int, err error) {
	var errs error
	pols, err := nl.XfrmPolicyList(netlink.FAMILY_ALL)
	if err != nil {
		errs = errors.Join(errs, fmt.Errorf("list xfrm policies: %w", err))
	}
	for _, p := range pols {
		if !ownIfID(uint32(p.Ifid)) {
			continue
		}
		if err := nl.XfrmPolicyDel(&p); err != nil && !errors.Is(err, unix.ENOENT) {
			errs = errors.Join(errs, fmt.Errorf("delete xfrm policy %s: %w", p.String(), err))
			continue
		}
		n++
	}
	states, err := nl.XfrmStateList(netlink.FAMILY_ALL)
	if err != nil {
		errs = errors.Join(errs, fmt.Errorf("list xfrm states: %w", err))
	}
	for _, s := range states {
		if !ownIfID(uint32(s.Ifid)) {
			continue
		}
		if err := nl.XfrmStateDel(&s); err != nil && !errors.Is(err, unix.ESRCH) && !errors.Is(err, unix.ENOENT) {
			errs = errors.Join(errs, fmt.Errorf("delete xfrm state spi %#x to %s: %w", s.Spi, s.Dst, err))
			continue
		}
		n++
	}
	if !links {
		return n, errs
	}
	all, err := nl.LinkList()
	if err != nil {
		return n, errors.Join(errs, fmt.Errorf("list links: %w", err))
	}
	for _, l := range all {
		if x, ok := l.(*netlink.Xfrmi); ok && ownIfID(x.Ifid) {
			if err := nl.LinkDel(l); err != nil && !errors.Is(err, unix.ENODEV) {
				errs = errors.Join(errs, fmt.Errorf("delete xfrm interface %s: %w", l.Attrs().Name, err))
				continue
			}
			n++
		}
	}
	return n, errs
}
