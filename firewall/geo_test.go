package firewall

import (
	"errors"
	"io"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/firewall/geo/geotest"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"go.yaml.in/yaml/v3"
)

func geoDB(t testing.TB, entries []geotest.Entry) *geo.DB {
	t.Helper()
	b, err := geotest.Build(entries)
	if err != nil {
		t.Fatal(err)
	}
	db, err := geo.Parse(b, b)
	if err != nil {
		t.Fatal(err)
	}
	return db
}

func gp(s string) netip.Prefix { return netip.MustParsePrefix(s) }

var geoTestEntries = []geotest.Entry{
	{Prefix: gp("192.0.2.0/25"), Country: "KP", ASN: 64512},
	{Prefix: gp("192.0.2.128/25"), Country: "KP", ASN: 64513},
	{Prefix: gp("198.51.100.0/24"), Country: "IR", ASN: 64512},
	{Prefix: gp("203.0.113.0/24"), Country: "GB"},
	{Prefix: gp("2001:db8:1::/48"), Country: "KP", ASN: 64513},
	{Prefix: gp("2001:db8:2::/48"), ASN: 64512},
}

// TestGeoIntervals checks what each condition's sets hold: the networks
// whose country or AS satisfies it, merged, and nothing for addresses the
// database does not know.
func TestGeoIntervals(t *testing.T) {
	db := geoDB(t, geoTestEntries)
	tests := []struct {
		expr   string
		v4, v6 []string
	}{
		{`ip.src.country == "KP"`, []string{"192.0.2.0-192.0.2.255"}, []string{"2001:db8:1::-2001:db8:1:ffff:ffff:ffff:ffff:ffff"}},
		{`ip.src.country in {"IR" "GB"}`, []string{"198.51.100.0-198.51.100.255", "203.0.113.0-203.0.113.255"}, nil},
		{`ip.dst.country != "KP"`, []string{"198.51.100.0-198.51.100.255", "203.0.113.0-203.0.113.255"}, nil},
		{`ip.src.country == "kp"`, nil, nil},
		{`ip.src.country contains "K"`, []string{"192.0.2.0-192.0.2.255"}, []string{"2001:db8:1::-2001:db8:1:ffff:ffff:ffff:ffff:ffff"}},
		{"ip.src.asnum == 64512", []string{"192.0.2.0-192.0.2.127", "198.51.100.0-198.51.100.255"}, []string{"2001:db8:2::-2001:db8:2:ffff:ffff:ffff:ffff:ffff"}},
		{"ip.dst.asnum in {64513..65000}", []string{"192.0.2.128-192.0.2.255"}, []string{"2001:db8:1::-2001:db8:1:ffff:ffff:ffff:ffff:ffff"}},
		{"ip.src.asnum > 70000", nil, nil},
	}
	for _, tt := range tests {
		c := Config{GeoIP: &GeoIP{Country: "c.mmdb", ASN: "a.mmdb"},
			Rules: []Rule{{ID: "g", Expression: tt.expr, Action: "block"}}}
		rs, err := CompileRules(&c)
		if err != nil {
			t.Errorf("%s: %v", tt.expr, err)
			continue
		}
		var got4, got6 []string
		n := 0
		for i := range rs.sets {
			s := &rs.sets[i]
			if s.Geo == nil {
				continue
			}
			n++
			for _, iv := range geoIntervals(s, db) {
				lo, _ := netip.AddrFromSlice(iv.lo)
				hi, _ := netip.AddrFromSlice(iv.hi)
				if s.V6 {
					got6 = append(got6, lo.String()+"-"+hi.String())
				} else {
					got4 = append(got4, lo.String()+"-"+hi.String())
				}
			}
		}
		if n != 2 {
			t.Errorf("%s: %d geo sets, want 2 (one per family)", tt.expr, n)
		}
		if !slices.Equal(got4, tt.v4) || !slices.Equal(got6, tt.v6) {
			t.Errorf("%s:\n v4 %v, want %v\n v6 %v, want %v", tt.expr, got4, tt.v4, got6, tt.v6)
		}
	}
	// Without a snapshot the sets are empty.
	c := Config{GeoIP: &GeoIP{Country: "c.mmdb"}, Rules: []Rule{{ID: "g", Expression: `ip.src.country == "KP"`, Action: "block"}}}
	rs, err := CompileRules(&c)
	if err != nil {
		t.Fatal(err)
	}
	for i := range rs.sets {
		if got := geoIntervals(&rs.sets[i], nil); len(got) != 0 {
			t.Errorf("set %s without a database holds %d intervals", rs.sets[i].Name, len(got))
		}
	}
}

