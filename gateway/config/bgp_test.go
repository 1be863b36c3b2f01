package config

import (
	"os"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/tunnel/ipsec"
)

// TestBGPExample validates the commented bgp section of the example: it
// is uncommented in place (its files not checked) and must load, with
// each neighbor's tunnel naming a tunnel of the example.
func TestBGPExample(t *testing.T) {
	data, err := os.ReadFile(exampleFile)
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(string(data), "\n")
	in := false
	for i, l := range lines {
		if l == "#bgp:" {
			in = true
		}
		if in && strings.HasPrefix(l, "#") {
			lines[i] = l[1:]
		} else if in {
			in = false
		}
	}
	cfg, err := Parse(exampleFile, []byte(strings.Join(lines, "\n")), Options{SkipFiles: true})
	if err != nil {
		t.Fatalf("the example's bgp section must validate:\n%v", err)
	}
	b := cfg.BGP
	if b == nil || b.ASN != 65000 || len(b.Neighbors) != 3 || b.Neighbors[0].Tunnel != "branch-nyc" ||
		b.Neighbors[1].Export[0].Communities[0] != "64500:80" || b.Neighbors[2].Export[0].Prepend != 2 ||
		b.Neighbors[2].Import.MaxPrefixes != 1000 {
		t.Fatalf("bgp section read as %+v", b)
	}

	bad := strings.Replace(strings.Join(lines, "\n"), "tunnel: branch-nyc", "tunnel: branch-xyz", 1)
	_, err = Parse(exampleFile, []byte(bad), Options{SkipFiles: true})
	if err == nil || !strings.Contains(err.Error(), `bgp.neighbors[0].tunnel: no GRE or IPsec tunnel is named "branch-xyz"`) {
		t.Errorf("a neighbor on a missing tunnel: %v", err)
	}
}

// TestBGPOverIPsecCheck: BGP over an IPsec tunnel loads. With userspace
// ESP (this machine's backend unless it has esp4 and xfrm_interface) a
// second IPsec tunnel carrying BGP is refused, and so is an import range
// that reaches into another IPsec tunnel's routed prefixes; with kernel
// ESP both are fine.
func TestBGPOverIPsecCheck(t *testing.T) {
	const base = `tunnels:
  ipsec:
    - name: fra
      local: 203.0.113.10
      remote: 198.51.100.20
      local_id: lon.corp.example
      remote_id: fra.corp.example
      psk_file: /etc/edgegw/fra.psk
      address: 10.200.3.0/31
    - name: ams
      local: 203.0.113.10
      remote: 198.51.100.30
      local_id: lon.corp.example
      remote_id: ams.corp.example
      psk_file: /etc/edgegw/ams.psk
      address: 10.200.4.0/31
routes:
  - prefix: 10.30.0.0/16
    via: ams
bgp:
  asn: 65000
  router_id: 203.0.113.10
  neighbors:
    - name: fra
      address: 10.200.3.1
      remote_as: 65020
      tunnel: fra
      import:
        prefixes: [{prefix: 10.20.0.0/16, max_length: 24}]
`
	if _, err := Parse("bgp-ipsec.yaml", []byte(base), Options{SkipFiles: true}); err != nil {
		t.Fatalf("BGP over one IPsec tunnel must load: %v", err)
	}
	libipsec := ipsec.DefaultBackend() == ipsec.BackendLibipsec
	for _, c := range []struct{ name, yaml, want string }{
		{"two wide tunnels", base + `    - name: ams
      address: 10.200.4.1
      remote_as: 65030
      tunnel: ams
      import:
        prefixes: [{prefix: 10.50.0.0/16, max_length: 24}]
`, `tunnels.ipsec[1].name: IPsec tunnels "fra" and "ams" both carry BGP`},
		{"import range inside another tunnel's prefix", strings.Replace(base, "prefix: 10.20.0.0/16, max_length: 24",
			"prefix: 10.0.0.0/8, max_length: 24", 1),
			`bgp.neighbors[0].import.prefixes[0]: 10.0.0.0/8 (up to /24) may be routed through IPsec tunnel "fra"`},
	} {
		_, err := Parse("bgp-ipsec.yaml", []byte(c.yaml), Options{SkipFiles: true})
		switch {
		case libipsec && (err == nil || !strings.Contains(err.Error(), c.want)):
			t.Errorf("%s: got %v, want %q", c.name, err, c.want)
		case !libipsec && err != nil:
			t.Errorf("%s: kernel ESP must accept it: %v", c.name, err)
		}
	}
}
