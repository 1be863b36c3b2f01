package wireguard

import (
	"bytes"
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestWriteClientConfigGolden(t *testing.T) {
	gw := Key{7}.PublicKey()
	tests := []struct {
		name string
		c    ClientConfig
	}{
		{"full", ClientConfig{
			Name: "ops-laptop", PrivateKey: Key{8},
			Address: pfx("100.96.0.10/32"), DNS: []netip.Addr{netip.MustParseAddr("100.96.0.1")}, MTU: 1420,
			GatewayPublicKey: gw, PresharedKey: Key{1, 2, 3}, Endpoint: "vpn.corp.example:51820",
			AllowedIPs: pfx("100.96.0.0/12", "10.0.0.0/24"), PersistentKeepalive: 25 * time.Second,
		}},
		{"placeholder", ClientConfig{
			Name: "branch", Address: pfx("100.96.0.11/32", "fd00:1::11/128"),
			GatewayPublicKey: gw, Endpoint: "[2001:db8::1]:51820", AllowedIPs: pfx("100.96.0.0/12"),
		}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var buf bytes.Buffer
			if err := WriteClientConfig(&buf, tt.c); err != nil {
				t.Fatal(err)
			}
			golden := filepath.Join("testdata", "client-"+tt.name+".conf")
			if *update {
				os.WriteFile(golden, buf.Bytes(), 0o644)
			}
			want, err := os.ReadFile(golden)
			if err != nil {
				t.Fatal(err)
			}
			if buf.String() != string(want) {
				t.Errorf("output differs from %s (go test -update rewrites it):\n%s", golden, buf.String())
			}
		})
	}
}

func TestWriteClientConfigErrors(t *testing.T) {
	err := WriteClientConfig(&bytes.Buffer{}, ClientConfig{Endpoint: "a\nPostUp = rm -rf /:1"})
	for _, want := range []string{"no address", "no gateway public key", "not host:port", "no allowed IPs"} {
		if err == nil || !strings.Contains(err.Error(), want) {
			t.Errorf("error %v lacks %q", err, want)
		}
	}
}

func TestClientConfigFor(t *testing.T) {
	dir := t.TempDir()
	psk := filepath.Join(dir, "psk")
	os.WriteFile(psk, []byte(Key{5}.String()+"\n"), 0o600)
	c := validConfig()
	c.Peers[1].PresharedKeyFile = psk
	cc, err := c.ClientConfigFor("branch")
	if err != nil {
		t.Fatal(err)
	}
	if len(cc.Address) != 1 || cc.Address[0] != netip.MustParsePrefix("100.96.0.11/32") ||
		cc.AllowedIPs[0] != netip.MustParsePrefix("100.96.0.0/12") || cc.PresharedKey != (Key{5}) || cc.MTU != 1420 {
		t.Errorf("ClientConfigFor = %+v", cc)
	}
	if _, err := c.ClientConfigFor("nobody"); err == nil {
		t.Error("unknown peer accepted")
	}
}
