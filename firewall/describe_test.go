package firewall

import (
	"strings"
	"testing"

	"github.com/edgegw/edgegw/firewall/rules"
)

func TestParsePacket(t *testing.T) {
	for _, tc := range []struct {
		desc string
		want string // the completed record, or "error: substring"
	}{
		{`ip.src == 10.0.0.9 and tcp.dstport == 22`,
			`ip.src == 10.0.0.9 and ip.proto == 6 and tcp.dstport == 22 and tcp.flags == 0 and not tcp.flags.fin and not tcp.flags.syn and not tcp.flags.reset and not tcp.flags.push and not tcp.flags.ack and not tcp.flags.urg and not tcp.flags.ecn and not tcp.flags.cwr`},
		{`tcp.flags.syn and not tcp.flags.ack and tcp.dstport == 443`,
			`ip.proto == 6 and tcp.dstport == 443 and tcp.flags == 2 and not tcp.flags.fin and tcp.flags.syn and not tcp.flags.reset and not tcp.flags.push and not tcp.flags.ack and not tcp.flags.urg and not tcp.flags.ecn and not tcp.flags.cwr`},
		{`tcp.flags == 0x12`,
			`ip.proto == 6 and tcp.flags == 18 and not tcp.flags.fin and tcp.flags.syn and not tcp.flags.reset and not tcp.flags.push and tcp.flags.ack and not tcp.flags.urg and not tcp.flags.ecn and not tcp.flags.cwr`},
		{`ip.dst == 2001:db8::1 and icmp.type == 128`, `ip.dst == 2001:db8::1 and ip.proto == 58 and icmp.type == 128`},
		{`icmp.type == 8 and ingress == "wan"`, `ip.proto == 1 and icmp.type == 8 and ingress == "wan"`},
		{`udp.dstport == 53 and ip.proto == udp and identity.groups contains "eng" and identity.groups contains "ops"`,
			`ip.proto == 17 and udp.dstport == 53 and identity.groups contains "eng" and identity.groups contains "ops"`},
		{`ip.proto == 47 and ip.ttl == 3`, `ip.proto == 47 and ip.ttl == 3`},
		{`ip.src == 10.0.0.9 or tcp.dstport == 22`, `error: or joins conditions`},
		{`ip.src == 10.0.0.0/24`, `error: one address, not a network`},
		{`tcp.dstport == 22 and tcp.dstport == 23`, `error: tcp.dstport is given twice`},
		{`tcp.dstport == 22 and udp.dstport == 53`, `error: cannot be in one packet`},
		{`tcp.dstport == 22 and ip.proto == udp`, `error: ip.proto == 17, but tcp.dstport needs 6`},
		{`ip.src == 10.0.0.1 and ip.dst == ::1`, `error: different families`},
		{`tcp.flags == 2 and tcp.flags.ack`, `error: tcp.flags.ack contradicts`},
		{`tcp.dstport > 22`, `error: field == value conditions`},
		{`tcp.dstport == abc`, `error: expected port number`},
		{`ip.hdr_len == 6 and ip.src == ::1`, `error: IPv4 field`},
		{`tcp.flags & 2 == 2`, `error: field == value`},
	} {
		rec, err := ParsePacket(tc.desc)
		got := ""
		if err != nil {
			got = "error: " + err.Error()
		} else {
			got = rec.String()
		}
		if msg, isErr := strings.CutPrefix(tc.want, "error: "); isErr {
			if err == nil || !strings.Contains(err.Error(), msg) {
				t.Errorf("ParsePacket(%q) = %s, want an error with %q", tc.desc, got, msg)
			}
			continue
		}
		if got != tc.want {
			t.Errorf("ParsePacket(%q)\n got %s\nwant %s", tc.desc, got, tc.want)
		}
	}
}

// FuzzParsePacket: any input gives a record or an error, never a panic,
// and a record's description parses back to the same record.
func FuzzParsePacket(f *testing.F) {
	for _, s := range []string{`ip.src == 10.0.0.9 and tcp.dstport == 22`, `tcp.flags.syn and not tcp.flags.ack`,
		`identity.groups contains "x" and icmp.type == 3`, `ip.dst == ::1 and udp.srcport == 5`, `(ip.ttl == 1)`} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		rec, err := ParsePacket(s)
		if err != nil {
			return
		}
		again, err := ParsePacket(rec.String())
		if err != nil {
			t.Fatalf("description %q of %q does not parse: %v", rec, s, err)
		}
		if again.String() != rec.String() {
			t.Fatalf("round trip of %q: %q, then %q", s, rec, again)
		}
	})
}

// TestParsePacketPosture: `edgegw firewall test` takes the device's
// posture in the description, and the rules see it.
func TestParsePacketPosture(t *testing.T) {
	rec, err := ParsePacket(`ip.src == 100.96.0.2 and tcp.dstport == 5432 and device.posture.os == "linux" and device.posture.os_version == "5.10.0-30-amd64" and not device.posture.disk_encrypted`)
	if err != nil {
		t.Fatal(err)
	}
	for _, tc := range []struct {
		expr string
		want bool
	}{
		{`device.posture.os_version < "6.1"`, true},
		{`device.posture.os_version >= "5.10"`, true},
		{`device.posture.disk_encrypted`, false},
		{`not device.posture.disk_encrypted`, true},
		{`device.posture.firewall`, false}, // not given: absent
		{`not device.posture.compliant`, true},
	} {
		prog, err := rules.Compile(tc.expr, rules.FirewallSchema(), nil)
		if err != nil {
			t.Fatal(err)
		}
		if got := prog.Eval(rec); got != tc.want {
			t.Errorf("%s on %s = %v, want %v", tc.expr, rec, got, tc.want)
		}
	}
	if _, err := ParsePacket(`device.posture.os_version == "new"`); err == nil || !strings.Contains(err.Error(), "1:30") {
		t.Errorf("a bad version in a description: %v, want an error at 1:30", err)
	}
}
