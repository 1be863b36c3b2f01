package image

import (
	"bytes"
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"maps"
	"net"
	"os"
	"os/exec"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// Boot deadlines are generous: the VM runs under software emulation (TCG),
// and the machine is shared with other builds.
const (
	bootDeadline = 420 * time.Second
	// healthDeadline is EDGEGW_HEALTH_DEADLINE in the test VM: how long a
	// trial boot waits for /readyz before it fails and reboots.
	healthDeadline = 60
	// rollbackTries is --tries for the update to the broken image: 1, not
	// the default 3, to keep the image job within CI's 20 minutes (each
	// try is a boot plus healthDeadline plus a reboot, about 3 minutes
	// under TCG). The counting down to +0 and the fallback are the same.
	rollbackTries = 1
)

// modules are the kernel modules edgegw's dataplanes need.
var modules = []string{"wireguard", "ip_gre", "esp4", "xfrm_interface", "nf_tables", "nfnetlink_log"}

// testConfig is the VM's configuration; %s is the public key of the
// static peer that WireGuardPeer plays with the kernel's WireGuard.
const testConfig = `# image/appliance_test.go: the admin listener on loopback (the default); the
# test reaches it, and the root-only admin socket, over SSH.
appliance:
  name: edgegw-vmtest
admin:
  listen: 127.0.0.1:9100
log:
  level: info
  format: text
tunnels:
  wireguard:
    interface: wg0
    listen_port: 51820
    address: 100.96.0.1/12
    peers:
      - name: kernel-peer
        public_key: %q
        allowed_ips: [100.96.0.10/32]
`

// TestAppliance boots the built image in QEMU (TCG, OVMF, user networking)
// with a config partition provisioned by provision.sh, then checks, in one
// VM to save boots: /readyz, /metrics and the status API over SSH,
// the kernel modules over SSH, the fallback on a bad configuration, the
// appliance's edgegw with a kernel WireGuard peer, the project's test
// binaries for the kernel dataplanes (a test pack from testpack.sh), and,
// when update bundles are given, an A/B update to a working image and one
// to an image whose edgegw never becomes ready (it must come back by
// itself on the previous slot).
//
//	EDGEGW_IMAGE_DIR       directory with edgegw.img (image/out)
//	EDGEGW_IMAGE_TESTPACK  a test pack from testpack.sh (optional)
//	EDGEGW_IMAGE_UPDATE    a working update bundle of another version (optional)
//	EDGEGW_IMAGE_BROKEN    an update bundle whose edgegw never becomes ready (optional)
//	EDGEGW_IMAGE_UNSIGNED  the working bundle without its signature (optional)
//	EDGEGW_IMAGE_TAMPERED  the working bundle with its cmdline and SHA256SUMS changed (optional)
func TestAppliance(t *testing.T) {
	dir := os.Getenv("EDGEGW_IMAGE_DIR")
	if dir == "" {
		t.Skip("EDGEGW_IMAGE_DIR not set: run image/test.sh (make image-test)")
	}
	for _, tool := range []string{"qemu-system-x86_64", "ssh", "ssh-keygen", "mcopy", "sfdisk"} {
		if _, err := exec.LookPath(tool); err != nil {
			t.Skipf("%s not installed", tool)
		}
	}
	vm := startVM(t, filepath.Join(dir, "edgegw.img"), map[string]string{
		"edgegw-tests":  os.Getenv("EDGEGW_IMAGE_TESTPACK"),
		"update-good":   os.Getenv("EDGEGW_IMAGE_UPDATE"),
		"update-broken": os.Getenv("EDGEGW_IMAGE_BROKEN"),
		"update-unsign": os.Getenv("EDGEGW_IMAGE_UNSIGNED"),
		"update-tamper": os.Getenv("EDGEGW_IMAGE_TAMPERED"),
	})

	t.Run("Ready", func(t *testing.T) {
		waitReady(t, vm, bootDeadline)
		body := vm.get(t, "/metrics")
		if !strings.Contains(body, "edgegw_") {
			t.Fatalf("/metrics has no edgegw_ metric:\n%.500s", body)
		}
		var st map[string]any
		if err := json.Unmarshal([]byte(vm.get(t, "/api/v1/status")), &st); err != nil {
			t.Fatalf("/api/v1/status: %v", err)
		}
		t.Logf("status: version %v", st["version"])
	})
	if t.Failed() {
		return
	}
	boot0 := vm.ssh(t, "cat /proc/sys/kernel/random/boot_id")

	t.Run("Appliance", func(t *testing.T) {
		if got := vm.ssh(t, "cat /proc/cmdline"); !strings.Contains(got, "edgegw.slot=a") {
			t.Errorf("booted %q, want slot a", got)
		}
		lsmod := vm.ssh(t, "for m in "+strings.Join(modules, " ")+"; do modprobe $m || echo FAILED $m; done; cat /proc/modules")
		for _, m := range modules {
			if !hasModule(lsmod, m) {
				t.Errorf("module %s not loaded", m)
			}
		}
		if got := vm.ssh(t, "systemctl is-active edgegw.service systemd-modules-load.service systemd-sysctl.service"); strings.Count(got, "active") != 3 || strings.Contains(got, "inactive") {
			t.Errorf("units: %s", got)
		}
		// The box boots with forwarding off; the running edgegw turns it on
		// (its ruleset is in) and sets conf/all rp_filter to 1 (strict
		// WireGuard, LAN and WAN; loose tunnels).
		if got := vm.ssh(t, "sysctl -n net.ipv4.ip_forward net.ipv4.conf.all.rp_filter; grep -c '^net.ipv4.ip_forward = 0$' /etc/sysctl.d/90-edgegw.conf"); strings.Join(strings.Fields(got), " ") != "1 1 1" {
			t.Errorf("forwarding, rp_filter, boot file with forwarding off = %q, want 1 1 1", got)
		}
		if got := vm.ssh(t, "findmnt -no FSTYPE,OPTIONS /"); !strings.HasPrefix(got, "squashfs") || !strings.Contains(got, "ro") {
			t.Errorf("root: %s, want a read-only squashfs", got)
		}
		if got := vm.ssh(t, "grep -c '^root:[*!]' /etc/shadow"); strings.TrimSpace(got) != "1" {
			t.Errorf("root has a password")
		}
		// IKE is edgegw's own charon's: Debian's strongswan.service would
		// hold UDP 500 and 4500.
		if got, _ := vm.trySSH("systemctl is-enabled strongswan.service; ss -Hlun 'sport = :500 or sport = :4500'"); !strings.HasPrefix(got, "masked") || strings.Contains(got, "UNCONN") {
			t.Errorf("strongswan.service, IKE sockets: %q, want masked and none", got)
		}
		// systemd feeds the hardware watchdog (system.conf.d).
		got, _ := vm.trySSH("cat /sys/class/watchdog/watchdog0/state /sys/class/watchdog/watchdog0/timeout")
		if f := strings.Fields(got); len(f) != 2 || f[0] != "active" || f[1] != "120" {
			t.Errorf("watchdog0 state, timeout = %q, want active 120", got)
		}
		t.Logf("failed units: %s", vm.ssh(t, "systemctl --failed --no-legend --plain | cut -d' ' -f1 | xargs"))
	})

	t.Run("BadConfig", func(t *testing.T) {
		// An invalid configuration: edgegw falls back to its default with
		// forwarding off; the admin port answers on loopback, /readyz says
		// not ready (503, the fallback), the errors are on the console.
		vm.ssh(t, "cp /etc/edgegw/edgegw.yaml /data/good.yaml && printf 'admin:\\n  listen: nonsense\\nbogus_key: 1\\n' > /etc/edgegw/edgegw.yaml && systemctl restart edgegw")
		deadline := time.Now().Add(60 * time.Second)
		for {
			out, err := vm.trySSH("curl -s -o /dev/null -w '%{http_code}' http://127.0.0.1:9100/readyz; cat /run/edgegw/fallback")
			if err == nil && strings.HasPrefix(out, "503") && strings.Contains(out, "bogus_key") {
				t.Logf("fallback: %s", out)
				break
			}
			if time.Now().After(deadline) {
				t.Fatalf("no fallback within 60s: %q %v", out, err)
			}
			time.Sleep(2 * time.Second)
		}
		if !vm.consoleHas("FALLBACK") {
			t.Errorf("the console does not show the fallback")
		}
		vm.ssh(t, "cp /data/good.yaml /etc/edgegw/edgegw.yaml && systemctl restart edgegw")
		waitReady(t, vm, 60*time.Second)
	})

	t.Run("AuthorizedKeys", func(t *testing.T) { testAuthorizedKeys(t, vm) })

	t.Run("WireGuardPeer", func(t *testing.T) { testWireGuardPeer(t, vm) })

	if vm.disks["edgegw-tests"] != "" {
		t.Run("Dataplanes", func(t *testing.T) { testDataplanes(t, vm) })
	} else {
		t.Log("EDGEGW_IMAGE_TESTPACK not set: the test binaries do not run in the VM")
	}

	if vm.disks["update-good"] == "" || vm.disks["update-broken"] == "" {
		t.Log("EDGEGW_IMAGE_UPDATE / EDGEGW_IMAGE_BROKEN not set: update tests skipped")
		return
	}
	if vm.disks["update-unsign"] != "" && vm.disks["update-tamper"] != "" {
		t.Run("RefuseBundles", func(t *testing.T) { testRefuseBundles(t, vm, boot0) })
	} else {
		t.Log("EDGEGW_IMAGE_UNSIGNED / EDGEGW_IMAGE_TAMPERED not set: refusal tests skipped")
	}
	v1 := vm.version(t)

	updated := t.Run("Update", func(t *testing.T) {
		vm.apply(t, "/dev/disk/by-id/virtio-update-good", 3)
		boot1 := waitBoot(t, vm, boot0, bootDeadline)
		waitReady(t, vm, bootDeadline)
		if got := vm.ssh(t, "cat /proc/cmdline"); !strings.Contains(got, "edgegw.slot=b") {
			t.Fatalf("after the update booted %q, want slot b", got)
		}
		if v2 := vm.version(t); v2 == v1 {
			t.Fatalf("still version %s after the update", v1)
		}
		// The trial boot is blessed once the health check passes.
		waitFor(t, vm, bootDeadline, "ls /efi/loader/entries", func(s string) bool {
			return strings.Contains(s, "edgegw-0002-b.conf")
		})
		boot0 = boot1
	})
	// The rollback starts from the updated slot: only a failed update
	// (not, say, a failed dataplane test) makes it pointless.
	if !updated {
		return
	}

	t.Run("Rollback", func(t *testing.T) {
		v2 := vm.version(t)
		vm.apply(t, "/dev/disk/by-id/virtio-update-broken", rollbackTries)
		// Each try: a boot, then the health deadline, then a reboot; after
		// the last one, the previous slot.
		waitFor(t, vm, rollbackTries*(bootDeadline+healthDeadline*time.Second)+bootDeadline, "cat /proc/sys/kernel/random/boot_id /proc/cmdline; ls /efi/loader/entries", func(s string) bool {
			return !strings.Contains(s, boot0) && strings.Contains(s, "edgegw.slot=b") && strings.Contains(s, "edgegw-0003-a+0-")
		})
		waitReady(t, vm, bootDeadline)
		if got := vm.version(t); got != v2 {
			t.Errorf("after the rollback version %s, want %s", got, v2)
		}
		t.Logf("entries: %s", vm.ssh(t, "ls /efi/loader/entries | xargs"))
	})
}

// slotState is what an update writes, read in the VM: the boot entries,
// the kernels on the ESP, and the head of slot b's partition (the slot
// slot a's update writes).
const slotState = "ls -l --time-style=+%s /efi/loader/entries /efi/edgegw; " +
	"head -c 16M /dev/disk/by-partuuid/5e1f0a9c-7b1e-4d0a-9d3c-00000000000b | sha256sum"

// testRefuseBundles hands the appliance bundles an attacker without the
// signing key could make from a good one: `edgegw update` (and the script
// it runs, called directly) must refuse each before writing anything, and
// the appliance keeps running on slot a. No boot: a refusal writes
// nothing, so there is nothing to boot.
func testRefuseBundles(t *testing.T, vm *vm, boot0 string) {
	before := vm.ssh(t, slotState)
	for _, tc := range []struct{ name, command, want string }{
		{"unsigned", "edgegw update /dev/disk/by-id/virtio-update-unsign", "unsigned bundle"},
		{"tampered", "edgegw update /dev/disk/by-id/virtio-update-tamper", "does not verify with key"},
		// The script checks by itself too: whoever runs it directly.
		{"tampered, script", "edgegw-update apply /dev/disk/by-id/virtio-update-tamper", "refused; nothing was written"},
	} {
		start := time.Now()
		// No --no-reboot: a bundle wrongly accepted would reboot the VM,
		// which the boot id below would show.
		out, err := vm.trySSHTimeout(tc.command, 5*time.Minute)
		if err == nil || !strings.Contains(out, tc.want) {
			t.Errorf("%s: %q: err %v, output:\n%s\nwant a refusal with %q", tc.name, tc.command, err, out, tc.want)
			continue
		}
		t.Logf("%s: refused in %s: %s", tc.name, time.Since(start).Round(time.Second), out)
	}
	if after := vm.ssh(t, slotState); after != before {
		t.Errorf("a refused bundle changed the slots:\nbefore:\n%s\nafter:\n%s", before, after)
	}
	if got := vm.ssh(t, "cat /proc/sys/kernel/random/boot_id /proc/cmdline"); !strings.Contains(got, boot0) || !strings.Contains(got, "edgegw.slot=a") {
		t.Errorf("after the refusals: %q, want boot %s on slot a", got, boot0)
	}
}

// testAuthorizedKeys plays a stick (or a writer of the config partition)
// that brings another authorized_keys to a provisioned appliance: root's
// keys stay as they are, with a message, until appliance.env opts in with
// EDGEGW_AUTHORIZED_KEYS=replace. The provisioning runs again as at a boot
// (edgegw-provision.service), with no reboot.
func testAuthorizedKeys(t *testing.T, vm *vm) {
	const intruder = "ssh-ed25519 AAAAC3NzaC1lZDI1NTE5AAAAIOEkfEfmlFA5Ytl4vJPgsc4l8gu2YDoZLY9ay5jJ7CwK intruder"
	orig := vm.ssh(t, "cat /data/ssh/root.authorized_keys")
	vm.ssh(t, "mkdir -p /run/cfgtest && mount /dev/disk/by-label/EDGEGW-CFG /run/cfgtest && "+
		"{ cat /run/cfgtest/authorized_keys; echo '"+intruder+"'; } > /run/cfgtest/ak.new && "+
		"mv /run/cfgtest/ak.new /run/cfgtest/authorized_keys && umount /run/cfgtest")
	t.Cleanup(func() {
		vm.trySSH("sed -i '/^EDGEGW_AUTHORIZED_KEYS=/d' /etc/edgegw/appliance.env; grep -v intruder /data/ssh/root.authorized_keys > /data/ssh/ak && mv /data/ssh/ak /data/ssh/root.authorized_keys")
	})
	out := vm.ssh(t, "systemctl restart edgegw-provision && journalctl -b -u edgegw-provision -n 20 --no-pager -o cat; cat /data/ssh/root.authorized_keys")
	if strings.Contains(out, "intruder") || !strings.Contains(out, "not imported") {
		t.Fatalf("first-boot only: a new authorized_keys on EDGEGW-CFG was imported, or not reported:\n%s", out)
	}
	if got := vm.ssh(t, "cat /data/ssh/root.authorized_keys"); got != orig {
		t.Fatalf("root's keys changed: %q, want %q", got, orig)
	}
	out = vm.ssh(t, "echo EDGEGW_AUTHORIZED_KEYS=replace >> /etc/edgegw/appliance.env && systemctl restart edgegw-provision && cat /data/ssh/root.authorized_keys")
	if !strings.Contains(out, "intruder") || !strings.Contains(out, strings.TrimSpace(orig)) {
		t.Fatalf("EDGEGW_AUTHORIZED_KEYS=replace: root's keys are %q, want the partition's (both keys)", out)
	}
}

type vm struct {
	dir     string
	console string
	sshPort int
	key     string
	// peerKey is the private key of the configuration's static WireGuard
	// peer.
	peerKey wireguard.Key
	// disks are the extra read-only disks by serial (the VM sees
	// /dev/disk/by-id/virtio-SERIAL); "" when not given.
	disks map[string]string
}

// startVM boots a copy of img, provisioned with the test configuration and
// a fresh SSH key, with disks (serial → file; "" for none) attached
// read-only.
func startVM(t *testing.T, img string, disks map[string]string) *vm {
	t.Helper()
	dir := t.TempDir()
	v := &vm{dir: dir, console: filepath.Join(dir, "console.log"), key: filepath.Join(dir, "id"), disks: disks}
	run(t, "ssh-keygen", "-q", "-t", "ed25519", "-N", "", "-f", v.key)
	var err error
	if v.peerKey, err = wireguard.GeneratePrivateKey(); err != nil {
		t.Fatal(err)
	}
	disk := filepath.Join(dir, "disk.img")
	run(t, "cp", "--sparse=always", img, disk)
	write(t, filepath.Join(dir, "edgegw.yaml"), fmt.Sprintf(testConfig, v.peerKey.PublicKey().String()))
	write(t, filepath.Join(dir, "appliance.env"), fmt.Sprintf("EDGEGW_HEALTH_DEADLINE=%d\n", healthDeadline))
	run(t, "./provision.sh", disk, "--config", filepath.Join(dir, "edgegw.yaml"), "--ssh-key", v.key+".pub",
		"--env", filepath.Join(dir, "appliance.env"))
	vars := filepath.Join(dir, "OVMF_VARS.fd")
	v.sshPort = freePort(t)

	// -nodefaults: no CD-ROM for the firmware to try first, no VGA; the
	// appliance's disk is the only boot option. -no-reboot: see powerOn.
	args := []string{
		"-nodefaults", "-no-reboot", "-machine", "q35,accel=tcg", "-cpu", "max", "-smp", "2", "-m", "1024",
		"-display", "none", "-monitor", "none",
		"-chardev", "file,id=con,append=on,path=" + v.console, "-serial", "chardev:con",
		"-drive", "if=pflash,format=raw,readonly=on,file=/usr/share/OVMF/OVMF_CODE_4M.fd",
		"-drive", "if=pflash,format=raw,file=" + vars,
		"-drive", "if=none,id=disk,format=raw,file=" + disk,
		"-device", "virtio-blk-pci,drive=disk,bootindex=0",
		"-netdev", fmt.Sprintf("user,id=n0,hostfwd=tcp:127.0.0.1:%d-:22", v.sshPort),
		"-device", "virtio-net-pci,netdev=n0,romfile=",
		// A hardware watchdog, as appliances have; it resets the VM if
		// the guest stops feeding it.
		"-device", "i6300esb",
	}
	for _, name := range slices.Sorted(maps.Keys(disks)) {
		if f := disks[name]; f != "" {
			args = append(args, "-drive", "if=none,id="+name+",format=raw,readonly=on,file="+f,
				"-device", "virtio-blk-pci,drive="+name+",serial="+name)
		}
	}
	p := &power{args: args, vars: vars, done: make(chan struct{})}
	if err := p.start(); err != nil {
		t.Fatal(err)
	}
	go p.run()
	t.Cleanup(func() {
		p.stop()
		if t.Failed() {
			t.Logf("qemu: %s", p.log.String())
			t.Logf("console (last 6000 bytes):\n%s", v.consoleTail(6000))
		}
		if keep := os.Getenv("EDGEGW_IMAGE_CONSOLE"); keep != "" {
			b, _ := os.ReadFile(v.console)
			os.WriteFile(keep, b, 0o644)
		}
	})
	return v
}

// power runs the VM one boot per QEMU process, like power-cycling a
// machine: QEMU runs with -no-reboot, so a reboot (the guest's own, or
// its watchdog's reset) ends the process, and run starts a new one on the
// same disk with the firmware variables as at the first boot. In one
// long-running QEMU the fourth boot of the update test stalled for
// minutes under TCG, in two runs out of two (once in the firmware, once
// unpacking the initramfs); every fresh process booted in about a
// minute. The A/B state lives on the disk (systemd-boot's entries and
// their counters on the ESP), so nothing the test checks is lost.
type power struct {
	args []string
	vars string
	done chan struct{}

	mu      sync.Mutex
	cmd     *exec.Cmd
	stopped bool
	boots   int
	log     lockedBuffer // QEMU's stderr and exits
}

// lockedBuffer is a bytes.Buffer that QEMU's stderr and run write at once.
type lockedBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *lockedBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *lockedBuffer) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

