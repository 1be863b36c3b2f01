package main

import (
	"archive/tar"
	"bytes"
	"crypto/rand"
	"crypto/sha256"
	"errors"
	"fmt"
	"io"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"strings"
	"testing"

	"aead.dev/minisign"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
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
	testkit.NeedRoot(t) // the bundle checks run after the root check
	booted := writeFile(t, "cmdline", []byte("BOOT_IMAGE=/edgegw/a/vmlinuz root=PARTUUID=x edgegw.slot=a ro\n"), 0o644)
	devMachine := writeFile(t, "cmdline", []byte("BOOT_IMAGE=/boot/vmlinuz root=/dev/sda1 ro quiet\n"), 0o644)
	key := newTestKey(t)
	pubFile := key.pubFile(t)
	bundle := writeFile(t, "edgegw-1.update.tar", key.bundle(t, nil), 0o644)
	unsigned := writeFile(t, "unsigned.update.tar", key.bundle(t, func(b *testBundle) { b.unsigned = true }), 0o644)
	foreign := writeFile(t, "foreign.update.tar", newTestKey(t).bundle(t, nil), 0o644)
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
		{name: "no bundle", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: nil, usage: true, stderr: "Usage: edgegw update BUNDLE"},
		{name: "two bundles", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{bundle, bundle}, usage: true},
		{name: "status and bundle", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{"--status", bundle}, usage: true},
		{name: "tries 0", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{bundle, "--tries", "0"}, usage: true, stderr: "--tries 0: want 1 to 99"},
		{name: "tries 100", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{"--tries", "100", bundle}, usage: true},
		{name: "no script", u: updater{script: "/nonexistent/edgegw-update", cmdline: booted, pubkey: pubFile}, args: []string{bundle}, notAppl: true,
			errHas: "/nonexistent/edgegw-update: stat"},
		{name: "not booted from a slot", u: updater{script: realScript, cmdline: devMachine, pubkey: pubFile}, args: []string{bundle}, notAppl: true,
			errHas: "no edgegw.slot="},
		{name: "status off appliance", u: updater{script: realScript, cmdline: devMachine, pubkey: pubFile}, args: []string{"--status"}, notAppl: true},
		{name: "missing bundle", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{"/nonexistent/b.tar"}, errHas: "no such file"},
		{name: "disk image", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{writeFile(t, "edgegw.img", gptDisk(), 0o644)},
			errHas: "this is a disk image; an update takes the bundle"},
		{name: "not a tar", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{writeFile(t, "x.tar", []byte("hello"), 0o644)},
			errHas: "not a tar file"},
		{name: "another tar", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{writeFile(t, "y.tar", tarWith(t, "etc/passwd"), 0o644)},
			errHas: `first member is "etc/passwd", want SHA256SUMS`},
		{name: "unsigned", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{unsigned},
			errHas: "no SHA256SUMS.minisig after SHA256SUMS (found \"version\"): unsigned bundle"},
		{name: "another key", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{foreign},
			errHas: "this appliance trusts only key " + key.id() + ": signed by another key"},
		{name: "no key on the appliance", u: updater{script: recorder, cmdline: booted, pubkey: "/nonexistent/update.pub"}, args: []string{bundle},
			errHas: "the update signing key /nonexistent/update.pub"},
		{name: "pubkey without verify", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{bundle, "--pubkey", pubFile},
			usage: true, stderr: "--pubkey and --into go with --verify"},
		{name: "apply", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{bundle}, wantArgs: "apply " + bundle + " --tries 3", stdout: "from the script"},
		{name: "apply flags", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{"--no-reboot", bundle, "--tries", "1"},
			wantArgs: "apply " + bundle + " --tries 1 --no-reboot"},
		{name: "status", u: updater{script: recorder, cmdline: booted, pubkey: pubFile}, args: []string{"--status"}, wantArgs: "status"},
		{name: "script fails", u: updater{script: failing, cmdline: booted, pubkey: pubFile}, args: []string{bundle}, errHas: "update from " + bundle + ": " + failing + " apply: exit status 1",
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
	testkit.NeedTool(t, "bash", "bash")
	var out, errb bytes.Buffer
	u := updater{script: realScript, cmdline: writeFile(t, "cmdline", []byte("edgegw.slot=a\n"), 0o644)}
	err := u.run([]string{"--status"}, &out, &errb)
	if err == nil || !strings.Contains(errb.String(), "not booted from an edgegw slot") {
		t.Errorf("err = %v, stderr %q: want the script's refusal", err, errb.String())
	}
}

// testKey is a minisign key pair made for one test.
type testKey struct {
	pub  minisign.PublicKey
	priv minisign.PrivateKey
}

func newTestKey(t testing.TB) testKey {
	t.Helper()
	pub, priv, err := minisign.GenerateKey(rand.Reader)
	if err != nil {
		t.Fatal(err)
	}
	return testKey{pub, priv}
}

// id is the key ID as the errors print it.
func (k testKey) id() string { return fmt.Sprintf("%016X", k.pub.ID()) }

// pubFile writes the public key as minisign -G does.
func (k testKey) pubFile(t *testing.T) string {
	t.Helper()
	b, err := k.pub.MarshalText()
	if err != nil {
		t.Fatal(err)
	}
	return writeFile(t, "update.pub", append(b, '\n'), 0o644)
}

// testBundle is an update bundle as image/lib/customize.sh's make_bundle
// writes it; a test changes it before it is signed and written
// (testKey.bundle's edit), or after (its fields).
type testBundle struct {
	members map[string][]byte
	order   []string
	// trusted is the signature's trusted comment.
	trusted string
	// prehashed signs as minisign 0.10 and later do by default
	// (HashEdDSA); otherwise the legacy EdDSA over the message.
	prehashed bool
	// after runs after the signature: the attacker's edits.
	after    func(b *testBundle)
	unsigned bool
	sums     []byte
	sig      []byte
}

func (k testKey) bundle(t testing.TB, edit func(b *testBundle)) []byte {
	t.Helper()
	b := &testBundle{
		members: map[string][]byte{
			"version":       []byte("1.2.3\n"),
			"cmdline":       []byte("ro rootfstype=squashfs console=ttyS0,115200n8 panic=10\n"),
			"vmlinuz":       bytes.Repeat([]byte("kernel"), 1000),
			"initrd.img":    bytes.Repeat([]byte("initrd"), 2000),
			"root.squashfs": bytes.Repeat([]byte("hsqs"), 5000),
		},
		order:   slices.Clone(bundleMembers),
		trusted: "edgegw-update version=1.2.3",
	}
	b.members["root.size"] = []byte(strconv.Itoa(len(b.members["root.squashfs"])) + "\n")
	if edit != nil {
		edit(b)
	}
	b.sums = b.sumFile()
	if b.prehashed {
		r := minisign.NewReader(bytes.NewReader(b.sums))
		io.Copy(io.Discard, r)
		b.sig = r.SignWithComments(k.priv, b.trusted, "signature from the test key")
	} else {
		b.sig = minisign.SignWithComments(k.priv, b.sums, b.trusted, "signature from the test key")
	}
	if b.after != nil {
		b.after(b)
	}
	return b.tar(t)
}

// sumFile is SHA256SUMS of the members as sha256sum prints it.
func (b *testBundle) sumFile() []byte {
	var s bytes.Buffer
	for _, n := range bundleMembers[2:] {
		fmt.Fprintf(&s, "%x  %s\n", sha256.Sum256(b.members[n]), n)
	}
	return s.Bytes()
}

func (b *testBundle) tar(t testing.TB) []byte {
	t.Helper()
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, n := range b.order {
		data := b.members[n]
		switch n {
		case sumsMember:
			data = b.sums
		case sigMember:
			if b.unsigned {
				continue
			}
			data = b.sig
		}
		if err := w.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: int64(len(data)), Format: tar.FormatGNU}); err != nil {
			t.Fatal(err)
		}
		w.Write(data)
	}
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	return buf.Bytes()
}

