package enroll

import (
	"os/exec"
	"strings"
	"testing"
)

// TestClientDeps: `edgegw enroll` runs on laptops; the package it lives in
// makes keys and wg-quick files with tunnel/wireguard/wgconf and must not
// link a WireGuard implementation or netlink.
func TestClientDeps(t *testing.T) {
	out, err := exec.Command("go", "list", "-deps", "github.com/edgegw/edgegw/access/enroll").CombinedOutput()
	if err != nil {
		t.Fatalf("go list: %v\n%s", err, out)
	}
	for _, dep := range strings.Fields(string(out)) {
		for _, banned := range []string{"golang.zx2c4.com/wireguard", "github.com/vishvananda/netlink", "github.com/edgegw/edgegw/tunnel/wireguard"} {
			if dep == banned || strings.HasPrefix(dep, banned+"/") && !strings.HasPrefix(dep, "github.com/edgegw/edgegw/tunnel/wireguard/wgconf") {
				t.Errorf("access/enroll links %s", dep)
			}
		}
	}
}
