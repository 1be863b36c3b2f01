package main

import (
	"archive/tar"
	"bytes"
	"errors"
	"os"
	"os/exec"
	"path/filepath"
	"strings"
	"testing"
)

// realScript is the appliance's update script from the image tree.
const realScript = "../../image/rootfs/usr/sbin/edgegw-update"

func writeFile(t *testing.T, name string, b []byte, mode os.FileMode) string {
	t.Helper()
	p := filepath.Join(t.TempDir(), name)
	if err := os.WriteFile(p, b, mode); err != nil {
		t.Fatal(err)
	}
	return p
}

// tarWith returns a tar file whose members are the given names, in order.
func tarWith(t *testing.T, names ...string) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, n := range names {
		if err := w.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: 3}); err != nil {
			t.Fatal(err)
		}
		w.Write([]byte("abc"))
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

func gptDisk() []byte {
	b := make([]byte, 4096)
	copy(b[512:], "EFI PART")
	return b
}

func TestUpdate(t *testing.T) {
	if os.Geteuid() != 0 {
		t.Skip("the bundle checks run after the root check: run as root")
	}
	booted := writeFile(t, "cmdline", []byte("BOOT_IMAGE=/edgegw/a/vmlinuz root=PARTUUID=x edgegw.slot=a ro\n"), 0o644)
	devMachine := writeFile(t, "cmdline", []byte("BOOT_IMAGE=/boot/vmlinuz root=/dev/sda1 ro quiet\n"), 0o644)
	bundle := writeFile(t, "edgegw-1.update.tar", tarWith(t, "SHA256SUMS", "version", "root.squashfs"), 0o644)
	// A stand-in for the script that records its arguments: what reaches
	// the real script is checked in the VM (image/appliance_test.go).
	argsFile := filepath.Join(t.TempDir(), "args")
	recorder := writeFile(t, "edgegw-update", []byte("#!/bin/sh\necho \"$@\" > "+argsFile+"\necho from the script\n"), 0o755)
	failing := writeFile(t, "edgegw-update", []byte("#!/bin/sh\necho 'edgegw-update: slot b: read back 00, want ff' >&2\nexit 1\n"), 0o755)

	tests := []struct {
		name     string
		u        updater
		args     []string
		usage    bool
		notAppl  bool
		errHas   string
		wantArgs string // what the script received
		stdout   string
		stderr   string
	}{
		{name: "no bundle", u: updater{recorder, booted}, args: nil, usage: true, stderr: "Usage: edgegw update BUNDLE"},
		{name: "two bundles", u: updater{recorder, booted}, args: []string{bundle, bundle}, usage: true},
		{name: "status and bundle", u: updater{recorder, booted}, args: []string{"--status", bundle}, usage: true},
		{name: "tries 0", u: updater{recorder, booted}, args: []string{bundle, "--tries", "0"}, usage: true, stderr: "--tries 0: want 1 to 99"},
		{name: "tries 100", u: updater{recorder, booted}, args: []string{"--tries", "100", bundle}, usage: true},
		{name: "no script", u: updater{"/nonexistent/edgegw-update", booted}, args: []string{bundle}, notAppl: true,
			errHas: "/nonexistent/edgegw-update: stat"},
		{name: "not booted from a slot", u: updater{realScript, devMachine}, args: []string{bundle}, notAppl: true,
			errHas: "no edgegw.slot="},
		{name: "status off appliance", u: updater{realScript, devMachine}, args: []string{"--status"}, notAppl: true},
		{name: "missing bundle", u: updater{recorder, booted}, args: []string{"/nonexistent/b.tar"}, errHas: "no such file"},
		{name: "disk image", u: updater{recorder, booted}, args: []string{writeFile(t, "edgegw.img", gptDisk(), 0o644)},
			errHas: "this is a disk image; an update takes the bundle"},
		{name: "not a tar", u: updater{recorder, booted}, args: []string{writeFile(t, "x.tar", []byte("hello"), 0o644)},
			errHas: "not a tar file"},
		{name: "another tar", u: updater{recorder, booted}, args: []string{writeFile(t, "y.tar", tarWith(t, "etc/passwd"), 0o644)},
			errHas: `first member is "etc/passwd", want SHA256SUMS`},
		{name: "apply", u: updater{recorder, booted}, args: []string{bundle}, wantArgs: "apply " + bundle + " --tries 3", stdout: "from the script"},
		{name: "apply flags", u: updater{recorder, booted}, args: []string{"--no-reboot", bundle, "--tries", "1"},
			wantArgs: "apply " + bundle + " --tries 1 --no-reboot"},
		{name: "status", u: updater{recorder, booted}, args: []string{"--status"}, wantArgs: "status"},
		{name: "script fails", u: updater{failing, booted}, args: []string{bundle}, errHas: "update from " + bundle + ": " + failing + " apply: exit status 1",
			stderr: "read back 00, want ff"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			os.Remove(argsFile)
			var out, errb bytes.Buffer
			err := tt.u.run(tt.args, &out, &errb)
			switch {
			case tt.usage:
				if !errors.Is(err, errUsage) {
					t.Errorf("err = %v, want a usage error", err)
				}
			case tt.notAppl && !errors.Is(err, errNotAppliance):
				t.Errorf("err = %v, want errNotAppliance", err)
			case tt.errHas != "" && (err == nil || !strings.Contains(err.Error(), tt.errHas)):
				t.Errorf("err = %v, want one containing %q", err, tt.errHas)
			case tt.wantArgs != "" && err != nil:
				t.Errorf("err = %v", err)
			}
			got, _ := os.ReadFile(argsFile)
			if g := strings.TrimSpace(string(got)); g != tt.wantArgs {
				t.Errorf("the script got %q, want %q", g, tt.wantArgs)
			}
			if !strings.Contains(out.String(), tt.stdout) || !strings.Contains(errb.String(), tt.stderr) {
				t.Errorf("stdout %q (want %q), stderr %q (want %q)", out.String(), tt.stdout, errb.String(), tt.stderr)
			}
		})
	}
}

// TestUpdateRealScriptOffAppliance runs the image's own edgegw-update
// here, where the kernel command line names no slot: it refuses before
// touching anything, and the error says so.
func TestUpdateRealScriptOffAppliance(t *testing.T) {
	if b, _ := os.ReadFile("/proc/cmdline"); strings.Contains(string(b), "edgegw.slot=") {
		t.Skip("running on an appliance")
	}
	if _, err := exec.LookPath("bash"); err != nil {
		t.Skip("needs bash")
	}
	var out, errb bytes.Buffer
	u := updater{script: realScript, cmdline: writeFile(t, "cmdline", []byte("edgegw.slot=a\n"), 0o644)}
	err := u.run([]string{"--status"}, &out, &errb)
	if err == nil || !strings.Contains(errb.String(), "not booted from an edgegw slot") {
		t.Errorf("err = %v, stderr %q: want the script's refusal", err, errb.String())
	}
}
