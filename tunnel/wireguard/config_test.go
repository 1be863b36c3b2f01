package wireguard

import (
	"net/netip"
	"slices"
	"strings"
	"testing"
	"time"
)

var (
	testKeyA = mustKey("hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q=")
	testKeyB = Key{0, 9}.PublicKey()
	testKeyC = Key{0, 10}.PublicKey()
)

func mustKey(s string) Key {
	k, err := ParseKey(s)
	if err != nil {
		panic(err)
	}
	return k
}

func pfx(s ...string) []netip.Prefix {
	var out []netip.Prefix
	for _, x := range s {
		out = append(out, netip.MustParsePrefix(x))
	}
	return out
}

func validConfig() Config {
	return Config{
		Peers: []Peer{
			{Name: "ops-laptop", PublicKey: testKeyA, AllowedIPs: pfx("100.96.0.10/32"), PersistentKeepalive: 25 * time.Second, Email: "ops@corp.example", Groups: []string{"it-ops"}},
			{Name: "branch", PublicKey: testKeyB, AllowedIPs: pfx("100.96.0.11/32", "10.20.0.0/16")},
		},
	}
}

func TestConfigDefaults(t *testing.T) {
	var c Config
	c.SetDefaults()
	if c.Interface != "wg0" || c.ListenPort != 51820 || c.Address != netip.MustParsePrefix("100.96.0.1/12") || c.MTU != 1420 {
		t.Errorf("defaults: %+v", c)
	}
	if got := c.PrivateKeyPath("/var/lib/edgegw"); got != "/var/lib/edgegw/wireguard/wg0.key" {
		t.Errorf("PrivateKeyPath = %q", got)
	}
}

