package main

// edgegw update: the appliance's A/B update. The one implementation of the
// slot writing is the image's /usr/sbin/edgegw-update (image/rootfs); this
// command checks where it runs and what it was given, so that a mistake
// gets a clear message before anything is written, then hands over to the
// script. The script in turn has this command verify the bundle
// (`edgegw update --verify BUNDLE --into DIR`: verifyBundle) and
// takes every file it writes to the boot partition from DIR: only bytes
// covered by the signature reach the boot loader.

import (
	"archive/tar"
	"bytes"
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"io"
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"strings"

	"aead.dev/minisign"
)

// errNotAppliance: `edgegw update` ran somewhere other than a booted edgegw
// appliance image.
var errNotAppliance = errors.New("not an edgegw appliance")

const updateSynopsis = `edgegw update BUNDLE [--tries N] [--no-reboot]
       edgegw update --status
       edgegw update --verify BUNDLE [--pubkey FILE] [--into DIR]`

// updater holds where the appliance keeps what an update needs; tests point
// it elsewhere.
type updater struct {
	script  string // the appliance's update script
	cmdline string // the kernel command line, which names the booted slot
	pubkey  string // the minisign public key bundles must be signed with
}

var applianceUpdater = updater{
	script:  "/usr/sbin/edgegw-update",
	cmdline: "/proc/cmdline",
	pubkey:  "/usr/share/edgegw/update.pub",
}

// cmdUpdate writes an update bundle (edgegw-VERSION.update.tar from
// image/build.sh, a file or a block device holding one) to the slot that is
// not running, makes it the next boot with N tries, and reboots into it; the
// previous slot comes back by itself if the new one's edgegw does not get
// ready (image/README.md, "Updates"). A bundle must be signed with the key
// whose public half the image carries; --verify checks one anywhere.
func cmdUpdate(args []string, stdout, stderr io.Writer) error {
	return applianceUpdater.run(args, stdout, stderr)
}

