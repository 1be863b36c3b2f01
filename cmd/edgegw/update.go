package main

// edgegw update: the appliance's A/B update. The one implementation is
// the image's /usr/sbin/edgegw-update (image/rootfs); this command checks
// where it runs and what it was given, so that a mistake gets a clear
// message before anything is written, then hands over to the script.

import (
	"archive/tar"
	"bytes"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"
)

// errNotAppliance: `edgegw update` ran somewhere other than a booted edgegw
// appliance image.
var errNotAppliance = errors.New("not an edgegw appliance")

const updateSynopsis = `edgegw update BUNDLE [--tries N] [--no-reboot] | edgegw update --status`

// updater holds where the appliance keeps what an update needs; tests point
// it elsewhere.
type updater struct {
	script  string // the appliance's update script
	cmdline string // the kernel command line, which names the booted slot
}

var applianceUpdater = updater{script: "/usr/sbin/edgegw-update", cmdline: "/proc/cmdline"}

// cmdUpdate writes an update bundle (edgegw-VERSION.update.tar from
// image/build.sh, a file or a block device holding one) to the slot that is
// not running, makes it the next boot with N tries, and reboots into it; the
// previous slot comes back by itself if the new one's edgegw does not get
// ready (image/README.md, "Updates").
func cmdUpdate(args []string, stdout, stderr io.Writer) error {
	return applianceUpdater.run(args, stdout, stderr)
}

func (u updater) run(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("update", updateSynopsis, stderr)
	tries := fs.Int("tries", 3, "boots the new slot gets to become ready before the previous slot returns (1-99)")
	noReboot := fs.Bool("no-reboot", false, "write the slot and the boot entry, but leave the reboot to you")
	status := fs.Bool("status", false, "print the booted slot, its version and the boot entries, and change nothing")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *status && len(pos) == 0:
		if err := u.checkAppliance(); err != nil {
			return err
		}
		return u.exec(stdout, stderr, "status")
	case *status || len(pos) != 1:
		fs.Usage()
		return errUsage
	case *tries < 1 || *tries > 99:
		fmt.Fprintf(stderr, "edgegw update: --tries %d: want 1 to 99\n", *tries)
		return errUsage
	}
	bundle, err := filepath.Abs(pos[0])
	if err != nil {
		return fmt.Errorf("update bundle %s: %w", pos[0], err)
	}
	if err := u.checkAppliance(); err != nil {
		return err
	}
	if os.Geteuid() != 0 {
		return errors.New("update: needs root: it writes a root partition and the boot loader's entries")
	}
	if err := checkBundle(bundle); err != nil {
		return err
	}
	a := []string{"apply", bundle, "--tries", strconv.Itoa(*tries)}
	if *noReboot {
		a = append(a, "--no-reboot")
	}
	if err := u.exec(stdout, stderr, a...); err != nil {
		return fmt.Errorf("update from %s: %w", pos[0], err)
	}
	return nil
}

// checkAppliance tells an appliance booted from an A/B slot from anything
// else (a development machine, a container, an appliance booted by hand).
func (u updater) checkAppliance() error {
	if _, err := os.Stat(u.script); err != nil {
		return fmt.Errorf("update: %w: %s: %w (`edgegw update` runs on the appliance image; "+
			"to install elsewhere, write edgegw-VERSION.img to a disk with dd; see image/README.md)", errNotAppliance, u.script, err)
	}
	b, err := os.ReadFile(u.cmdline)
	if err != nil {
		return fmt.Errorf("update: read the kernel command line: %w", err)
	}
	for _, w := range strings.Fields(string(b)) {
		if strings.HasPrefix(w, "edgegw.slot=") {
			return nil
		}
	}
	return fmt.Errorf("update: %w: the running system was not booted from an A/B slot (no edgegw.slot= in %s)", errNotAppliance, u.cmdline)
}

// checkBundle opens an update bundle and checks that it is one: a tar
// whose first member is SHA256SUMS. The script checks every byte against
// those sums; this only catches the wrong file early, with a hint.
func checkBundle(path string) error {
	f, err := os.Open(path)
	if err != nil {
		return fmt.Errorf("update bundle: %w", err)
	}
	defer f.Close()
	// A GPT disk says "EFI PART" at byte 512: someone gave the .img.
	head := make([]byte, 520)
	if n, _ := io.ReadFull(f, head); n == len(head) && bytes.Equal(head[512:520], []byte("EFI PART")) {
		return fmt.Errorf("update bundle %s: this is a disk image; an update takes the bundle built next to it, edgegw-VERSION.update.tar", path)
	}
	if _, err := f.Seek(0, io.SeekStart); err != nil {
		return fmt.Errorf("update bundle %s: %w", path, err)
	}
	h, err := tar.NewReader(f).Next()
	if err != nil {
		return fmt.Errorf("update bundle %s: not a tar file (want edgegw-VERSION.update.tar): %w", path, err)
	}
	if h.Name != "SHA256SUMS" {
		return fmt.Errorf("update bundle %s: first member is %q, want SHA256SUMS: not an edgegw update bundle", path, h.Name)
	}
	return nil
}

// exec runs the update script with its output on ours.
func (u updater) exec(stdout, stderr io.Writer, args ...string) error {
	cmd := exec.Command(u.script, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, stdout, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", u.script, args[0], err)
	}
	return nil
}
