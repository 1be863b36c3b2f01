package ha

import (
	"net/netip"
	"reflect"
	"strconv"
	"strings"
	"testing"
	"time"
)

func TestPositions(t *testing.T) {
	text := `ha:
  priority: 200
  virtual_addresses:
    wan: [203.0.113.10/24, 2001:db8::10/64]
    lan:
      - 10.0.0.1/24
base: &b
  x: 1
copy: *b
`
	got := Positions([]byte(text))
	for path, want := range map[string]Pos{
		"ha":                          {2, 3},
		"ha.priority":                 {2, 13},
		"ha.virtual_addresses":        {4, 5},
		"ha.virtual_addresses.wan":    {4, 10},
		"ha.virtual_addresses.wan[1]": {4, 28},
		"ha.virtual_addresses.lan[0]": {6, 9},
		"copy.x":                      {8, 6}, // through the alias, at the anchor's value
	} {
		if got[path] != want {
			t.Errorf("%s at %v, want %v", path, got[path], want)
		}
	}
	if len(Positions([]byte("ha: [unclosed"))) != 0 || len(Positions(nil)) != 0 {
		t.Error("positions in a file that is not YAML")
	}
	// A loop of aliases ends.
	Positions([]byte("a: &a\n  b: *a\n"))
}

func FuzzPositions(f *testing.F) {
	f.Add([]byte("ha:\n  vrid: 51\n"))
	f.Add([]byte("a: &a [*a]\n"))
	f.Add([]byte("- [1, {x: y}]\n"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for path, p := range Positions(data) {
			if path == "" || p.Line < 1 || p.Col < 1 {
				t.Fatalf("%q at %v", path, p)
			}
		}
	})
}

func TestFactsAndDigest(t *testing.T) {
	c := Config{Priority: 200, Peer: netip.MustParseAddr("10.255.0.2"),
		VirtualAddresses: VirtualAddresses{WAN: []netip.Prefix{netip.MustParsePrefix("203.0.113.10/24"), netip.MustParsePrefix("2001:db8::10/64")}}}
	d := c
	// The other node: its own priority and peer, the addresses in
	// another order, the defaults written out.
	d.Priority, d.Peer, d.VRID, d.VRRPVersion, d.AdvertInterval = 100, netip.MustParseAddr("10.255.0.1"), DefaultVRID, 2, time.Second
	d.VirtualAddresses.WAN = []netip.Prefix{c.VirtualAddresses.WAN[1], c.VirtualAddresses.WAN[0]}
	if !reflect.DeepEqual(c.Facts(), d.Facts()) {
		t.Errorf("facts differ:\n%v\n%v", c.Facts(), d.Facts())
	}
	if Digest(c.Facts()) != Digest(d.Facts()) {
		t.Error("digests of equal facts differ")
	}
	// The digest does not depend on the facts' order, and sees a change.
	fs := c.Facts()
	rev := append([]Fact(nil), fs...)
	for i, j := 0, len(rev)-1; i < j; i, j = i+1, j-1 {
		rev[i], rev[j] = rev[j], rev[i]
	}
	if Digest(rev) != Digest(fs) {
		t.Error("digest depends on order")
	}
	d.VRID = 52
	if Digest(d.Facts()) == Digest(c.Facts()) {
		t.Error("digest misses a changed vrid")
	}
}