// maxBoots bounds the power-ons: the test needs 4 (first boot, update,
// failed trial, fallback); a boot loop must not run until the deadline.
const maxBoots = 8

// start powers the machine on with fresh firmware variables.
func (p *power) start() error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.stopped {
		return errors.New("stopped")
	}
	if p.boots >= maxBoots {
		return fmt.Errorf("%d boots: not powering on again", p.boots)
	}
	b, err := os.ReadFile("/usr/share/OVMF/OVMF_VARS_4M.fd")
	if err != nil {
		return err
	}
	if err := os.WriteFile(p.vars, b, 0o644); err != nil {
		return err
	}
	cmd := exec.Command("qemu-system-x86_64", p.args...)
	cmd.Stderr = &p.log
	if err := cmd.Start(); err != nil {
		return err
	}
	p.cmd = cmd
	p.boots++
	return nil
}

// run waits for each QEMU process and powers on again after it ends,
// until stop.
func (p *power) run() {
	defer close(p.done)
	for {
		err := p.cmd.Wait()
		p.mu.Lock()
		stopped, boots := p.stopped, p.boots
		p.mu.Unlock()
		fmt.Fprintf(&p.log, "%s qemu (boot %d) exited: %v\n", time.Now().UTC().Format(time.TimeOnly), boots, err)
		if stopped {
			return
		}
		if err := p.start(); err != nil {
			fmt.Fprintf(&p.log, "power on: %v\n", err)
			return
		}
	}
}

