//go:build linux

package posture

import (
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// writeTree writes files (path → content) under root.
func writeTree(t *testing.T, root string, files map[string]string) {
	t.Helper()
	for p, c := range files {
		full := filepath.Join(root, p)
		if err := os.MkdirAll(filepath.Dir(full), 0o755); err != nil {
			t.Fatal(err)
		}
		if err := os.WriteFile(full, []byte(c), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

// TestCollectDiskEncryption: the root file system's device is followed
// through device mapper (LVM on LUKS) to a CRYPT- mapping; a plain
// partition, an LVM volume without crypt and an overlay root are told
// apart.
func TestCollectDiskEncryption(t *testing.T) {
	common := map[string]string{
		"proc/sys/kernel/osrelease": "6.12.38+deb13-amd64\n",
		"etc/os-release":            "NAME=\"Debian GNU/Linux\"\nPRETTY_NAME=\"Debian GNU/Linux 13 (trixie)\"\n",
		// LUKS on nvme0n1p3 (dm-0), LVM root (dm-1) on it.
		"sys/class/block/nvme0n1p3/size":        "1",
		"sys/class/block/dm-0/dm/name":          "nvme0n1p3_crypt\n",
		"sys/class/block/dm-0/dm/uuid":          "CRYPT-LUKS2-0123456789abcdef-nvme0n1p3_crypt\n",
		"sys/class/block/dm-0/slaves/nvme0n1p3": "",
		"sys/class/block/dm-1/dm/name":          "vg-root\n",
		"sys/class/block/dm-1/dm/uuid":          "LVM-abcdef\n",
		"sys/class/block/dm-1/slaves/dm-0":      "",
		// A plain LVM volume (dm-2) on sda2.
		"sys/class/block/sda2/size":        "1",
		"sys/class/block/dm-2/dm/name":     "plain-root\n",
		"sys/class/block/dm-2/dm/uuid":     "LVM-123456\n",
		"sys/class/block/dm-2/slaves/sda2": "",
	}
	for _, tc := range []struct {
		name, mounts string
		want         Check
	}{
		{"LVM on LUKS by mapper name", "/dev/mapper/vg-root / ext4 rw 0 0\n", Yes},
		{"LUKS by dm name", "sysfs /sys sysfs rw 0 0\n/dev/dm-0 / ext4 rw 0 0\n", Yes},
		{"plain partition", "/dev/sda2 / ext4 rw 0 0\n", No},
		{"plain LVM", "/dev/mapper/plain-root / xfs rw 0 0\n", No},
		{"overlay", "overlay / overlay rw 0 0\n", Unknown},
		{"unknown mapping", "/dev/mapper/gone / ext4 rw 0 0\n", Unknown},
		{"no mounts", "", Unknown},
	} {
		t.Run(tc.name, func(t *testing.T) {
			root := t.TempDir()
			writeTree(t, root, common)
			if tc.mounts != "" {
				writeTree(t, root, map[string]string{"proc/self/mounts": tc.mounts})
			}
			at := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
			r := Collect(Sources{Root: root, ClientVersion: "1.0", Firewall: func() Check { return No }, Now: func() time.Time { return at }})
			if r.DiskEncrypted != tc.want {
				t.Errorf("disk encrypted %s, want %s", r.DiskEncrypted, tc.want)
			}
			if r.OS != OSLinux || r.OSVersion != "6.12.38+deb13-amd64" || r.OSDistro != "Debian GNU/Linux 13 (trixie)" || r.ClientVersion != "1.0" || !r.Time.Equal(at) {
				t.Errorf("report %+v", r)
			}
			// What Collect makes, ParseReport takes.
			if _, err := ParseReport(mustJSON(t, r)); err != nil {
				t.Errorf("collected report refused: %v", err)
			}
		})
	}
}

// TestCollectFirewall: in a fresh network namespace there is no host
// firewall; an input chain with policy drop, or with a reject rule, is
// one.
func TestCollectFirewall(t *testing.T) {
	testkit.NeedRoot(t)
	nft := testkit.NeedTool(t, "nft", "nftables")
	lab := netlab.NewT(t)
	for _, tc := range []struct {
		name, ruleset string
		want          Check
	}{
		{"none", "", No},
		{"accepting input chain", "table inet host { chain input { type filter hook input priority 0; policy accept; tcp dport 22 accept; }\n}", No},
		{"forward only", "table inet host { chain forward { type filter hook forward priority 0; policy drop; }\n}", No},
		{"drop policy", "table inet host { chain input { type filter hook input priority 0; policy drop; ct state established accept; }\n}", Yes},
		{"reject rule", "table ip filter { chain INPUT { type filter hook input priority 0; policy accept; tcp dport 23 reject; }\n}", Yes},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ns, err := lab.NS(tc.name[:4])
			if err != nil {
				t.Fatal(err)
			}
			if tc.ruleset != "" {
				file := filepath.Join(t.TempDir(), "ruleset.nft")
				writeTree(t, filepath.Dir(file), map[string]string{"ruleset.nft": tc.ruleset + "\n"})
				if out, err := ns.Exec(t.Context(), nft, "-f", file); err != nil {
					t.Fatalf("nft: %v: %s", err, out)
				}
			}
			var got Check
			if err := ns.Do(func() error { got = hostFirewall(Sources{Root: t.TempDir()}); return nil }); err != nil {
				t.Fatal(err)
			}
			if got != tc.want {
				t.Errorf("firewall %s, want %s", got, tc.want)
			}
		})
	}
}
