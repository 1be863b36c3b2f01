package image

import (
	"fmt"
	"regexp"
	"strconv"
	"strings"
	"testing"
	"time"
)

// packagesRequired are the test pack's packages whose every test must pass
// in the VM: a skip there means a kernel dataplane the appliance ships is
// missing. Other packages' skips (a peer tool the appliance lacks, such as
// tshark) are reported, not failed.
var packagesRequired = map[string]bool{"image-kerneltest": true}

// testDataplanes mounts the test pack (testpack.sh) in the VM, runs every
// test binary in it, and reports each package as a subtest.
func testDataplanes(t *testing.T, v *vm) {
	const mnt = "/run/edgegw-tests"
	v.ssh(t, "mkdir -p "+mnt+" && (mountpoint -q "+mnt+" || mount -t squashfs -o ro /dev/disk/by-id/virtio-edgegw-tests "+mnt+")")
	start := time.Now()
	out, err := v.trySSHTimeout(mnt+"/run", 25*time.Minute)
	t.Logf("test pack ran in %s", time.Since(start).Round(time.Second))
	results := parseRun(out)
	if len(results) == 0 {
		t.Fatalf("no results from the test pack: %v\n%s", err, out)
	}
	for _, r := range results {
		t.Run(r.Name, func(t *testing.T) {
			t.Logf("%s: exit %d in %ds; %d passed, %d skipped, %d failed", r.Name, r.Exit, r.Seconds, len(r.Passed), len(r.Skipped), len(r.Failed))
			for _, s := range r.Skipped {
				t.Logf("skipped %s: %s", s, r.SkipReason[s])
			}
			if r.Exit != 0 || len(r.Failed) > 0 {
				t.Errorf("failed: %s (exit %d); output:\n%s", strings.Join(r.Failed, " "), r.Exit, r.Output)
			}
			if packagesRequired[r.Name] && len(r.Skipped) > 0 {
				t.Errorf("skipped in the appliance although they must run there: %s", strings.Join(r.Skipped, " "))
			}
			if len(r.Passed) == 0 && r.Exit == 0 {
				t.Errorf("no test passed")
			}
		})
	}
	if err != nil {
		t.Errorf("test pack runner: %v", err)
	}
}

// runResult is one package's run in the VM.
type runResult struct {
	Name                    string
	Exit, Seconds           int
	Passed, Skipped, Failed []string // top-level tests
	SkipReason              map[string]string
	Output                  string
}

var (
	resultRE = regexp.MustCompile(`^=== RESULT (\S+) exit=(-?\d+) seconds=(\d+)$`)
	statusRE = regexp.MustCompile(`^--- (PASS|FAIL|SKIP): (\S+) \(`)
)

// parseRun splits the runner's output (vmtest-run) into per-package
// results. A package without a RESULT line (the run was cut short) counts
// as exit -1.
func parseRun(out string) []runResult {
	var rs []runResult
	var cur *runResult
	var body []string
	var lastLog string // the last log line of a test: a skip's reason
	finish := func() {
		if cur != nil {
			cur.Output = strings.Join(body, "\n")
			rs = append(rs, *cur)
		}
		cur, body = nil, nil
	}
	for _, line := range strings.Split(out, "\n") {
		if name, ok := strings.CutPrefix(line, "=== PACKAGE "); ok {
			finish()
			cur = &runResult{Name: strings.TrimSpace(name), Exit: -1, SkipReason: map[string]string{}}
			continue
		}
		if cur == nil {
			continue
		}
		if m := resultRE.FindStringSubmatch(line); m != nil && m[1] == cur.Name {
			cur.Exit, _ = strconv.Atoi(m[2])
			cur.Seconds, _ = strconv.Atoi(m[3])
			finish()
			continue
		}
		body = append(body, line)
		switch m := statusRE.FindStringSubmatch(line); {
		case m == nil:
			// go test -v streams a test's log lines, indented, before
			// its status line.
			if strings.HasPrefix(line, "    ") && !strings.HasPrefix(strings.TrimSpace(line), "---") {
				lastLog = strings.TrimSpace(line)
			} else if strings.HasPrefix(line, "=== RUN") {
				lastLog = ""
			}
		case m[1] == "PASS":
			cur.Passed = append(cur.Passed, m[2])
		case m[1] == "FAIL":
			cur.Failed = append(cur.Failed, m[2])
		case m[1] == "SKIP":
			cur.Skipped = append(cur.Skipped, m[2])
			cur.SkipReason[m[2]] = lastLog
		}
	}
	finish()
	return rs
}

// testWireGuardPeer: the appliance's edgegw (wireguard-go in process, wg0)
// and the kernel's WireGuard as the configuration's static peer, in a
// network namespace inside the VM joined to the root namespace by a veth.
func testWireGuardPeer(t *testing.T, v *vm) {
	gwPub := v.ssh(t, "wg show wg0 public-key")
	setup := fmt.Sprintf(`set -e
ip netns add wgpeer
ip link add vwg0 type veth peer name vwg1 netns wgpeer
ip addr add 198.18.0.1/30 dev vwg0
ip link set vwg0 up
ip -n wgpeer link set lo up
ip -n wgpeer addr add 198.18.0.2/30 dev vwg1
ip -n wgpeer link set vwg1 up
ip -n wgpeer link add wgk type wireguard
umask 077; echo %s > /tmp/wgpeer.key
ip netns exec wgpeer wg set wgk private-key /tmp/wgpeer.key peer %s allowed-ips 100.96.0.0/12 endpoint 198.18.0.1:51820
ip -n wgpeer addr add 100.96.0.10/12 dev wgk
ip -n wgpeer link set wgk up`, v.peerKey.String(), gwPub)
	v.ssh(t, setup)
	t.Cleanup(func() { v.trySSH("ip netns del wgpeer; ip link del vwg0; rm -f /tmp/wgpeer.key") })
	waitFor(t, v, 60*time.Second, "ip netns exec wgpeer ping -c 1 -W 2 100.96.0.1 && echo PINGED", func(s string) bool {
		return strings.Contains(s, "PINGED")
	})
	// And the other way: the gateway reaches its peer through wg0.
	if out, err := v.trySSH("ping -c 1 -W 2 100.96.0.10"); err != nil {
		t.Errorf("gateway → kernel peer: %v\n%s", err, out)
	}
	hs := v.ssh(t, "wg show wg0 latest-handshakes")
	if f := strings.Fields(hs); len(f) != 2 || f[0] != v.peerKey.PublicKey().String() || f[1] == "0" {
		t.Errorf("edgegw recorded no handshake with the kernel peer: %q", hs)
	}
}