// TestGeoRefusedWithoutDatabase checks that CompileRules and Validate
// agree in refusing geo fields whose database is not configured, and name
// the setting to add.
func TestGeoRefusedWithoutDatabase(t *testing.T) {
	tests := []struct {
		geoip *GeoIP
		expr  string
		want  string // "" compiles
	}{
		{nil, `ip.src.country == "KP"`, "ip.src.country needs a country database: set firewall.geoip.country"},
		{nil, "ip.dst.asnum == 1", "ip.dst.asnum needs an ASN database: set firewall.geoip.asn"},
		{&GeoIP{ASN: "a.mmdb"}, `not ip.dst.country == "KP"`, "set firewall.geoip.country"},
		{&GeoIP{Country: "c.mmdb"}, "ip.src.asnum == 1 xor tcp.dstport == 22", "set firewall.geoip.asn"},
		{&GeoIP{Country: "c.mmdb"}, `ip.src.country == "KP"`, ""},
		{&GeoIP{ASN: "a.mmdb"}, "ip.src.asnum == 1", ""},
	}
	for _, tt := range tests {
		c := Config{GeoIP: tt.geoip, Rules: []Rule{{ID: "g", Expression: tt.expr, Action: "block"}}}
		_, err := CompileRules(&c)
		var msgs []string
		c.Validate(func(f, m string) { msgs = append(msgs, f+": "+m) })
		switch {
		case tt.want == "" && (err != nil || len(msgs) > 0):
			t.Errorf("%s: refused: %v %v", tt.expr, err, msgs)
		case tt.want != "" && (err == nil || !strings.Contains(err.Error(), tt.want)):
			t.Errorf("%s: CompileRules error %v, want %q", tt.expr, err, tt.want)
		case tt.want != "" && (len(msgs) != 1 || !strings.Contains(msgs[0], tt.want)):
			t.Errorf("%s: Validate %v, want %q", tt.expr, msgs, tt.want)
		}
	}
}

func TestGeoConfigEqualClone(t *testing.T) {
	a := &Config{GeoIP: &GeoIP{Country: "/a.mmdb"}}
	b := a.Clone()
	if !a.Equal(b) {
		t.Error("a clone differs")
	}
	b.GeoIP.Country = "/b.mmdb"
	if a.GeoIP.Country != "/a.mmdb" {
		t.Error("Clone shares GeoIP")
	}
	if a.Equal(b) {
		t.Error("configs with other databases are Equal")
	}
	if (&Config{}).Equal(a) {
		t.Error("a config without geoip equals one with")
	}
}

// geoRules blocks SSH from KP and IR, web to AS 64999, and counts both.
const geoRules = `
geoip:
  country: %s
  asn: %s
rules:
  - id: no-ssh-from-kp
    expression: ip.src.country in {"KP" "IR"} and tcp.dstport == 22
    action: block
  - id: no-web-to-as64999
    expression: ip.dst.asnum == 64999 and tcp.dstport == 80
    action: block
`