func TestConfigValidate(t *testing.T) {
	type report struct{ field, msg string } // msg: a substring
	tests := []struct {
		name   string
		edit   func(c *Config)
		report []report
	}{
		{"valid", func(c *Config) {}, nil},
		{"interface too long", func(c *Config) { c.Interface = "wireguard-remote0" }, []report{{"interface", "at most 15"}}},
		{"interface bad chars", func(c *Config) { c.Interface = "wg/0" }, []report{{"interface", "not an interface name"}}},
		{"interface dot", func(c *Config) { c.Interface = ".." }, []report{{"interface", "not an interface name"}}},
		{"port", func(c *Config) { c.ListenPort = 70000 }, []report{{"listen_port", "expected 1..65535"}}},
		{"negative port", func(c *Config) { c.ListenPort = -1 }, []report{{"listen_port", "expected 1..65535"}}},
		{"address /32", func(c *Config) { c.Address = netip.MustParsePrefix("100.96.0.1/32") }, []report{{"address", "single address"}}},
		{"address network", func(c *Config) { c.Address = netip.MustParsePrefix("100.96.0.0/12") }, []report{{"address", "network address; expected a host address such as 100.96.0.1/12"}}},
		{"address broadcast", func(c *Config) { c.Address = netip.MustParsePrefix("100.111.255.255/12") }, []report{{"address", "broadcast"}}},
		{"address /31 ok", func(c *Config) {
			c.Address = netip.MustParsePrefix("10.9.9.0/31")
		}, nil},
		{"address ipv6", func(c *Config) { c.Address = netip.MustParsePrefix("fd00:ed9e::1/64") }, nil},
		{"address ipv6 /128", func(c *Config) { c.Address = netip.MustParsePrefix("fd00:ed9e::1/128") }, []report{{"address", "single address"}}},
		{"mtu", func(c *Config) { c.MTU = 100 }, []report{{"mtu", "expected 576..9000"}}},
		{"mtu ipv6", func(c *Config) {
			c.MTU = 1000
			c.Peers[1].AllowedIPs = append(c.Peers[1].AllowedIPs, netip.MustParsePrefix("fd00::/64"))
		}, []report{{"mtu", "minimum for IPv6"}}},
		{"missing name", func(c *Config) { c.Peers[0].Name = "" }, []report{{"peers[0].name", "missing"}}},
		{"bad name", func(c *Config) { c.Peers[0].Name = "ops laptop" }, []report{{"peers[0].name", "not a peer name"}}},
		{"duplicate name", func(c *Config) { c.Peers[1].Name = "ops-laptop" }, []report{{"peers[1].name", "already the name of peers[0]"}}},
		{"missing key", func(c *Config) { c.Peers[1].PublicKey = Key{} }, []report{{"peers[1].public_key", "missing"}}},
		{"duplicate key", func(c *Config) { c.Peers[1].PublicKey = testKeyA }, []report{{"peers[1].public_key", "already the key of peers[0] (ops-laptop)"}}},
		{"low order key", func(c *Config) { c.Peers[1].PublicKey = Key{1} }, []report{{"peers[1].public_key", "small order"}}},
		{"no allowed ips", func(c *Config) { c.Peers[0].AllowedIPs = nil }, []report{{"peers[0].allowed_ips", "missing"}}},
		{"host bits", func(c *Config) { c.Peers[1].AllowedIPs[1] = netip.MustParsePrefix("10.20.1.0/16") }, []report{{"peers[1].allowed_ips[1]", "host bits set; did you mean 10.20.0.0/16, or 10.20.1.0/32"}}},
		{"overlap", func(c *Config) { c.Peers[1].AllowedIPs[0] = netip.MustParsePrefix("100.96.0.8/29") }, []report{{"peers[1].allowed_ips[0]", "overlaps 100.96.0.10/32 of peers[0] (ops-laptop)"}}},
		{"duplicate prefix", func(c *Config) { c.Peers[1].AllowedIPs[1] = netip.MustParsePrefix("100.96.0.11/32") }, []report{{"peers[1].allowed_ips[1]", "listed twice"}}},
		{"nested in one peer ok", func(c *Config) { c.Peers[1].AllowedIPs = pfx("10.20.0.0/16", "10.20.5.0/24") }, nil},
		{"contains gateway", func(c *Config) { c.Peers[1].AllowedIPs = pfx("100.96.0.0/24") }, []report{{"peers[1].allowed_ips[0]", "contains the gateway's own address 100.96.0.1"}}},
		{"default route", func(c *Config) { c.Peers[1].AllowedIPs = pfx("0.0.0.0/0") }, []report{{"peers[1].allowed_ips[0]", "gateway's own address"}}},
		{"4in6", func(c *Config) { c.Peers[1].AllowedIPs = pfx("::ffff:10.0.0.0/104") }, []report{{"peers[1].allowed_ips[0]", "IPv4-mapped"}}},
		{"keepalive fraction", func(c *Config) { c.Peers[0].PersistentKeepalive = 2500 * time.Millisecond }, []report{{"peers[0].persistent_keepalive", "whole number of seconds"}}},
		{"keepalive large", func(c *Config) { c.Peers[0].PersistentKeepalive = 24 * time.Hour }, []report{{"peers[0].persistent_keepalive", "1s..65535s"}}},
		{"keepalive negative", func(c *Config) { c.Peers[0].PersistentKeepalive = -time.Second }, []report{{"peers[0].persistent_keepalive", "1s..65535s"}}},
		{"email", func(c *Config) { c.Peers[0].Email = "ops" }, []report{{"peers[0].email", "not an email address"}}},
		{"groups", func(c *Config) { c.Peers[0].Groups = []string{"a", "", "a"} }, []report{{"peers[0].groups[1]", "empty"}, {"peers[0].groups[2]", "twice"}}},
		{"many at once", func(c *Config) {
			c.Interface = "this-is-far-too-long"
			c.Peers[0].Name = ""
			c.Peers[1].AllowedIPs = nil
		}, []report{{"interface", "at most 15"}, {"peers[0].name", "missing"}, {"peers[1].allowed_ips", "missing"}}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			c := validConfig()
			c.SetDefaults()
			tt.edit(&c)
			var got []report
			c.Validate(func(field, msg string) {
				if msg == "" || strings.ToLower(msg[:1]) != msg[:1] {
					t.Errorf("message %q should start in lower case", msg)
				}
				got = append(got, report{field, msg})
			})
			if len(got) != len(tt.report) {
				t.Fatalf("reports:\n got %q\nwant %q", got, tt.report)
			}
			for i := range got {
				if got[i].field != tt.report[i].field || !strings.Contains(got[i].msg, tt.report[i].msg) {
					t.Errorf("report %d: got %q: %q, want %q: …%q…", i, got[i].field, got[i].msg, tt.report[i].field, tt.report[i].msg)
				}
			}
		})
	}
}

func TestConfigCloneEqual(t *testing.T) {
	a := validConfig()
	b := a.Clone()
	if !a.Equal(b) {
		t.Fatal("clone differs")
	}
	b.Peers[1].AllowedIPs[0] = netip.MustParsePrefix("100.96.0.12/32")
	b.Peers[0].Groups[0] = "x"
	if a.Peers[1].AllowedIPs[0] != netip.MustParsePrefix("100.96.0.11/32") || a.Peers[0].Groups[0] != "it-ops" {
		t.Fatal("clone shares slices")
	}
	if a.Equal(b) {
		t.Fatal("Equal missed a change")
	}
}

func TestWantRoutes(t *testing.T) {
	c := validConfig()
	c.SetDefaults()
	c.Peers[0].AllowedIPs = append(c.Peers[0].AllowedIPs, netip.MustParsePrefix("fd00:1::/64"), netip.MustParsePrefix("100.64.0.0/16"))
	got := wantRoutes(&c)
	want := pfx("10.20.0.0/16", "100.64.0.0/16", "fd00:1::/64")
	if !slices.Equal(got, want) {
		t.Errorf("wantRoutes = %v, want %v", got, want)
	}
}
