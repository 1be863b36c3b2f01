package dns

import (
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"runtime"
	"strings"
	"testing"
	"time"

	mdns "github.com/miekg/dns"

	"github.com/edgegw/edgegw/firewall/rules"
)

func TestParseList(t *testing.T) {
	src := `# comment
! adblock comment
[Adblock Plus 2.0]
plain.example
Upper.Example.   # trailing comment
*.wild.example
.dot.example
0.0.0.0 hosts1.example hosts2.example
127.0.0.1	localhost
::1 ip6-localhost
0.0.0.0	tab.example
||adblock.example^
||opts.example^$third-party
@@||exception.example^
||path.example/ads^
bad_label-.ok_too
not a domain
-bad..example
x` + strings.Repeat("a", 64) + `.example
`
	set, bad, err := parseList(strings.NewReader(src))
	if err != nil {
		t.Fatal(err)
	}
	want := []string{"plain.example", "upper.example", "wild.example", "dot.example", "hosts1.example",
		"hosts2.example", "tab.example", "adblock.example", "opts.example", "bad_label-.ok_too"}
	for _, w := range want {
		if !set.has(w) {
			t.Errorf("%s missing", w)
		}
	}
	for _, n := range []string{"localhost", "ip6-localhost", "exception.example", "path.example", "not", "example"} {
		if set.has(n) {
			t.Errorf("%s present", n)
		}
	}
	if set.Len() != len(want) {
		t.Errorf("%d entries, want %d", set.Len(), len(want))
	}
	if bad != 4 {
		t.Errorf("%d bad lines, want 4", bad)
	}
}

func TestDomainSetGrowth(t *testing.T) {
	s := newDomainSet(0)
	for i := range 5000 {
		if !s.add(fmt.Appendf(nil, "d%d.example", i)) {
			t.Fatal("duplicate reported")
		}
	}
	if s.add([]byte("d42.example")) {
		t.Error("re-adding reported new")
	}
	for i := range 5000 {
		if !s.has(fmt.Sprintf("d%d.example", i)) {
			t.Fatalf("d%d missing", i)
		}
	}
	if s.has("d5000.example") || s.Len() != 5000 {
		t.Error("wrong contents")
	}
}

// TestListMemory loads a million names and measures the heap they take.
// Goal: well under 200 MB.
func TestListMemory(t *testing.T) {
	if testing.Short() {
		t.Skip("short")
	}
	file := filepath.Join(t.TempDir(), "big.txt")
	writeBigList(t, file, 1_000_000)
	runtime.GC()
	var before, after runtime.MemStats
	runtime.ReadMemStats(&before)
	l := newDomainList("big")
	l.file = file
	start := time.Now()
	n, _, err := l.load(time.Now())
	took := time.Since(start)
	if err != nil || n != 1_000_000 {
		t.Fatalf("load: %d %v", n, err)
	}
	runtime.GC()
	runtime.ReadMemStats(&after)
	mb := float64(after.HeapAlloc-before.HeapAlloc) / (1 << 20)
	t.Logf("1M names: %.1f MB heap, loaded in %v", mb, took.Round(time.Millisecond))
	if mb > 100 {
		t.Errorf("1M names take %.1f MB", mb)
	}
	if !l.Contains(rules.StringValue("host-999999.ads-9.example")) {
		t.Error("last name missing")
	}
	runtime.KeepAlive(l)
}

func writeBigList(t testing.TB, file string, n int) {
	var b strings.Builder
	for i := range n {
		fmt.Fprintf(&b, "0.0.0.0 host-%d.ads-%d.example\n", i, i%10)
	}
	if err := os.WriteFile(file, []byte(b.String()), 0o644); err != nil {
		t.Fatal(err)
	}
}

func TestListRefreshAndReload(t *testing.T) {
	up := newTestUpstream(t)
	file := filepath.Join(t.TempDir(), "l.txt")
	os.WriteFile(file, []byte("a.test\n"), 0o644)
	cfg := Config{
		Listen:    []netip.AddrPort{netip.MustParseAddrPort("127.0.0.1:0")},
		Upstreams: []string{up.addr},
		Lists:     map[string]List{"l": {File: file, Refresh: 50 * time.Millisecond}},
		Policies:  []Policy{{ID: "l", Expression: "dns.fqdn in $l", Action: "block"}},
	}
	s, addr := startServer(t, cfg, Options{})
	blocked := func(name string) bool {
		r := ask(t, addr, "udp", name, mdns.TypeA)
		return len(r.Answer) == 1 && r.Answer[0].(*mdns.A).A.IsUnspecified()
	}
	if !blocked("a.test") {
		t.Fatal("a.test not blocked")
	}
	// Refresh picks up a new file.
	os.WriteFile(file+".new", []byte("short.test\n"), 0o644)
	os.Rename(file+".new", file)
	eventually(t, 5*time.Second, "refresh", func() bool { return blocked("short.test") && !blocked("a.test") })
	// An unreadable file keeps the last good copy and says so.
	os.Remove(file)
	eventually(t, 5*time.Second, "load error", func() bool {
		st := s.Status()
		return len(st.Lists) == 1 && st.Lists[0].Error != ""
	})
	if !blocked("short.test") {
		t.Error("last good copy dropped")
	}
	// Reload with a new policy: published at once, queries keep working.
	cfg.Policies = append(cfg.Policies, Policy{ID: "b", Expression: `dns.fqdn == "bad-ip.test"`, Action: "block"})
	if err := s.Set(cfg); err != nil {
		t.Fatal(err)
	}
	if !blocked("bad-ip.test") || !blocked("short.test") {
		t.Error("after Set: policies wrong")
	}
	// A bad config changes nothing.
	bad := cfg
	bad.Policies = []Policy{{ID: "x", Expression: "dns.nope == 1", Action: "block"}}
	if err := s.Set(bad); err == nil || !strings.Contains(err.Error(), `policy "x"`) {
		t.Errorf("bad Set: %v", err)
	}
	if !blocked("bad-ip.test") {
		t.Error("bad Set changed policies")
	}
}

// BenchmarkDomainSetHas looks names up in a set of a million: "absent"
// as most queries are (100,000 names in no list, so that the table is
// not in the CPU's cache), "present" as a blocked name is.
func BenchmarkDomainSetHas(b *testing.B) {
	s := newDomainSet(1_000_000)
	for i := range 1_000_000 {
		s.add(fmt.Appendf(nil, "host-%d.ads-%d.example", i, i%10))
	}
	for _, bc := range []struct {
		name   string
		format string
		want   bool
	}{{"absent", "n%d.perf.test", false}, {"present", "host-%d.ads-7.example", true}} {
		b.Run(bc.name, func(b *testing.B) {
			names := make([]string, 100_000)
			for i := range names {
				j := i
				if bc.want {
					j = i*10 + 7
				}
				names[i] = fmt.Sprintf(bc.format, j)
			}
			i := 0
			for b.Loop() {
				if s.has(names[i%len(names)]) != bc.want {
					b.Fatal(names[i%len(names)])
				}
				i++
			}
		})
	}
}