func TestComparePair(t *testing.T) {
	base := func(prio int, peer string, facts ...Fact) Half {
		return Half{HA: Config{Priority: prio, Peer: netip.MustParseAddr(peer)}, Facts: facts, Pos: map[string]Pos{
			"ha": {1, 3}, "ha.peer": {3, 9}, "ha.priority": {2, 13}, "x": {5, 4}, "key": {6, 8}}}
	}
	half := func(file string, h Half) Half { h.File = file; return h }
	preempt := func(h Half) Half { h.HA.Preempt = true; return h }
	tests := []struct {
		name string
		a, b Half
		want []string // "file:line:col: path: message" of each mismatch
	}{
		{name: "agree",
			a: base(200, "10.0.0.2", Fact{Path: "x", Value: "1"}), b: base(100, "10.0.0.1", Fact{Path: "x", Value: "1"})},
		{name: "equal priorities, no preempt",
			a: base(100, "10.0.0.2"), b: base(100, "10.0.0.1")},
		{name: "differs",
			a: base(200, "10.0.0.2", Fact{Path: "x", Value: "1"}), b: base(100, "10.0.0.1", Fact{Path: "x", Value: "2"}),
			want: []string{"a.yaml:5:4: x: 1 here, 2 in b.yaml:5:4"}},
		{name: "digest shortened",
			a:    base(200, "10.0.0.2", Fact{Path: "x", Value: strings.Repeat("a", 32), Digest: true}),
			b:    base(100, "10.0.0.1", Fact{Path: "x", Value: strings.Repeat("b", 32), Digest: true}),
			want: []string{"a.yaml:5:4: x: differs from b.yaml:5:4 (digest aaaaaaaaaaaa here, bbbbbbbbbbbb there)"}},
		{name: "secret never shown",
			a: base(200, "10.0.0.2", Fact{Path: "key", Value: "d1", Secret: true}), b: base(100, "10.0.0.1", Fact{Path: "key", Value: "d2", Secret: true}),
			want: []string{"a.yaml:6:8: key: the content differs from b.yaml:6:8 (compared by SHA-256, not shown)"}},
		{name: "one side only, at the nearest field in the file",
			a: base(200, "10.0.0.2", Fact{Path: "ha.vrid", Value: "51"}), b: base(100, "10.0.0.1", Fact{Path: "x.y", Value: "1"}),
			want: []string{"a.yaml:1:3: ha.vrid: set here but not in b.yaml: both nodes of a pair need it",
				"b.yaml:5:4: x.y: set here but not in a.yaml: both nodes of a pair need it"}},
		{name: "refused on one side, not also a difference",
			a: base(200, "10.0.0.2", Fact{Path: "x", Value: "pg"}), b: base(100, "10.0.0.1", Fact{Path: "x", Value: "sqlite", Refuse: "no SQLite in a pair"}),
			want: []string{"b.yaml:5:4: x: no SQLite in a pair"}},
		{name: "same peer",
			a: base(200, "10.0.0.2"), b: base(100, "10.0.0.2"),
			want: []string{"a.yaml:3:9: ha.peer: 10.0.0.2 is also the peer in b.yaml:3:9: each node names the other's own address on the sync link"}},
		{name: "equal priorities, preempt",
			a: preempt(base(150, "10.0.0.2")), b: preempt(base(150, "10.0.0.1")),
			want: []string{"a.yaml:2:13: ha.priority: 150 is also the priority in b.yaml:2:13: with preempt on"}},
		{name: "not in the file at all",
			a: Half{Facts: []Fact{{Path: "z", Value: "1"}}}, b: Half{Facts: []Fact{{Path: "z", Value: "2"}}},
			want: []string{"a.yaml: z: 1 here, 2 in b.yaml"}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			got := ComparePair(half("a.yaml", tt.a), half("b.yaml", tt.b))
			if len(got) != len(tt.want) {
				t.Fatalf("%d mismatches, want %d: %+v", len(got), len(tt.want), got)
			}
			for i, m := range got {
				s := m.File
				if m.Line > 0 {
					s += ":" + strconv.Itoa(m.Line) + ":" + strconv.Itoa(m.Col)
				}
				s += ": " + m.Path + ": " + m.Msg
				if !strings.HasPrefix(s, tt.want[i]) {
					t.Errorf("mismatch %d:\n got %s\nwant %s…", i, s, tt.want[i])
				}
				if strings.Contains(s, "d1") || strings.Contains(s, "d2") {
					t.Errorf("a secret's digest shown: %s", s)
				}
			}
		})
	}
}
