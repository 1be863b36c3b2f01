package policy

import (
	"net/netip"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/firewall/rules"
)

func yes() *bool { b := true; return &b }
func no() *bool  { b := false; return &b }

func alice() *Identity {
	return &Identity{
		Email:  "Alice@Corp.Example",
		Groups: []string{"engineering", "staff"},
		Claims: map[string][]string{"department": {"r&d"}, "roles": {"a", "b"}},
	}
}

func from(addr string) Network { return Network{Addr: netip.MustParseAddr(addr)} }

func TestEvaluate(t *testing.T) {
	everyone := []Selector{{Everyone: yes()}}
	const encryptedRecent = `device.posture.disk_encrypted and device.posture.os_version >= "6.1"`
	tests := []struct {
		name     string
		policies []Policy
		in       Input
		allowed  bool
		policy   string
	}{
		{"no policies deny", nil, Input{Identity: alice()}, false, ""},
		{"email case-insensitive", []Policy{{Name: "p", Action: Allow, Include: []Selector{{Email: "alice@corp.example"}}}}, Input{Identity: alice()}, true, "p"},
		{"email other", []Policy{{Name: "p", Action: Allow, Include: []Selector{{Email: "bob@corp.example"}}}}, Input{Identity: alice()}, false, ""},
		{"email_domain", []Policy{{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "corp.example"}}}}, Input{Identity: alice()}, true, "p"},
		{"email_domain with @", []Policy{{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "@corp.example"}}}}, Input{Identity: alice()}, true, "p"},
		{"email_domain is not a suffix match on the label", []Policy{{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "orp.example"}}}}, Input{Identity: alice()}, false, ""},
		{"email_domain not subdomain", []Policy{{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "corp.example"}}}}, Input{Identity: &Identity{Email: "x@evil.corp.example.net"}}, false, ""},
		{"email_domain empty email", []Policy{{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "corp.example"}}}}, Input{Identity: &Identity{Email: "@corp.example"}}, false, ""},
		{"group", []Policy{{Name: "p", Action: Allow, Include: []Selector{{Group: "engineering"}}}}, Input{Identity: alice()}, true, "p"},
		{"group case-sensitive", []Policy{{Name: "p", Action: Allow, Include: []Selector{{Group: "Engineering"}}}}, Input{Identity: alice()}, false, ""},
		{"claim", []Policy{{Name: "p", Action: Allow, Include: []Selector{{Claim: &Claim{"roles", "b"}}}}}, Input{Identity: alice()}, true, "p"},
		{"claim missing", []Policy{{Name: "p", Action: Allow, Include: []Selector{{Claim: &Claim{"tier", "gold"}}}}}, Input{Identity: alice()}, false, ""},
		{"ip", []Policy{{Name: "p", Action: Allow, Include: []Selector{{IP: "10.0.0.0/8"}}}}, Input{Identity: alice(), Network: from("10.1.2.3")}, true, "p"},
		{"ip v4-mapped", []Policy{{Name: "p", Action: Allow, Include: []Selector{{IP: "10.0.0.0/8"}}}}, Input{Identity: alice(), Network: from("::ffff:10.1.2.3")}, true, "p"},
		{"ip single address", []Policy{{Name: "p", Action: Allow, Include: []Selector{{IP: "192.0.2.7"}}}}, Input{Identity: alice(), Network: from("192.0.2.8")}, false, ""},
		{"ip needs a login for allow", []Policy{{Name: "p", Action: Allow, Include: []Selector{{IP: "10.0.0.0/8"}}}}, Input{Network: from("10.1.2.3")}, false, ""},
		{"everyone allows any login", []Policy{{Name: "p", Action: Allow, Include: everyone}}, Input{Identity: &Identity{Email: "mallory@gmail.example"}}, true, "p"},
		{"everyone allow still needs a login", []Policy{{Name: "p", Action: Allow, Include: everyone}}, Input{}, false, ""},
		{"bypass everyone needs no login", []Policy{{Name: "p", Action: Bypass, Include: everyone}}, Input{}, true, "p"},
		{"bypass by ip", []Policy{{Name: "p", Action: Bypass, Include: []Selector{{IP: "127.0.0.0/8"}}}}, Input{Network: from("127.0.0.1")}, true, "p"},
		{"service token needs service_auth", []Policy{{Name: "p", Action: Allow, Include: []Selector{{ServiceToken: "ci"}}}}, Input{Network: Network{ServiceToken: "ci"}}, false, ""},
		{"service_auth token", []Policy{{Name: "p", Action: ServiceAuth, Include: []Selector{{ServiceToken: "ci"}}}}, Input{Network: Network{ServiceToken: "ci"}}, true, "p"},
		{"service_auth other token", []Policy{{Name: "p", Action: ServiceAuth, Include: []Selector{{ServiceToken: "ci"}}}}, Input{Network: Network{ServiceToken: "cd"}}, false, ""},
		{"service_auth any token", []Policy{{Name: "p", Action: ServiceAuth, Include: []Selector{{AnyServiceToken: yes()}}}}, Input{Network: Network{ServiceToken: "cd"}}, true, "p"},
		{"service_auth any token, none", []Policy{{Name: "p", Action: ServiceAuth, Include: []Selector{{AnyServiceToken: yes()}}}}, Input{}, false, ""},
		{"service_auth certificate", []Policy{{Name: "p", Action: ServiceAuth, Include: []Selector{{Certificate: yes()}}}}, Input{Network: Network{Certificate: true}}, true, "p"},
		{"common_name", []Policy{{Name: "p", Action: ServiceAuth, Include: []Selector{{CommonName: "host1"}}}}, Input{Network: Network{Certificate: true, CommonName: "host1"}}, true, "p"},
		{"common_name without verified cert", []Policy{{Name: "p", Action: ServiceAuth, Include: []Selector{{CommonName: "host1"}}}}, Input{Network: Network{CommonName: "host1"}}, false, ""},
		{"device", []Policy{{Name: "p", Action: Allow, Include: []Selector{{Device: yes()}}}}, Input{Identity: alice(), Network: Network{Device: true}}, true, "p"},
		{"device absent", []Policy{{Name: "p", Action: Allow, Include: []Selector{{Device: yes()}}}}, Input{Identity: alice()}, false, ""},
		{"device_posture", []Policy{{Name: "p", Action: Allow, Include: []Selector{{DevicePosture: yes()}}}}, Input{Identity: alice(), Network: Network{Device: true, DevicePosture: true}}, true, "p"},
		{"device_posture quarantined", []Policy{{Name: "p", Action: Allow, Include: []Selector{{DevicePosture: yes()}}}}, Input{Identity: alice(), Network: Network{Device: true}}, false, ""},
		{"device_posture of another user's device", []Policy{{Name: "p", Action: Allow, Include: []Selector{{DevicePosture: yes()}}}}, Input{Identity: alice(), Network: Network{DevicePosture: true}}, false, ""},
		{"require device_posture", []Policy{{Name: "p", Action: Allow, Include: everyone, Require: []Selector{{DevicePosture: yes()}}}}, Input{Identity: alice(), Network: Network{Device: true}}, false, ""},
		{"posture", []Policy{{Name: "p", Action: Allow, Include: everyone, Require: []Selector{{Posture: encryptedRecent}}}},
			Input{Identity: alice(), Network: Network{Device: true, Posture: &rules.Posture{OSVersion: "6.12.3-1-amd64", DiskEncrypted: rules.CheckYes}}}, true, "p"},
		{"posture: old kernel", []Policy{{Name: "p", Action: Allow, Include: everyone, Require: []Selector{{Posture: encryptedRecent}}}},
			Input{Identity: alice(), Network: Network{Device: true, Posture: &rules.Posture{OSVersion: "5.10.0", DiskEncrypted: rules.CheckYes}}}, false, ""},
		{"posture: disk unknown", []Policy{{Name: "p", Action: Allow, Include: everyone, Require: []Selector{{Posture: encryptedRecent}}}},
			Input{Identity: alice(), Network: Network{Device: true, Posture: &rules.Posture{OSVersion: "6.12"}}}, false, ""},
		{"posture of another user's device", []Policy{{Name: "p", Action: Allow, Include: everyone, Require: []Selector{{Posture: encryptedRecent}}}},
			Input{Identity: alice(), Network: Network{Posture: &rules.Posture{OSVersion: "6.12", DiskEncrypted: rules.CheckYes}}}, false, ""},
		{"posture without attributes", []Policy{{Name: "p", Action: Allow, Include: everyone, Require: []Selector{{Posture: "not device.posture.firewall"}}}},
			Input{Identity: alice(), Network: Network{Device: true}}, false, ""},
		{"exclude on posture", []Policy{{Name: "p", Action: Allow, Include: everyone, Exclude: []Selector{{Posture: "not device.posture.firewall"}}}},
			Input{Identity: alice(), Network: Network{Device: true, Posture: &rules.Posture{Firewall: rules.CheckNo}}}, false, ""},
		{"block", []Policy{{Name: "b", Action: Block, Include: []Selector{{Group: "staff"}}}}, Input{Identity: alice()}, false, "b"},
		{"first match wins: block before allow", []Policy{
			{Name: "b", Action: Block, Include: []Selector{{Email: "alice@corp.example"}}},
			{Name: "a", Action: Allow, Include: everyone},
		}, Input{Identity: alice()}, false, "b"},
		{"first match wins: allow before block", []Policy{
			{Name: "a", Action: Allow, Include: everyone},
			{Name: "b", Action: Block, Include: []Selector{{Email: "alice@corp.example"}}},
		}, Input{Identity: alice()}, true, "a"},
		{"bypass runs before an earlier block", []Policy{
			{Name: "b", Action: Block, Include: everyone},
			{Name: "by", Action: Bypass, Include: []Selector{{IP: "10.0.0.0/8"}}},
		}, Input{Identity: alice(), Network: from("10.0.0.1")}, true, "by"},
		{"service_auth runs before an earlier block", []Policy{
			{Name: "b", Action: Block, Include: everyone},
			{Name: "s", Action: ServiceAuth, Include: []Selector{{ServiceToken: "ci"}}},
		}, Input{Network: Network{ServiceToken: "ci"}}, true, "s"},
		{"include is OR", []Policy{{Name: "p", Action: Allow, Include: []Selector{{Email: "nobody@x.example"}, {Group: "staff"}}}}, Input{Identity: alice()}, true, "p"},
		{"require is AND", []Policy{{Name: "p", Action: Allow, Include: everyone, Require: []Selector{{Group: "staff"}, {Group: "engineering"}}}}, Input{Identity: alice()}, true, "p"},
		{"require is AND: one missing", []Policy{{Name: "p", Action: Allow, Include: everyone, Require: []Selector{{Group: "staff"}, {Group: "finance"}}}}, Input{Identity: alice()}, false, ""},
		{"trap: two ranges in require never both match", []Policy{{Name: "p", Action: Allow, Include: everyone, Require: []Selector{{IP: "10.0.0.0/8"}, {IP: "192.168.0.0/16"}}}}, Input{Identity: alice(), Network: from("10.0.0.1")}, false, ""},
		{"exclude is NOT OR", []Policy{{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "corp.example"}}, Exclude: []Selector{{Group: "contractors"}, {Group: "staff"}}}}, Input{Identity: alice()}, false, ""},
		{"exclude miss", []Policy{{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "corp.example"}}, Exclude: []Selector{{Group: "contractors"}}}}, Input{Identity: alice()}, true, "p"},
		{"network require re-checked per request", []Policy{{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "corp.example"}}, Require: []Selector{{IP: "10.0.0.0/8"}}}}, Input{Identity: alice(), Network: from("203.0.113.1")}, false, ""},
		{"geo", []Policy{{Name: "p", Action: Bypass, Include: []Selector{{Geo: "DE"}}}}, Input{Network: Network{Country: "DE"}}, true, "p"},
		{"geo lower case", []Policy{{Name: "p", Action: Bypass, Include: []Selector{{Geo: "de"}}}}, Input{Network: Network{Country: "DE"}}, true, "p"},
		{"geo other country", []Policy{{Name: "p", Action: Bypass, Include: []Selector{{Geo: "DE"}}}}, Input{Network: Network{Country: "FR"}}, false, ""},
		{"geo unknown country", []Policy{{Name: "p", Action: Bypass, Include: []Selector{{Geo: "DE"}}}}, Input{Network: from("192.0.2.1")}, false, ""},
		{"geo exclude", []Policy{{Name: "p", Action: Allow, Include: everyone, Exclude: []Selector{{Geo: "KP"}, {Geo: "IR"}}}}, Input{Identity: alice(), Network: Network{Country: "IR"}}, false, ""},
		{"geo require re-checked per request", []Policy{{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "corp.example"}}, Require: []Selector{{Geo: "DE"}}}}, Input{Identity: alice(), Network: Network{Country: "NL"}}, false, ""},
		{"no match falls through to deny", []Policy{
			{Name: "a", Action: Allow, Include: []Selector{{Group: "finance"}}},
			{Name: "b", Action: Block, Include: []Selector{{Group: "hr"}}},
		}, Input{Identity: alice()}, false, ""},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			set, err := Compile(tt.policies)
			if err != nil {
				t.Fatal(err)
			}
			d := set.Evaluate(tt.in)
			if d.Allowed != tt.allowed || d.Policy != tt.policy {
				t.Fatalf("got allowed=%v policy=%q action=%q, want allowed=%v policy=%q", d.Allowed, d.Policy, d.Action, tt.allowed, tt.policy)
			}
		})
	}
}