// TestVerifyBundle is the update's signature check against an attacker
// who can hand the appliance any bundle but has not the signing key: each
// case is a bundle edited after (or, for the bundle's own mistakes,
// before) signing, and the refusal it must get.
func TestVerifyBundle(t *testing.T) {
	key := newTestKey(t)
	other := newTestKey(t)
	flip := func(name string) func(b *testBundle) {
		return func(b *testBundle) { b.after = func(b *testBundle) { b.members[name][len(b.members[name])/2] ^= 1 } }
	}
	tests := []struct {
		name string
		key  testKey // signs; key if zero
		edit func(b *testBundle)
		// errIs is the refusal, nil for a good bundle; errHas is part of
		// its message.
		errIs  error
		errHas string
	}{
		{name: "good", edit: nil},
		{name: "good, prehashed signature (minisign -S)", edit: func(b *testBundle) { b.prehashed = true }},
		{name: "good, no newline after the version", edit: func(b *testBundle) {
			b.members["version"] = []byte("1.2.3")
		}},
		{name: "unsigned", edit: func(b *testBundle) { b.unsigned = true },
			errIs: errUnsigned, errHas: `no SHA256SUMS.minisig after SHA256SUMS (found "version")`},
		{name: "signed by another key", key: other,
			errIs: errWrongKey, errHas: "made with key " + other.id() + ", this appliance trusts only key " + key.id()},
		{name: "another key claiming our key ID", key: testKey{other.pub, other.priv}, edit: func(b *testBundle) {
			b.after = func(b *testBundle) {
				// The key ID is a hint, not a secret: a forger sets it.
				var s minisign.Signature
				s.UnmarshalText(b.sig)
				s.KeyID = key.pub.ID()
				b.sig, _ = s.MarshalText()
			}
		}, errIs: errBadSignature, errHas: "does not verify with key " + key.id()},
		{name: "altered vmlinuz", edit: flip("vmlinuz"), errIs: errAltered, errHas: "vmlinuz: sha256 "},
		{name: "altered initrd", edit: flip("initrd.img"), errIs: errAltered, errHas: "initrd.img: sha256 "},
		{name: "altered root", edit: flip("root.squashfs"), errIs: errAltered, errHas: "root.squashfs: sha256 "},
		{name: "altered version", edit: func(b *testBundle) {
			b.after = func(b *testBundle) { b.members["version"] = []byte("9.9.9\n") }
		}, errIs: errAltered, errHas: "version: sha256 "},
		{name: "altered cmdline", edit: func(b *testBundle) {
			b.after = func(b *testBundle) { b.members["cmdline"] = []byte("ro init=/bin/sh\n") }
		}, errIs: errAltered, errHas: "cmdline: sha256 "},
		{name: "altered cmdline, SHA256SUMS recomputed", edit: func(b *testBundle) {
			b.after = func(b *testBundle) {
				b.members["cmdline"] = []byte("ro init=/bin/sh\n")
				b.sums = b.sumFile()
			}
		}, errIs: errBadSignature, errHas: "SHA256SUMS or the signature's trusted comment was altered"},
		{name: "trusted comment altered", edit: func(b *testBundle) {
			b.after = func(b *testBundle) {
				b.sig = bytes.Replace(b.sig, []byte("version=1.2.3"), []byte("version=1.2.4"), 1)
			}
		}, errIs: errBadSignature, errHas: "does not verify"},
		{name: "trusted comment names another version", edit: func(b *testBundle) { b.trusted = "edgegw-update version=1.2.2" },
			errIs: errBadSignature, errHas: `version "1.2.3", but the signature's trusted comment names "1.2.2"`},
		{name: "signature made for something else", edit: func(b *testBundle) { b.trusted = "timestamp:1767225600\tfile:SHA256SUMS" },
			errIs: errBadSignature, errHas: "a signature made for something other than an update"},
		{name: "signature is not minisign", edit: func(b *testBundle) {
			b.after = func(b *testBundle) { b.sig = []byte("-----BEGIN PGP SIGNATURE-----\n") }
		}, errIs: errBadSignature, errHas: "SHA256SUMS.minisig: bad signature"},
		{name: "signed cmdline with a second line", edit: func(b *testBundle) {
			b.members["cmdline"] = []byte("ro\ninitrd /evil\n")
		}, errIs: errNotBundle, errHas: "byte 2 is 0xa"},
		{name: "signed cmdline naming the root", edit: func(b *testBundle) {
			b.members["cmdline"] = []byte("ro root=/dev/sdb1\n")
		}, errIs: errNotBundle, errHas: `"root=/dev/sdb1": the appliance sets root=`},
		{name: "root.size disagrees", edit: func(b *testBundle) { b.members["root.size"] = []byte("12\n") },
			errIs: errNotBundle, errHas: "root.size says 12, root.squashfs has 20000 bytes"},
		{name: "version with a slash", edit: func(b *testBundle) {
			b.members["version"] = []byte("../x\n")
			b.trusted = "edgegw-update version=1.2.3"
		}, errIs: errNotBundle, errHas: "only letters, digits"},
		{name: "member order", edit: func(b *testBundle) {
			b.order = []string{sumsMember, sigMember, "cmdline", "version", "root.size", "vmlinuz", "initrd.img", "root.squashfs"}
		}, errIs: errNotBundle, errHas: `member "cmdline" where version belongs`},
		{name: "a member after the root", edit: func(b *testBundle) {
			b.members["extra"] = []byte("x")
			b.order = append(b.order, "extra")
		}, errIs: errNotBundle, errHas: `member "extra" after root.squashfs`},
		{name: "root missing", edit: func(b *testBundle) { b.order = b.order[:len(b.order)-1] },
			errIs: errNotBundle, errHas: "no root.squashfs: the bundle ends early"},
		{name: "SHA256SUMS lists another file", edit: func(b *testBundle) {
			b.after = func(b *testBundle) { b.sums = append(b.sums, []byte(strings.Repeat("0", 64)+"  etc/shadow\n")...) }
		}, errIs: errBadSignature},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			signer := tt.key
			if signer.pub.ID() == 0 {
				signer = key
			}
			data := signer.bundle(t, tt.edit)
			into := t.TempDir()
			info, err := verifyBundle(bytes.NewReader(data), key.pub, into)
			if tt.errIs == nil {
				if err != nil {
					t.Fatalf("refused a good bundle: %v", err)
				}
				if info.version != "1.2.3" || info.keyID != key.pub.ID() || info.size != 20000 ||
					info.cmdline != "ro rootfstype=squashfs console=ttyS0,115200n8 panic=10" {
					t.Errorf("info = %+v", info)
				}
				// Everything but the root is kept, as signed.
				for _, n := range []string{sumsMember, "version", "cmdline", "root.size", "vmlinuz", "initrd.img"} {
					if _, err := os.Stat(filepath.Join(into, n)); err != nil {
						t.Errorf("%s not kept: %v", n, err)
					}
				}
				if _, err := os.Stat(filepath.Join(into, "root.squashfs")); err == nil {
					t.Errorf("root.squashfs kept; the script streams it")
				}
				if err := checkBundle(writeFile(t, "b.tar", data, 0o644), key.pub); err != nil {
					t.Errorf("checkBundle: %v", err)
				}
				return
			}
			if !errors.Is(err, tt.errIs) || !strings.Contains(err.Error(), tt.errHas) {
				t.Fatalf("err = %v, want %v with %q", err, tt.errIs, tt.errHas)
			}
			// Nothing that failed its check is left for the script.
			for _, n := range []string{"vmlinuz", "initrd.img", "vmlinuz.part", "initrd.img.part"} {
				if tt.errIs == errAltered && strings.HasPrefix(err.Error(), n) {
					if _, err := os.Stat(filepath.Join(into, n)); err == nil {
						t.Errorf("%s kept after it failed its check", n)
					}
				}
			}
		})
	}
}

