package rules

import (
	"reflect"
	"strings"
	"testing"
)

// FuzzParse checks that Compile never panics, that every error has a
// position inside the source, and that whatever compiles prints to a
// canonical form that compiles back to the same tree and evaluates the same.
func FuzzParse(f *testing.F) {
	for _, seed := range []string{
		"tcp.dstport == 22",
		"ip.src in {10.0.0.0/8 192.168.1.1 2001:db8::/32 fe80::1..fe80::9} and not tcp.flags.ack",
		"tcp.flags & 0x12 == 0x12 or tcp.flags bitwise_and 2",
		`ip.proto in {tcp "udp" 1} xor ingress contains "w\x00\"g"`,
		`identity.groups contains "eng" && identity.email != "a@b" || !(ip.ttl lt 3)`,
		"ip.src in $bad_ips and tcp.dstport in $admin_ports or identity.groups in $blocked_groups",
		"((tcp.flags.syn)) ^^ tcp.flags.fin",
		"tcp.dstport == abc",
		"ip.src == 10.0.0.1/8",
		"tcp.dstport in {90..80}",
		"\"unterminated",
		"ip.len ge 0xffff and ip.hdr_len le 15",
		`device.posture.os_version >= "6.1.0-27-amd64" and not device.posture.disk_encrypted`,
		`device.posture.client_version in {"1.2" "1.10"} or device.posture.os == "linux"`,
		`device.posture.os_version < "x.1"`,
	} {
		f.Add(seed)
	}
	s := FirewallSchema()
	lists := testLists(f)
	packets := []*Record{packet(f, tcpSYN), packet(f, tcpSYNACK), packet(f, udpDNS), packet(f, icmp6)}
	f.Fuzz(func(t *testing.T, src string) {
		p, err := Compile(src, s, lists)
		if err != nil {
			el, ok := err.(ErrorList)
			if !ok || len(el) == 0 {
				t.Fatalf("Compile(%q): error %T %v", src, err, err)
			}
			lines := strings.Count(src, "\n") + 1
			for _, e := range el {
				if e.Line < 1 || e.Line > lines || e.Col < 1 || e.Msg == "" {
					t.Fatalf("Compile(%q): bad error %+v", src, e)
				}
				_ = e.Error()
			}
			return
		}
		canon := p.String()
		q, err := Compile(canon, s, lists)
		if err != nil {
			t.Fatalf("Compile(%q) ok, canonical %q fails: %v", src, canon, err)
		}
		if again := q.String(); again != canon {
			t.Fatalf("canonical form not stable: %q → %q", canon, again)
		}
		for _, r := range packets {
			if p.Eval(r) != q.Eval(r) {
				t.Fatalf("%q and %q disagree on %s", src, canon, r)
			}
		}
		stripPos(p.Expr)
		stripPos(q.Expr)
		if !reflect.DeepEqual(p.Expr, q.Expr) {
			t.Fatalf("%q and its canonical form %q compile to different trees", src, canon)
		}
	})
}