// TestKernelGeo runs real traffic through geo rules in a namespace: a
// country rule blocks and counts, an ASN rule matches, and a database
// swapped on disk changes the verdicts through the Watcher and
// UpdateGeo, without an Apply (the rules keep their handles and
// counters).
func TestKernelGeo(t *testing.T) {
	n := newTestNet(t)
	path := filepath.Join(t.TempDir(), "geo.mmdb")
	entries := func(clientCountry string) []geotest.Entry {
		return []geotest.Entry{
			{Prefix: gp("10.1.0.0/24"), Country: clientCountry, ASN: 64512},
			{Prefix: gp("fd01::/64"), Country: clientCountry, ASN: 64512},
			{Prefix: gp("10.2.0.0/24"), Country: "DE", ASN: 64999},
			{Prefix: gp("fd02::/64"), Country: "DE", ASN: 64999},
		}
	}
	if err := geotest.WriteFile(path, entries("KP")); err != nil {
		t.Fatal(err)
	}
	log := slog.New(slog.NewTextHandler(io.Discard, nil))
	w, err := geo.NewWatcher(geo.Files{Country: path, ASN: path}, 20*time.Millisecond, log,
		func(db *geo.DB) error { return n.r.Do(func() error { return n.tbl.UpdateGeo(db) }) })
	if err != nil {
		t.Fatal(err)
	}
	if err := n.tbl.UpdateGeo(w.Current()); err != nil { // before Apply: kept for it
		t.Fatal(err)
	}
	var c Config
	if err := yaml.Unmarshal([]byte(strings.ReplaceAll(geoRules, "%s", path)), &c); err != nil {
		t.Fatal(err)
	}
	rs, err := CompileRules(&c)
	if err != nil {
		t.Fatal(err)
	}
	p := Compile(Spec{Rules: rs})
	if err := n.r.Do(func() error { return n.tbl.Apply(p) }); err != nil {
		t.Fatal(err)
	}
	n.nftList(t)
	for _, host := range []string{"10.2.0.2", "[fd02::2]"} {
		for _, port := range []string{"22", "80", "443"} {
			l, err := n.b.Listen("tcp", host+":"+port)
			if err != nil {
				t.Fatal(err)
			}
			defer l.Close()
			go func() { // ends when the listener closes
				for {
					c, err := l.Accept()
					if err != nil {
						return
					}
					c.Close()
				}
			}()
		}
	}
	check := func(what string, want bool, addrs ...string) {
		t.Helper()
		for _, a := range addrs {
			if got := dialOK(n, a); got != want {
				t.Errorf("%s: tcp to %s allowed=%v, want %v", what, a, got, want)
			}
		}
	}
	check("client in KP, ssh", false, "10.2.0.2:22", "[fd02::2]:22")
	check("server in AS64999, web", false, "10.2.0.2:80", "[fd02::2]:80")
	check("other port", true, "10.2.0.2:443", "[fd02::2]:443")
	cs := n.counters(t)
	if c := cs["no-ssh-from-kp"]; c.Packets == 0 {
		t.Errorf("counter no-ssh-from-kp = %+v, want > 0", c)
	}
	if c := cs["no-web-to-as64999"]; c.Packets == 0 {
		t.Errorf("counter no-web-to-as64999 = %+v, want > 0", c)
	}
	before := ruleHandles(t, n, p)
	counted := cs["no-ssh-from-kp"].Packets

	// The client's network moves to GB in a new database file.
	ctx := t.Context()
	done := make(chan struct{})
	go func() { defer close(done); w.Run(ctx) }()
	t.Cleanup(func() { <-done })
	if err := geotest.WriteFile(path, entries("GB")); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 30*time.Second, "ssh from the client is allowed after the swap", func() error {
		if !dialOK(n, "10.2.0.2:22") {
			return errors.New("still blocked")
		}
		return nil
	})
	check("client in GB, ssh", true, "10.2.0.2:22", "[fd02::2]:22")
	check("server still in AS64999, web", false, "10.2.0.2:80")
	if after := ruleHandles(t, n, p); !slices.Equal(before, after) {
		t.Errorf("rule handles changed by the database swap: %v → %v", before, after)
	}
	if got := n.counters(t)["no-ssh-from-kp"].Packets; got < counted {
		t.Errorf("counter no-ssh-from-kp went from %d to %d: the swap reset it", counted, got)
	}
	// A later Apply (a reload that changes rules) fills the new table's
	// sets from the snapshot the watcher handed over last.
	if err := n.r.Do(func() error { return n.tbl.Apply(p) }); err != nil {
		t.Fatal(err)
	}
	check("re-applied: client in GB, ssh", true, "10.2.0.2:22")
	check("re-applied: server in AS64999, web", false, "10.2.0.2:80")
	sizes := n.tbl.GeoSetSizes()
	if len(sizes) != 4 {
		t.Errorf("geo set sizes %v, want 4 sets", sizes)
	}
	if sizes["g4_0"] != 0 || sizes["g6_0"] != 0 || sizes["g4_1"] != 1 || sizes["g6_1"] != 1 {
		t.Errorf("geo set sizes %v after the swap, want g?_0 empty and g?_1 one interval", sizes)
	}
	n.nftList(t)

	// Without a snapshot the sets are empty: the geo fields are absent.
	if err := n.r.Do(func() error { return n.tbl.UpdateGeo(nil) }); err != nil {
		t.Fatal(err)
	}
	check("no database", true, "10.2.0.2:80", "[fd02::2]:80")
}

func TestGeoIPConfigChecks(t *testing.T) {
	dir := t.TempDir()
	countries := filepath.Join(dir, "country.mmdb")
	asns := filepath.Join(dir, "asn.mmdb")
	text := filepath.Join(dir, "list.txt")
	must(t, geotest.WriteFile(countries, []geotest.Entry{{Prefix: gp("192.0.2.0/24"), Country: "KP"}}))
	must(t, geotest.WriteFile(asns, []geotest.Entry{{Prefix: gp("192.0.2.0/24"), ASN: 64512}}))
	must(t, os.WriteFile(text, []byte("192.0.2.0/24\n"), 0o600))
	tests := []struct {
		g    GeoIP
		want []string
	}{
		{GeoIP{}, []string{": names no database"}},
		{GeoIP{Country: countries, ASN: asns}, nil},
		{GeoIP{Country: asns}, []string{"country: " + asns + " (edgegw-test) has no country.iso_code"}},
		{GeoIP{ASN: countries}, []string{"asn: " + countries + " (edgegw-test) has no autonomous_system_number"}},
		{GeoIP{Country: text}, []string{"country: " + text + " is not a MaxMind DB (mmdb) file"}},
		{GeoIP{Country: filepath.Join(dir, "missing.mmdb")}, nil}, // the file check's
	}
	for _, tt := range tests {
		var got []string
		report := func(f, m string) { got = append(got, f+": "+m) }
		tt.g.Validate(report)
		tt.g.CheckFiles(report)
		ok := len(got) == len(tt.want)
		for i := 0; ok && i < len(got); i++ {
			ok = strings.HasPrefix(got[i], tt.want[i])
		}
		if !ok {
			t.Errorf("%+v: %q, want %q", tt.g, got, tt.want)
		}
	}
}