func TestCheck(t *testing.T) {
	tokens := map[string]bool{"ci": true}
	tests := []struct {
		name string
		p    Policy
		want []string // "field: message fragment"; empty means valid
	}{
		{"valid", Policy{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "corp.example"}}, Require: []Selector{{Group: "g"}}}, nil},
		{"no name", Policy{Action: Allow, Include: []Selector{{Everyone: yes()}}}, []string{"name: missing"}},
		{"bad action", Policy{Name: "p", Action: "permit", Include: []Selector{{Everyone: yes()}}}, []string{`action: "permit" is not one of`}},
		{"no include", Policy{Name: "p", Action: Allow, Require: []Selector{{Group: "g"}}}, []string{"include: missing"}},
		{"empty selector", Policy{Name: "p", Action: Allow, Include: []Selector{{}}}, []string{"include[0]: empty selector"}},
		{"two keys", Policy{Name: "p", Action: Allow, Include: []Selector{{Email: "a@b.c", Group: "g"}}}, []string{"include[0]: expected exactly one key per selector, found email, group"}},
		{"false bool", Policy{Name: "p", Action: Allow, Include: []Selector{{Everyone: no()}}}, []string{"include[0].everyone: must be true"}},
		{"bad ip", Policy{Name: "p", Action: Allow, Include: []Selector{{IP: "10.0.0.0/33"}}}, []string{"include[0].ip: \"10.0.0.0/33\" is not a CIDR"}},
		{"bad email", Policy{Name: "p", Action: Allow, Include: []Selector{{Email: "alice"}}}, []string{"include[0].email: \"alice\" is not an email"}},
		{"bad domain", Policy{Name: "p", Action: Allow, Include: []Selector{{EmailDomain: "a@b"}}}, []string{"include[0].email_domain:"}},
		{"claim halves", Policy{Name: "p", Action: Allow, Include: []Selector{{Claim: &Claim{}}}}, []string{"include[0].claim.name: missing", "include[0].claim.value: missing"}},
		{"bypass with identity", Policy{Name: "p", Action: Bypass, Include: []Selector{{Everyone: yes()}}, Exclude: []Selector{{Email: "a@b.c"}}}, []string{"exclude[0]: bypass policies run without a login"}},
		{"service_auth with identity", Policy{Name: "p", Action: ServiceAuth, Include: []Selector{{Group: "g"}}}, []string{"include[0]: service_auth policies run without a login"}},
		{"bad geo", Policy{Name: "p", Action: Bypass, Include: []Selector{{Geo: "Germany"}}}, []string{`include[0].geo: "Germany" is not a country code`}},
		{"geo in bypass", Policy{Name: "p", Action: Bypass, Include: []Selector{{Geo: "de"}}}, nil},
		{"unknown service token", Policy{Name: "p", Action: ServiceAuth, Include: []Selector{{ServiceToken: "cd"}}}, []string{`include[0].service_token: "cd" is not a service token`}},
		{"posture", Policy{Name: "p", Action: Allow, Include: []Selector{{Posture: `device.posture.os_version >= "6.1"`}}}, nil},
		{"posture: bad version", Policy{Name: "p", Action: Allow, Include: []Selector{{Posture: `device.posture.os_version >= "six"`}}}, []string{`include[0].posture: "device.posture.os_version >= \"six\"": 1:`}},
		{"posture: not a posture field", Policy{Name: "p", Action: Allow, Include: []Selector{{Posture: `identity.email == "a@b.c"`}}}, []string{`include[0].posture:`}},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			var got []string
			tt.p.Check(tokens, func(field, msg string) { got = append(got, field+": "+msg) })
			if len(got) != len(tt.want) {
				t.Fatalf("got %q, want %d problems like %q", got, len(tt.want), tt.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tt.want[i]) {
					t.Errorf("problem %d: got %q, want prefix %q", i, got[i], tt.want[i])
				}
			}
		})
	}
}

