package rules

import "testing"

func TestCompareVersions(t *testing.T) {
	tests := []struct {
		a, b string
		want int
		ok   bool
	}{
		{"6.1.0-27-amd64", "6.1", 0, true},
		{"6.1.0-27-amd64", "6.1.1", -1, true},
		{"6.12.38+deb13-amd64", "6.1", 1, true},
		{"1.2", "1.2", 0, true},
		{"1.2", "1.2.0.0", 0, true},
		{"1.10", "1.9", 1, true},
		{"1.9", "1.10", -1, true},
		{"10.0.19045", "10.0.22000", -1, true},
		{"2", "10", -1, true},
		{"1.", "1.0", 0, true},
		{"", "1", 0, false},
		{"v1.2", "1.2", 0, false},
		{"1.2", "beta", 0, false},
		{"4294967296", "1", 0, false}, // a component beyond 32 bits
		{"1.2.3.4.5.6.7.8.9", "1", 0, false},
	}
	for _, tt := range tests {
		c, ok := CompareVersions(tt.a, tt.b)
		if ok != tt.ok || ok && c != tt.want {
			t.Errorf("CompareVersions(%q, %q) = %d, %v; want %d, %v", tt.a, tt.b, c, ok, tt.want, tt.ok)
		}
		if ok {
			if back, _ := CompareVersions(tt.b, tt.a); back != -c {
				t.Errorf("CompareVersions(%q, %q) = %d, not the opposite of %d", tt.b, tt.a, back, c)
			}
		}
	}
}

// TestPostureEval checks the device.posture.* fields in the firewall
// schema: versions compare as versions, and an unknown attribute is
// absent, so neither an allow on it nor its comparisons hold, and "not"
// of it does (a block rule catches unknown).
func TestPostureEval(t *testing.T) {
	full := Posture{OS: "linux", OSVersion: "6.12.38+deb13-amd64", ClientVersion: "1.10.0",
		DiskEncrypted: CheckYes, Firewall: CheckNo, Compliant: CheckNo}
	unknown := Posture{OS: "linux", OSVersion: "6.1.0-27-amd64"} // checks unknown
	odd := Posture{OSVersion: "rolling"}                         // an unparsable version
	tests := []struct {
		expr string
		p    Posture
		want bool
	}{
		{`device.posture.os == "linux"`, full, true},
		{`device.posture.os != "linux"`, Posture{}, false},
		{`device.posture.os_version >= "6.1"`, full, true},
		{`device.posture.os_version >= "6.13"`, full, false},
		{`device.posture.os_version > "6.9"`, full, true}, // 12 > 9, not "1" < "9"
		{`device.posture.os_version == "6.1"`, unknown, true},
		{`device.posture.os_version != "6.1"`, unknown, false},
		{`device.posture.os_version < "6.1.1"`, unknown, true},
		{`device.posture.os_version in {"5.10" "6.1"}`, unknown, true},
		{`device.posture.os_version in {"5.10" "6.2"}`, unknown, false},
		{`device.posture.os_version >= "0"`, odd, false},
		{`device.posture.os_version < "999"`, odd, false},
		{`device.posture.os_version >= "0"`, Posture{}, false},
		{`device.posture.client_version > "1.9"`, full, true},
		{`device.posture.client_version <= "1.9.99"`, full, false},
		{`device.posture.disk_encrypted`, full, true},
		{`not device.posture.disk_encrypted`, full, false},
		{`device.posture.firewall`, full, false},
		{`not device.posture.firewall`, full, true},
		{`device.posture.compliant`, full, false},
		// Unknown is non-compliant: the bare field is false, its negation true.
		{`device.posture.disk_encrypted`, unknown, false},
		{`not device.posture.disk_encrypted`, unknown, true},
		{`device.posture.firewall or device.posture.compliant`, unknown, false},
		{`device.posture.disk_encrypted`, Posture{}, false},
		{`not device.posture.compliant`, Posture{}, true},
	}
	rec := NewRecord(FirewallSchema())
	for _, tt := range tests {
		prog, err := Compile(tt.expr, FirewallSchema(), nil)
		if err != nil {
			t.Fatalf("%s: %v", tt.expr, err)
		}
		rec.Reset()
		rec.SetPosture(tt.p)
		if got := prog.Eval(rec); got != tt.want {
			t.Errorf("%s on %+v (%s) = %v, want %v", tt.expr, tt.p, rec, got, tt.want)
		}
	}
}

// TestSetPostureClears checks that SetPosture leaves no field of an
// earlier posture behind.
func TestSetPostureClears(t *testing.T) {
	rec := NewRecord(FirewallSchema())
	rec.SetPosture(Posture{OS: "macos", OSVersion: "14.5", ClientVersion: "1", DiskEncrypted: CheckYes, Firewall: CheckYes, Compliant: CheckYes})
	rec.SetPosture(Posture{OS: "linux"})
	if got, want := rec.String(), `device.posture.os == "linux"`; got != want {
		t.Errorf("record = %s, want %s", got, want)
	}
}

// FuzzCompareVersions checks, for versions from untrusted reports, that
// parsing never panics and the order is antisymmetric and ignores
// trailing zero components and suffixes.
func FuzzCompareVersions(f *testing.F) {
	for _, s := range [][2]string{{"6.1.0-27-amd64", "6.1"}, {"1.10", "1.9"}, {"", "."}, {"4294967295.1", "1..2"}} {
		f.Add(s[0], s[1])
	}
	f.Fuzz(func(t *testing.T, a, b string) {
		c, ok := CompareVersions(a, b)
		back, okBack := CompareVersions(b, a)
		if ok != okBack || ok && back != -c {
			t.Fatalf("CompareVersions(%q, %q) = %d %v, reversed %d %v", a, b, c, ok, back, okBack)
		}
		if !ok {
			return
		}
		va, _ := ParseVersion(a)
		if len(va) < maxVersionComponents {
			if z, ok := CompareVersions(a, va.String()+".0-suffix"); !ok || z != 0 {
				t.Fatalf("%q and %q: %d %v, want equal", a, va.String()+".0-suffix", z, ok)
			}
		}
	})
}
