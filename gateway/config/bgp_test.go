package config

import (
	"os"
	"strings"
	"testing"
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