// stop powers the machine off for good.
func (p *power) stop() {
	p.mu.Lock()
	p.stopped = true
	p.cmd.Process.Kill()
	p.mu.Unlock()
	<-p.done
}

// get GETs an admin path in the VM: /api/* over the root-only admin
// socket (the API needs a token on TCP), the rest on the loopback
// listener.
func (v *vm) get(t *testing.T, path string) string {
	t.Helper()
	out, err := v.trySSH(adminCurl(path))
	if err != nil {
		t.Fatalf("GET %s: %v\n%s", path, err, out)
	}
	return out
}

func adminCurl(path string) string {
	if strings.HasPrefix(path, "/api/") {
		return "curl -sSf --unix-socket /run/edgegw/admin.sock http://localhost" + path
	}
	return "curl -sSf http://127.0.0.1:9100" + path
}

func (v *vm) version(t *testing.T) string {
	var st struct {
		Version string `json:"version"`
	}
	if err := json.Unmarshal([]byte(v.get(t, "/api/v1/status")), &st); err != nil {
		t.Fatal(err)
	}
	return st.Version
}

// apply writes an update bundle in the VM with `edgegw update` (or, from
// an edgegw without that command, the script it runs), then reboots it.
func (v *vm) apply(t *testing.T, bundle string, tries int) {
	t.Helper()
	start := time.Now()
	command := fmt.Sprintf("edgegw update %s --tries %d --no-reboot", bundle, tries)
	if _, err := v.trySSH("edgegw update --help"); err != nil {
		t.Logf("this edgegw has no update command: running edgegw-update itself")
		command = fmt.Sprintf("edgegw-update apply %s --tries %d --no-reboot", bundle, tries)
	}
	out, err := v.trySSHTimeout(command, 10*time.Minute)
	if err != nil {
		t.Fatalf("edgegw-update apply: %v\n%s", err, out)
	}
	t.Logf("%s (%s)", out, time.Since(start).Round(time.Second))
	v.ssh(t, "systemd-run --on-active=2 systemctl reboot")
}