func TestCompileRejectsInvalid(t *testing.T) {
	if _, err := Compile([]Policy{{Name: "p", Action: Allow}}); err == nil || !strings.Contains(err.Error(), `"p"`) {
		t.Fatalf("want an error naming the policy, got %v", err)
	}
}

func TestKindsAndClaims(t *testing.T) {
	ps := []Policy{{Name: "p", Action: Allow, Include: []Selector{{Claim: &Claim{"a", "1"}}, {Claim: &Claim{"b", "2"}}}, Require: []Selector{{Claim: &Claim{"a", "3"}}}}}
	if got := Claims(ps); strings.Join(got, ",") != "a,b" {
		t.Fatalf("Claims = %v", got)
	}
	if !ps[0].UsesIdentity() {
		t.Fatal("UsesIdentity false")
	}
	if k := (Selector{IP: "10.0.0.0/8"}).Kind(); k != KindNetwork {
		t.Fatalf("ip kind %v", k)
	}
	if k := (Selector{Geo: "DE"}).Kind(); k != KindNetwork {
		t.Fatalf("geo kind %v", k)
	}
	if UsesGeo(ps) || !UsesGeo([]Policy{{Exclude: []Selector{{Geo: "KP"}}}}) {
		t.Fatal("UsesGeo")
	}
	if k := (Selector{Everyone: yes()}).Kind(); k != KindNone {
		t.Fatalf("everyone kind %v", k)
	}
}
