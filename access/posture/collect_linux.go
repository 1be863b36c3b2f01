//go:build linux

package posture

import (
	"bufio"
	"errors"
	"io/fs"
	"os"
	"path/filepath"
	"strings"
	"time"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
)

// Sources says where Collect looks. The zero value looks at this machine.
type Sources struct {
	// Root prefixes every file Collect reads (proc, sys, etc): a test, or
	// a report about a mounted system, points it elsewhere.
	Root string
	// ClientVersion is the reporting client's version.
	ClientVersion string
	// Firewall, when set, replaces the nftables check (tests).
	Firewall func() Check
	Now      func() time.Time
}

func (s Sources) path(p string) string { return filepath.Join(s.Root, "/", p) }

// Collect inspects this Linux machine: the kernel release as the OS
// version (what os_version rules compare on Linux), the distribution's
// name, whether the root file system is on dm-crypt, whether a host
// firewall filters input. What it cannot tell it reports as unknown.
func Collect(s Sources) Report {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	r := Report{Time: now().UTC(), OS: OSLinux, ClientVersion: s.ClientVersion, DiskEncrypted: Unknown, Firewall: Unknown}
	if b, err := os.ReadFile(s.path("/proc/sys/kernel/osrelease")); err == nil {
		r.OSVersion = clip(strings.TrimSpace(string(b)))
	}
	r.OSDistro = clip(osReleaseName(s.path("/etc/os-release")))
	r.DiskEncrypted = rootEncrypted(s)
	if s.Firewall != nil {
		r.Firewall = s.Firewall()
	} else {
		r.Firewall = hostFirewall(s)
	}
	return r
}

// clip keeps a text field within what ParseReport accepts.
func clip(v string) string {
	v = strings.Map(func(r rune) rune {
		if r < ' ' || r == 0x7f {
			return -1
		}
		return r
	}, v)
	if len(v) > maxText {
		v = v[:maxText]
	}
	return v
}

// osReleaseName is PRETTY_NAME from os-release(5).
func osReleaseName(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		if v, ok := strings.CutPrefix(sc.Text(), "PRETTY_NAME="); ok {
			return strings.Trim(v, `"'`)
		}
	}
	return ""
}

// rootEncrypted tells whether / is mounted from a block device that is,
// or sits on, a dm-crypt mapping (LUKS, possibly under LVM).
func rootEncrypted(s Sources) Check {
	src := rootSource(s.path("/proc/self/mounts"))
	if !strings.HasPrefix(src, "/dev/") {
		// overlay, tmpfs, a network file system, or no /proc: nothing a
		// disk-encryption rule can judge.
		return Unknown
	}
	name := blockName(s, src)
	if name == "" {
		return Unknown
	}
	if cryptBelow(s, name, 0) {
		return Yes
	}
	return No
}

// rootSource is the device of the last mount of / in a mounts file.
func rootSource(path string) string {
	f, err := os.Open(path)
	if err != nil {
		return ""
	}
	defer f.Close()
	src := ""
	sc := bufio.NewScanner(f)
	for sc.Scan() {
		fields := strings.Fields(sc.Text())
		if len(fields) >= 2 && fields[1] == "/" {
			src = fields[0]
		}
	}
	return src
}

// blockName turns /dev/sda2, /dev/dm-0, /dev/mapper/NAME or
// /dev/VG/LV into the kernel's block device name under /sys/class/block.
func blockName(s Sources, dev string) string {
	if target, err := os.Readlink(s.path(dev)); err == nil && s.Root == "" {
		// /dev/VG/LV and /dev/disk/by-* are symlinks to ../dm-N or ../sdXN.
		dev = filepath.Join(filepath.Dir(dev), target)
	}
	if mapped, ok := strings.CutPrefix(dev, "/dev/mapper/"); ok {
		dms, _ := filepath.Glob(s.path("/sys/class/block/dm-*"))
		for _, d := range dms {
			if b, err := os.ReadFile(filepath.Join(d, "dm", "name")); err == nil && strings.TrimSpace(string(b)) == mapped {
				return filepath.Base(d)
			}
		}
		return ""
	}
	name := filepath.Base(dev)
	if _, err := os.Stat(s.path("/sys/class/block/" + name)); err != nil {
		return ""
	}
	return name
}

// cryptBelow tells whether the block device, or one it is built on
// (slaves), is a dm-crypt mapping; depth bounds the walk.
func cryptBelow(s Sources, name string, depth int) bool {
	if depth > 8 || strings.ContainsAny(name, "/\\") || name == ".." {
		return false
	}
	dir := s.path("/sys/class/block/" + name)
	if b, err := os.ReadFile(filepath.Join(dir, "dm", "uuid")); err == nil && strings.HasPrefix(string(b), "CRYPT-") {
		return true
	}
	slaves, _ := os.ReadDir(filepath.Join(dir, "slaves"))
	for _, sl := range slaves {
		if cryptBelow(s, sl.Name(), depth+1) {
			return true
		}
	}
	return false
}

// hostFirewall tells whether nftables filters this machine's input: a
// base chain at the input hook whose policy is drop, or that has a rule
// ending in drop or reject. iptables-nft's rules are nftables rules too.
// Without the right to read the ruleset, or with legacy iptables tables
// present (invisible to nftables), it is unknown.
func hostFirewall(s Sources) Check {
	c, err := nftables.New()
	if err != nil {
		return Unknown
	}
	defer c.CloseLasting()
	chains, err := c.ListChains()
	if err != nil {
		return Unknown
	}
	for _, ch := range chains {
		if ch.Hooknum == nil || *ch.Hooknum != *nftables.ChainHookInput || ch.Type != nftables.ChainTypeFilter {
			continue
		}
		if ch.Policy != nil && *ch.Policy == nftables.ChainPolicyDrop {
			return Yes
		}
		rules, err := c.GetRules(ch.Table, ch)
		if err != nil {
			return Unknown
		}
		for _, r := range rules {
			for _, e := range r.Exprs {
				switch e := e.(type) {
				case *expr.Reject:
					return Yes
				case *expr.Verdict:
					if e.Kind == expr.VerdictDrop {
						return Yes
					}
				}
			}
		}
	}
	if b, err := os.ReadFile(s.path("/proc/net/ip_tables_names")); err == nil && len(strings.TrimSpace(string(b))) > 0 {
		return Unknown
	} else if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return Unknown
	}
	return No
}
