package ingest

import (
	"net/netip"
	"testing"
)

func TestAllowList(t *testing.T) {
	pp := func(ss ...string) []netip.Prefix {
		var ps []netip.Prefix
		for _, s := range ss {
			ps = append(ps, netip.MustParsePrefix(s))
		}
		return ps
	}
	for _, tc := range []struct {
		name  string
		list  []netip.Prefix
		addr  string
		allow bool
	}{
		{"empty allows all", nil, "192.0.2.1", true},
		{"empty allows v6", nil, "2001:db8::1", true},
		{"inside", pp("10.0.0.0/8"), "10.1.2.3", true},
		{"outside", pp("10.0.0.0/8"), "11.1.2.3", false},
		{"host", pp("192.0.2.7/32"), "192.0.2.7", true},
		{"next host", pp("192.0.2.7/32"), "192.0.2.8", false},
		{"unmasked prefix", pp("192.0.2.7/24"), "192.0.2.200", true},
		{"mapped prefix", pp("::ffff:10.0.0.0/104"), "10.9.9.9", true},
		{"v6", pp("2001:db8::/32"), "2001:db8:1::1", true},
		{"v6 outside", pp("2001:db8::/32"), "2001:db9::1", false},
		{"v4 not in v6", pp("2001:db8::/32"), "10.0.0.1", false},
		{"second prefix", pp("10.0.0.0/8", "172.16.0.0/12"), "172.20.0.1", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := newAllowList(tc.list).allows(netip.MustParseAddr(tc.addr)); got != tc.allow {
				t.Errorf("allows(%s) = %v with %v", tc.addr, got, tc.list)
			}
		})
	}
}