func (v *vm) trySSH(command string) (string, error) {
	return v.trySSHTimeout(command, 60*time.Second)
}

func (v *vm) trySSHTimeout(command string, timeout time.Duration) (string, error) {
	ctx, cancel := context.WithTimeout(context.Background(), timeout)
	defer cancel()
	cmd := exec.CommandContext(ctx, "ssh", "-i", v.key, "-p", strconv.Itoa(v.sshPort),
		"-o", "StrictHostKeyChecking=no", "-o", "UserKnownHostsFile=/dev/null", "-o", "LogLevel=ERROR",
		"-o", "ConnectTimeout=10", "-o", "BatchMode=yes", "root@127.0.0.1", command)
	out, err := cmd.CombinedOutput()
	return strings.TrimSpace(string(out)), err
}

func (v *vm) ssh(t *testing.T, command string) string {
	t.Helper()
	out, err := v.trySSH(command)
	if err != nil {
		t.Fatalf("ssh %q: %v\n%s", command, err, out)
	}
	return out
}

func (v *vm) consoleTail(n int) string {
	b, _ := os.ReadFile(v.console)
	if len(b) > n {
		b = b[len(b)-n:]
	}
	return string(b)
}

func (v *vm) consoleHas(s string) bool {
	b, _ := os.ReadFile(v.console)
	return bytes.Contains(b, []byte(s))
}