// TestVerifyOnly runs `edgegw update --verify` as a release engineer
// would, with the public key given.
func TestVerifyOnly(t *testing.T) {
	key := newTestKey(t)
	good := writeFile(t, "good.tar", key.bundle(t, nil), 0o644)
	bad := writeFile(t, "bad.tar", newTestKey(t).bundle(t, nil), 0o644)
	u := updater{script: "/nonexistent", cmdline: "/nonexistent", pubkey: "/nonexistent/update.pub"}
	var out, errb bytes.Buffer
	if err := u.run([]string{"--verify", good, "--pubkey", key.pubFile(t)}, &out, &errb); err != nil {
		t.Fatalf("--verify a good bundle: %v", err)
	}
	if want := "edgegw 1.2.3, signed by key " + key.id() + ", every member matches"; !strings.Contains(out.String(), want) {
		t.Errorf("stdout %q, want %q", out.String(), want)
	}
	if err := u.run([]string{"--verify", bad, "--pubkey", key.pubFile(t)}, &out, &errb); !errors.Is(err, errWrongKey) {
		t.Errorf("--verify a foreign bundle: %v, want errWrongKey", err)
	}
	if err := u.run([]string{"--verify", good}, &out, &errb); err == nil || !strings.Contains(err.Error(), "/nonexistent/update.pub") {
		t.Errorf("--verify with no key: %v", err)
	}
}