func (u updater) run(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("update", updateSynopsis, stderr)
	tries := fs.Int("tries", 3, "boots the new slot gets to become ready before the previous slot returns (1-99)")
	noReboot := fs.Bool("no-reboot", false, "write the slot and the boot entry, but leave the reboot to you")
	status := fs.Bool("status", false, "print the booted slot, its version and the boot entries, and change nothing")
	verify := fs.Bool("verify", false, "only verify BUNDLE's signature and every member, write nothing (runs anywhere)")
	pubkey := fs.String("pubkey", "", "with --verify: the minisign public key `file` (default: the appliance's "+u.pubkey+")")
	into := fs.String("into", "", "with --verify: put the verified small members (all but root.squashfs) into `dir`, which must exist")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	switch {
	case *status && len(pos) == 0 && !*verify && *pubkey == "" && *into == "":
		if err := u.checkAppliance(); err != nil {
			return err
		}
		return u.exec(stdout, stderr, "status")
	case *verify && len(pos) == 1 && !*status:
		return u.verifyOnly(pos[0], *pubkey, *into, stdout)
	case *status || *verify || len(pos) != 1:
		fs.Usage()
		return errUsage
	case *pubkey != "" || *into != "":
		fmt.Fprintf(stderr, "edgegw update: --pubkey and --into go with --verify; an update trusts only %s\n", u.pubkey)
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
	pub, err := loadUpdateKey(u.pubkey)
	if err != nil {
		return err
	}
	// The signature first, on the few KiB at the bundle's head: an unsigned
	// or foreign bundle is refused here, before the script starts. The
	// script then has every member verified (verifyBundle) before it
	// writes the slot.
	if err := checkBundle(bundle, pub); err != nil {
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

// verifyOnly is `edgegw update --verify`: every check an update makes,
// nothing written but the verified members into into (when given).
func (u updater) verifyOnly(bundle, pubkey, into string, stdout io.Writer) error {
	if pubkey == "" {
		pubkey = u.pubkey
	}
	pub, err := loadUpdateKey(pubkey)
	if err != nil {
		return err
	}
	f, err := os.Open(bundle)
	if err != nil {
		return fmt.Errorf("update bundle: %w", err)
	}
	defer f.Close()
	b, err := verifyBundle(f, pub, into)
	if err != nil {
		return fmt.Errorf("update bundle %s: %w", bundle, err)
	}
	fmt.Fprintf(stdout, "%s: edgegw %s, signed by key %016X, every member matches\n", bundle, b.version, b.keyID)
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

// exec runs the update script with its output on ours.
func (u updater) exec(stdout, stderr io.Writer, args ...string) error {
	cmd := exec.Command(u.script, args...)
	cmd.Stdin, cmd.Stdout, cmd.Stderr = nil, stdout, stderr
	if err := cmd.Run(); err != nil {
		return fmt.Errorf("%s %s: %w", u.script, args[0], err)
	}
	return nil
}

// Update bundles (image/lib/customize.sh, make_bundle) are tar files with
// these members, in this order. SHA256SUMS lists the sha256 of the six
// after the signature; SHA256SUMS.minisig is a minisign (ed25519) signature
// of SHA256SUMS by the release key, whose trusted comment is
// "edgegw-update version=VERSION".
//
// The signature covers SHA256SUMS rather than the whole tar so that
// verification streams: the signature is checked on a few hundred bytes at
// the head of the bundle, and then each member is checked against its
// signed sum as it is read, once, with no second copy of a 300 MiB root on
// the appliance's small /data. A signature over the whole tar could only be
// checked after reading all of it, and the members would have to be kept
// (or read again) to use them.
var bundleMembers = []string{sumsMember, sigMember, "version", "cmdline", "root.size", "vmlinuz", "initrd.img", "root.squashfs"}

const (
	sumsMember = "SHA256SUMS"
	sigMember  = "SHA256SUMS.minisig"
	// trustedPrefix starts every bundle signature's trusted comment: a
	// signature the release key made for anything else (a download's
	// checksums, say) is not an update.
	trustedPrefix = "edgegw-update version="
	// maxCmdline bounds the kernel command line a bundle may carry (the
	// kernel's own limit on x86 is 2048 with root= and the slot added).
	maxCmdline = 1024
)

// memberLimit bounds each member's size: the small ones are read into
// memory, the kernel and initrd are copied to /var/tmp.
var memberLimit = map[string]int64{
	sumsMember: 4 << 10, sigMember: 4 << 10, "version": 128, "cmdline": maxCmdline + 1, "root.size": 32,
	"vmlinuz": 128 << 20, "initrd.img": 512 << 20, "root.squashfs": 16 << 30,
}

// Why a bundle is refused. Every refusal wraps one of these.
var (
	// errNotBundle: the file is not an edgegw update bundle at all.
	errNotBundle = errors.New("not an edgegw update bundle")
	// errUnsigned: a bundle with no signature.
	errUnsigned = errors.New("unsigned bundle")
	// errWrongKey: signed, but not by the key this appliance trusts.
	errWrongKey = errors.New("signed by another key")
	// errBadSignature: the signature does not verify: SHA256SUMS, the
	// trusted comment or the signature itself was altered, or the
	// signature was made for something else.
	errBadSignature = errors.New("bad signature")
	// errAltered: a member differs from its signed sum.
	errAltered = errors.New("altered after signing")
)

// bundleInfo is what a verified bundle says about itself.
type bundleInfo struct {
	version string
	cmdline string
	keyID   uint64
	sums    []byte // the signed SHA256SUMS
	size    int64  // root.squashfs's size
}

// loadUpdateKey reads the minisign public key bundles are verified with.
func loadUpdateKey(path string) (minisign.PublicKey, error) {
	pub, err := minisign.PublicKeyFromFile(path)
	if err != nil {
		return minisign.PublicKey{}, fmt.Errorf("update: the update signing key %s: %w (an appliance image carries it; see image/README.md, \"Signing keys\")", path, err)
	}
	return pub, nil
}

// checkBundle opens an update bundle and checks, from its first few KiB,
// that it is one and that its signature verifies. The full check of every
// member is verifyBundle's, which the update script runs before it writes.
func checkBundle(path string, pub minisign.PublicKey) error {
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
	if _, err := readSigned(tar.NewReader(f), pub); err != nil {
		return fmt.Errorf("update bundle %s: %w", path, err)
	}
	return nil
}

// verifyBundle reads a bundle from r once, start to end, and checks it: the
// signature over SHA256SUMS with pub, then every member against its signed
// sum, in the fixed order, with nothing before, between or after them. With
// into set, each verified member but root.squashfs is left in that
// directory (SHA256SUMS too); a member that fails its check is removed.
// It returns the first reason to refuse.
func verifyBundle(r io.Reader, pub minisign.PublicKey, into string) (*bundleInfo, error) {
	tr := tar.NewReader(r)
	info, err := readSigned(tr, pub)
	if err != nil {
		return nil, err
	}
	sums, err := parseSums(info.sums)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", sumsMember, err)
	}
	if into != "" {
		if err := writeVerified(into, sumsMember, info.sums); err != nil {
			return nil, err
		}
	}
	for _, name := range bundleMembers[2:] {
		h, err := nextMember(tr, name)
		if err != nil {
			return nil, err
		}
		// The small members are read into memory and checked; the rest
		// is streamed and hashed.
		var small bytes.Buffer
		isSmall := name == "version" || name == "cmdline" || name == "root.size"
		var dst io.Writer = io.Discard
		var part *os.File
		switch {
		case isSmall:
			dst = &small
		case name == "root.squashfs":
			// Never kept: the script streams it again onto the slot,
			// hashing again as it writes.
			info.size = h.Size
		case into != "":
			if part, err = os.OpenFile(filepath.Join(into, name+".part"), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600); err != nil {
				return nil, fmt.Errorf("%s: %w", name, err)
			}
			dst = part
		}
		sum := sha256.New()
		_, err = io.Copy(io.MultiWriter(sum, dst), tr)
		if part != nil {
			if cerr := part.Close(); err == nil {
				err = cerr
			}
		}
		if err == nil {
			if got, want := sum.Sum(nil), sums[name]; !bytes.Equal(got, want[:]) {
				err = fmt.Errorf("%s: sha256 %x, the signed %s says %x: %w", name, got, sumsMember, want, errAltered)
			}
		} else {
			err = fmt.Errorf("%s: %w", name, err)
		}
		if part != nil {
			if err == nil {
				err = os.Rename(part.Name(), filepath.Join(into, name))
			}
			if err != nil {
				os.Remove(part.Name())
			}
		}
		if err != nil {
			return nil, err
		}
		if err := info.checkSmall(name, small.Bytes()); err != nil {
			return nil, err
		}
		if into != "" && isSmall {
			if err := writeVerified(into, name, small.Bytes()); err != nil {
				return nil, err
			}
		}
	}
	if h, err := tr.Next(); err != io.EOF {
		if err != nil {
			return nil, fmt.Errorf("after root.squashfs: %w", err)
		}
		return nil, fmt.Errorf("member %q after root.squashfs: %w", h.Name, errNotBundle)
	}
	if want := strconv.FormatInt(info.size, 10); info.rootSize != want {
		return nil, fmt.Errorf("root.size says %s, root.squashfs has %s bytes: %w", info.rootSize, want, errNotBundle)
	}
	return &info.bundleInfo, nil
}

// signedBundle is a bundle's state while verifyBundle reads it.
type signedBundle struct {
	bundleInfo
	// tcVersion is the version the signature's trusted comment names.
	tcVersion string
	rootSize  string
}

// readSigned reads the first two members, SHA256SUMS and its signature,
// and verifies the signature with pub.
func readSigned(tr *tar.Reader, pub minisign.PublicKey) (*signedBundle, error) {
	h, err := tr.Next()
	if err != nil {
		return nil, fmt.Errorf("not a tar file (want edgegw-VERSION.update.tar): %w", err)
	}
	if h.Name != sumsMember {
		return nil, fmt.Errorf("first member is %q, want %s: %w", h.Name, sumsMember, errNotBundle)
	}
	sums, err := readMember(tr, h)
	if err != nil {
		return nil, err
	}
	h, err = tr.Next()
	if err != nil || h.Name != sigMember {
		got := "the end of the tar"
		if err == nil {
			got = fmt.Sprintf("%q", h.Name)
		} else if err != io.EOF {
			got = err.Error()
		}
		return nil, fmt.Errorf("no %s after %s (found %s): %w: refusing it; bundles must be signed with the key in %s (image/README.md, \"Signing keys\")",
			sigMember, sumsMember, got, errUnsigned, applianceUpdater.pubkey)
	}
	sigText, err := readMember(tr, h)
	if err != nil {
		return nil, err
	}
	var sig minisign.Signature
	if err := sig.UnmarshalText(sigText); err != nil {
		return nil, fmt.Errorf("%s: %w: %w", sigMember, errBadSignature, err)
	}
	if sig.KeyID != pub.ID() {
		return nil, fmt.Errorf("%s: made with key %016X, this appliance trusts only key %016X: %w", sigMember, sig.KeyID, pub.ID(), errWrongKey)
	}
	if !minisign.Verify(pub, sums, sigText) {
		return nil, fmt.Errorf("%s: does not verify with key %016X: %s or the signature's trusted comment was altered: %w",
			sigMember, pub.ID(), sumsMember, errBadSignature)
	}
	v, ok := strings.CutPrefix(sig.TrustedComment, trustedPrefix)
	if !ok || checkVersion(v) != nil {
		return nil, fmt.Errorf("%s: trusted comment %q: want %q: a signature made for something other than an update: %w",
			sigMember, sig.TrustedComment, trustedPrefix+"VERSION", errBadSignature)
	}
	return &signedBundle{bundleInfo: bundleInfo{keyID: sig.KeyID, sums: sums}, tcVersion: v}, nil
}

// checkSmall checks what the small members say, once their sums matched:
// even signed, a bundle must not be able to confuse the boot entry.
func (b *signedBundle) checkSmall(name string, data []byte) error {
	switch name {
	case "version":
		v := strings.TrimSuffix(string(data), "\n")
		if err := checkVersion(v); err != nil {
			return fmt.Errorf("version: %w: %w", err, errNotBundle)
		}
		if v != b.tcVersion {
			return fmt.Errorf("version %q, but the signature's trusted comment names %q: %w", v, b.tcVersion, errBadSignature)
		}
		b.version = v
	case "cmdline":
		c, err := checkCmdline(data)
		if err != nil {
			return fmt.Errorf("cmdline: %w: %w", err, errNotBundle)
		}
		b.cmdline = c
	case "root.size":
		s := strings.TrimSuffix(string(data), "\n")
		if n, err := strconv.ParseInt(s, 10, 64); err != nil || n <= 0 || strconv.FormatInt(n, 10) != s {
			return fmt.Errorf("root.size %q: not a size: %w", s, errNotBundle)
		}
		b.rootSize = s
	}
	return nil
}

// nextMember reads the next tar header and checks it is name, a regular
// file within its size limit.
func nextMember(tr *tar.Reader, name string) (*tar.Header, error) {
	h, err := tr.Next()
	if err == io.EOF {
		return nil, fmt.Errorf("no %s: the bundle ends early: %w", name, errNotBundle)
	}
	if err != nil {
		return nil, fmt.Errorf("before %s: %w", name, err)
	}
	if h.Name != name {
		return nil, fmt.Errorf("member %q where %s belongs: %w", h.Name, name, errNotBundle)
	}
	if h.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%s: not a regular file (type %q): %w", name, h.Typeflag, errNotBundle)
	}
	if h.Size > memberLimit[name] {
		return nil, fmt.Errorf("%s: %d bytes, at most %d: %w", name, h.Size, memberLimit[name], errNotBundle)
	}
	return h, nil
}

// readMember reads a small member whole.
func readMember(tr *tar.Reader, h *tar.Header) ([]byte, error) {
	if h.Typeflag != tar.TypeReg {
		return nil, fmt.Errorf("%s: not a regular file (type %q): %w", h.Name, h.Typeflag, errNotBundle)
	}
	if h.Size > memberLimit[h.Name] {
		return nil, fmt.Errorf("%s: %d bytes, at most %d: %w", h.Name, h.Size, memberLimit[h.Name], errNotBundle)
	}
	b, err := io.ReadAll(tr)
	if err != nil {
		return nil, fmt.Errorf("%s: %w", h.Name, err)
	}
	return b, nil
}

// parseSums parses SHA256SUMS as sha256sum writes it ("HEX  NAME" lines):
// exactly one sum for each member after the signature, nothing else.
func parseSums(b []byte) (map[string][sha256.Size]byte, error) {
	want := map[string]bool{}
	for _, m := range bundleMembers[2:] {
		want[m] = true
	}
	sums := map[string][sha256.Size]byte{}
	text := string(b)
	if !strings.HasSuffix(text, "\n") {
		return nil, fmt.Errorf("no newline at the end: %w", errNotBundle)
	}
	for i, line := range strings.Split(strings.TrimSuffix(text, "\n"), "\n") {
		hexsum, name, ok := strings.Cut(line, "  ")
		var sum [sha256.Size]byte
		if !ok || len(hexsum) != 2*sha256.Size || strings.ToLower(hexsum) != hexsum {
			return nil, fmt.Errorf("line %d: want \"SHA256  NAME\": %w", i+1, errNotBundle)
		}
		if _, err := hex.Decode(sum[:], []byte(hexsum)); err != nil {
			return nil, fmt.Errorf("line %d: want \"SHA256  NAME\": %w", i+1, errNotBundle)
		}
		if !want[name] {
			return nil, fmt.Errorf("line %d: %q is not a bundle member: %w", i+1, name, errNotBundle)
		}
		if _, dup := sums[name]; dup {
			return nil, fmt.Errorf("line %d: %s twice: %w", i+1, name, errNotBundle)
		}
		sums[name] = sum
	}
	for _, m := range bundleMembers[2:] {
		if _, ok := sums[m]; !ok {
			return nil, fmt.Errorf("no sum for %s: %w", m, errNotBundle)
		}
	}
	return sums, nil
}

// checkVersion accepts what image/build.sh makes a version of (git
// describe, VERSION=…): it lands in a boot entry and file names.
func checkVersion(v string) error {
	if v == "" || len(v) > 64 {
		return errors.New("want 1 to 64 characters")
	}
	for _, c := range v {
		if !(c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || strings.ContainsRune(".-_+~", c)) {
			return fmt.Errorf("%q: only letters, digits and . - _ + ~", v)
		}
	}
	return nil
}

// checkCmdline checks a bundle's kernel command line: one line of
// printable ASCII (a newline would add lines to the boot entry), without
// root= or edgegw.slot=, which the appliance adds for the slot it writes.
func checkCmdline(b []byte) (string, error) {
	s := strings.TrimSuffix(string(b), "\n")
	if s == "" || len(s) > maxCmdline {
		return "", fmt.Errorf("want 1 to %d characters", maxCmdline)
	}
	for i := 0; i < len(s); i++ {
		if s[i] < 0x20 || s[i] > 0x7e {
			return "", fmt.Errorf("byte %d is %#x: want one line of printable ASCII", i, s[i])
		}
	}
	for _, w := range strings.Fields(s) {
		if strings.HasPrefix(w, "root=") || strings.HasPrefix(w, "edgegw.slot=") {
			return "", fmt.Errorf("%q: the appliance sets root= and edgegw.slot= itself", w)
		}
	}
	return s, nil
}

// writeVerified writes a verified member into dir, once.
func writeVerified(dir, name string, b []byte) error {
	f, err := os.OpenFile(filepath.Join(dir, name), os.O_WRONLY|os.O_CREATE|os.O_EXCL, 0o600)
	if err != nil {
		return fmt.Errorf("keep %s: %w", name, err)
	}
	_, err = f.Write(b)
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err != nil {
		return fmt.Errorf("keep %s: %w", name, err)
	}
	return nil
}