// waitReady polls /readyz over SSH until it answers 200.
func waitReady(t *testing.T, v *vm, d time.Duration) {
	t.Helper()
	deadline := time.Now().Add(d)
	last := "no answer"
	for time.Now().Before(deadline) {
		out, err := v.trySSHTimeout("curl -s -m 5 -w ' HTTP %{http_code}' http://127.0.0.1:9100/readyz", 20*time.Second)
		if err == nil && strings.HasSuffix(out, " HTTP 200") {
			return
		}
		if err == nil {
			last = out
		}
		time.Sleep(2 * time.Second)
	}
	t.Fatalf("/readyz not 200 within %s (last: %s)", d, last)
}

// waitBoot waits until SSH answers from a boot other than prev; it returns
// the new boot id.
func waitBoot(t *testing.T, v *vm, prev string, d time.Duration) string {
	t.Helper()
	var id string
	waitFor(t, v, d, "cat /proc/sys/kernel/random/boot_id", func(s string) bool { id = s; return s != prev })
	return id
}

// waitFor runs command over SSH until ok accepts its output.
func waitFor(t *testing.T, v *vm, d time.Duration, command string, ok func(string) bool) {
	t.Helper()
	deadline := time.Now().Add(d)
	var out string
	var err error
	for time.Now().Before(deadline) {
		if out, err = v.trySSH(command); err == nil && ok(out) {
			return
		}
		time.Sleep(3 * time.Second)
	}
	t.Fatalf("%q: not as expected within %s (last: %q, %v)", command, d, out, err)
}

func hasModule(procModules, name string) bool {
	for _, line := range strings.Split(procModules, "\n") {
		if f := strings.Fields(line); len(f) > 0 && f[0] == name {
			return true
		}
	}
	return false
}

func freePort(t *testing.T) int {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().(*net.TCPAddr).Port
}

func run(t *testing.T, name string, args ...string) {
	t.Helper()
	if out, err := exec.Command(name, args...).CombinedOutput(); err != nil {
		t.Fatalf("%s %s: %v\n%s", name, strings.Join(args, " "), err, out)
	}
}

func write(t *testing.T, path, s string) {
	t.Helper()
	if err := os.WriteFile(path, []byte(s), 0o644); err != nil {
		t.Fatal(err)
	}
}