// FuzzVerifyBundle feeds verifyBundle arbitrary bytes with a key that
// signed one SHA256SUMS only: it must not panic, and whatever it accepts
// must carry exactly that signed SHA256SUMS.
func FuzzVerifyBundle(f *testing.F) {
	key := newTestKey(f)
	var signed []byte
	good := key.bundle(f, func(b *testBundle) {
		b.after = func(b *testBundle) { signed = b.sums }
	})
	f.Add(good)
	f.Add(key.bundle(f, func(b *testBundle) { b.unsigned = true }))
	f.Add(tarWithT(f, sumsMember, sigMember))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		info, err := verifyBundle(bytes.NewReader(data), key.pub, "")
		if err != nil {
			return
		}
		if !bytes.Equal(info.sums, signed) {
			t.Fatalf("accepted SHA256SUMS %q, the key signed %q", info.sums, signed)
		}
	})
}

// FuzzParseSums: SHA256SUMS is read before it is trusted only as far as
// the signature check; the parser still must not panic on any bytes.
func FuzzParseSums(f *testing.F) {
	f.Add(newTestKeyBundleSums(f))
	f.Add([]byte(strings.Repeat("0", 64) + "  version\n"))
	f.Add([]byte(strings.Repeat("g", 66) + "  version\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		sums, err := parseSums(data)
		if err != nil {
			return
		}
		if len(sums) != len(bundleMembers)-2 {
			t.Fatalf("%d sums from %q", len(sums), data)
		}
	})
}

func newTestKeyBundleSums(f *testing.F) []byte {
	var sums []byte
	newTestKey(f).bundle(f, func(b *testBundle) { b.after = func(b *testBundle) { sums = b.sums } })
	return sums
}

// tarWithT is tarWith for fuzz seeds.
func tarWithT(tb testing.TB, names ...string) []byte {
	var buf bytes.Buffer
	w := tar.NewWriter(&buf)
	for _, n := range names {
		w.WriteHeader(&tar.Header{Name: n, Mode: 0o644, Size: 3})
		w.Write([]byte("abc"))
	}
	if err := w.Close(); err != nil {
		tb.Fatal(err)
	}
	return buf.Bytes()
}
