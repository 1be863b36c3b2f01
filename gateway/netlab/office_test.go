//go:build linux

package netlab

import (
	"net/netip"
	"testing"
	"time"
)

// TestOffice: every router reaches its neighbours, the branch servers
// their router, and the internet joins the routers' public addresses; no
// office or branch LAN is reachable from outside without a tunnel.
func TestOffice(t *testing.T) {
	requirePing(t)
	lab := NewT(t)
	o, err := lab.Office()
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		from *NS
		to   netip.Addr
	}{
		{o.User2, o.GWWANAddr},
		{o.GREBranch, o.GWWANAddr},
		{o.IPsecBranch, o.GWWANAddr},
		{o.GREBranch, o.IPsecBranchAddr},
		{o.User, o.GREBranchAddr},
		{o.GRELAN, o.GREBranchAddr},
		{o.IPsecLAN, o.IPsecBranchAddr},
		{o.GREBranch, o.GREServerAddr},
		{o.IPsecBranch, o.IPsecServerAddr},
	} {
		Eventually(t, 10*time.Second, "ping "+c.to.String()+" from "+c.from.Name(), func() error {
			return ping(t, c.from, c.to.String())
		})
	}
	for _, c := range []struct {
		from *NS
		to   netip.Addr
	}{
		{o.GRELAN, o.ServerAddr},
		{o.IPsecLAN, o.ServerAddr},
		{o.LAN, o.GREServerAddr},
		{o.GREBranch, o.IPsecServerAddr},
		{o.User2, o.ServerAddr},
	} {
		if err := ping(t, c.from, c.to.String()); err == nil {
			t.Errorf("%s reached %s without a tunnel", c.from.Name(), c.to)
		}
	}
	for _, br := range []*NS{o.GREBranch, o.IPsecBranch} {
		for _, key := range []string{"ip_forward", "conf/all/rp_filter"} {
			out, err := br.Exec(t.Context(), "cat", "/proc/sys/net/ipv4/"+key)
			want := map[string]string{"ip_forward": "1\n", "conf/all/rp_filter": "0\n"}[key]
			if err != nil || string(out) != want {
				t.Errorf("%s %s = %q, %v; want %q", br.Name(), key, out, err, want)
			}
		}
	}
}
