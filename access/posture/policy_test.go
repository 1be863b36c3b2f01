package posture

import (
	"encoding/json"
	"errors"
	"net/netip"
	"strings"
	"testing"
	"time"
)

func TestParseVersion(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want Version
		err  bool
	}{
		{"6.1.0-13-amd64", Version{6, 1, 0}, false},
		{"6.12", Version{6, 12}, false},
		{"10", Version{10}, false},
		{"4.19.", Version{4, 19}, false},
		{"1.2.3.4.5.6.7.8", Version{1, 2, 3, 4, 5, 6, 7, 8}, false},
		{"1.2.3.4.5.6.7.8.9", nil, true},
		{"", nil, true},
		{"v6.1", nil, true},
		{".1", nil, true},
		{"1..2", nil, true},
		{"99999999999.1", nil, true},
	} {
		got, err := ParseVersion(tc.in)
		if (err != nil) != tc.err || (err == nil && got.Compare(tc.want) != 0) || len(got) != len(tc.want) {
			t.Errorf("ParseVersion(%q) = %v, %v; want %v (error %v)", tc.in, got, err, tc.want, tc.err)
		}
	}
	for _, tc := range []struct {
		a, b string
		want int
	}{
		{"6.1", "6.1.0", 0}, {"6.1.1", "6.1", 1}, {"5.15", "6.1", -1}, {"6.10", "6.9", 1},
	} {
		a, _ := ParseVersion(tc.a)
		b, _ := ParseVersion(tc.b)
		if got := a.Compare(b); got != tc.want {
			t.Errorf("%s vs %s: %d, want %d", tc.a, tc.b, got, tc.want)
		}
	}
}

// TestConfigValidate: each mistake is reported at its field.
func TestConfigValidate(t *testing.T) {
	ok := Rule{Name: "kernel", Type: TypeOSVersion, OS: OSLinux, Operator: ">=", Version: "6.1"}
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // "" valid
	}{
		{"valid", Config{Rules: []Rule{ok, {Name: "disk", Type: TypeDiskEncryption}, {Name: "fw", Type: TypeFirewall},
			{Name: "client", Type: TypeClientVersion, Operator: ">", Version: "0.1"}}}, ""},
		{"no rules", Config{}, "rules: missing"},
		{"short max_age", Config{Rules: []Rule{ok}, MaxAge: time.Second}, "max_age: 1s is shorter"},
		{"negative grace", Config{Rules: []Rule{ok}, Grace: -time.Second}, "grace: must not be negative"},
		{"no name", Config{Rules: []Rule{{Type: TypeFirewall}}}, "rules[0].name: missing"},
		{"twice", Config{Rules: []Rule{ok, ok}}, `rules[1].name: "kernel" is used twice`},
		{"no type", Config{Rules: []Rule{{Name: "x"}}}, "rules[0].type: missing"},
		{"bad type", Config{Rules: []Rule{{Name: "x", Type: "serial_number"}}}, `rules[0].type: "serial_number" is not`},
		{"no os", Config{Rules: []Rule{{Name: "x", Type: TypeOSVersion, Operator: ">=", Version: "1"}}}, "rules[0].os: missing"},
		{"bad os", Config{Rules: []Rule{{Name: "x", Type: TypeOSVersion, OS: "beos", Operator: ">=", Version: "1"}}}, `rules[0].os: "beos"`},
		{"bad operator", Config{Rules: []Rule{{Name: "x", Type: TypeOSVersion, OS: OSLinux, Operator: "=>", Version: "1"}}}, `rules[0].operator: "=>"`},
		{"bad version", Config{Rules: []Rule{{Name: "x", Type: TypeClientVersion, Operator: ">=", Version: "latest"}}}, "rules[0].version:"},
		{"extra on disk", Config{Rules: []Rule{{Name: "x", Type: TypeDiskEncryption, Version: "1"}}}, "takes no os, operator or version"},
		{"os on client", Config{Rules: []Rule{{Name: "x", Type: TypeClientVersion, OS: OSLinux, Operator: ">=", Version: "1"}}}, "only os_version rules name an OS"},
		{"bad allow", Config{Rules: []Rule{ok}, QuarantineAllow: []netip.Prefix{{}}}, "quarantine_allow[0]: not a prefix"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, err := Compile(tc.cfg)
			switch {
			case tc.want == "" && err != nil:
				t.Fatalf("refused: %v", err)
			case tc.want != "" && (err == nil || !strings.Contains(err.Error(), tc.want)):
				t.Fatalf("error %v, want one containing %q", err, tc.want)
			}
		})
	}
}

// TestEvaluate: every rule must pass; unknown fails; a device whose OS no
// os_version rule names fails; the reasons name the rules.
func TestEvaluate(t *testing.T) {
	p, err := Compile(Config{Rules: []Rule{
		{Name: "linux-kernel", Type: TypeOSVersion, OS: OSLinux, Operator: ">=", Version: "6.1"},
		{Name: "macos", Type: TypeOSVersion, OS: OSMacOS, Operator: ">=", Version: "14"},
		{Name: "disk", Type: TypeDiskEncryption},
		{Name: "fw", Type: TypeFirewall},
		{Name: "client", Type: TypeClientVersion, Operator: ">=", Version: "1.2"},
	}})
	if err != nil {
		t.Fatal(err)
	}
	good := Report{OS: OSLinux, OSVersion: "6.12.38+deb13-amd64", DiskEncrypted: Yes, Firewall: Yes, ClientVersion: "1.2.0"}
	for _, tc := range []struct {
		name   string
		change func(*Report)
		failed []string // substrings, in order
	}{
		{"compliant", func(*Report) {}, nil},
		{"old kernel", func(r *Report) { r.OSVersion = "5.10.0-30-amd64" }, []string{`linux-kernel: linux version "5.10.0-30-amd64" is not >= 6.1`}},
		{"unparsable version", func(r *Report) { r.OSVersion = "" }, []string{"linux-kernel"}},
		{"macos passes its own rule", func(r *Report) { r.OS, r.OSVersion = OSMacOS, "14.5" }, nil},
		{"unknown os", func(r *Report) { r.OS = OSUnknown }, []string{`operating system "unknown": no os_version rule allows it`}},
		{"windows", func(r *Report) { r.OS, r.OSVersion = OSWindows, "10.0.19045" }, []string{`operating system "windows"`}},
		{"disk unknown", func(r *Report) { r.DiskEncrypted = Unknown }, []string{"disk: disk encryption is unknown"}},
		{"disk off", func(r *Report) { r.DiskEncrypted = No }, []string{"disk: disk encryption is false"}},
		{"firewall unknown", func(r *Report) { r.Firewall = Unknown }, []string{"fw: host firewall is unknown"}},
		{"old client and no firewall", func(r *Report) { r.ClientVersion, r.Firewall = "devel-abc", No }, []string{"fw:", "client:"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			r := good
			tc.change(&r)
			res := p.Evaluate(r)
			if res.Compliant != (len(tc.failed) == 0) || len(res.Failed) != len(tc.failed) {
				t.Fatalf("%+v, want failures %q", res, tc.failed)
			}
			for i, want := range tc.failed {
				if !strings.Contains(res.Failed[i], want) {
					t.Errorf("failure %d %q, want %q", i, res.Failed[i], want)
				}
			}
		})
	}
	// Without os_version rules any OS passes them.
	p2, err := Compile(Config{Rules: []Rule{{Name: "disk", Type: TypeDiskEncryption}}})
	if err != nil {
		t.Fatal(err)
	}
	if res := p2.Evaluate(Report{OS: OSUnknown, DiskEncrypted: Yes}); !res.Compliant {
		t.Errorf("no os_version rule: %+v", res)
	}
}

// TestParseReport: what a device sends is bounded and checked.
func TestParseReport(t *testing.T) {
	good := `{"time":"2026-12-07T03:00:00Z","os":"linux","os_version":"6.12.0","os_distro":"Debian GNU/Linux 13 (trixie)","disk_encrypted":"true","firewall":"unknown","client_version":"1.0"}`
	if r, err := ParseReport([]byte(good)); err != nil || r.OSVersion != "6.12.0" || r.DiskEncrypted != Yes || r.Firewall != Unknown {
		t.Fatalf("good report: %+v %v", r, err)
	}
	for _, tc := range []struct{ name, in string }{
		{"not JSON", `{"time":`},
		{"unknown field", `{"time":"2026-12-07T03:00:00Z","os":"linux","disk_encrypted":"true","firewall":"true","root":true}`},
		{"trailing", good + `{}`},
		{"no time", `{"os":"linux","disk_encrypted":"true","firewall":"true"}`},
		{"bad os", `{"time":"2026-12-07T03:00:00Z","os":"plan9","disk_encrypted":"true","firewall":"true"}`},
		{"bad check", `{"time":"2026-12-07T03:00:00Z","os":"linux","disk_encrypted":"yes","firewall":"true"}`},
		{"missing check", `{"time":"2026-12-07T03:00:00Z","os":"linux","firewall":"true"}`},
		{"control char", `{"time":"2026-12-07T03:00:00Z","os":"linux","os_version":"6.1\u0000","disk_encrypted":"true","firewall":"true"}`},
		{"long field", `{"time":"2026-12-07T03:00:00Z","os":"linux","os_version":"` + strings.Repeat("9", 300) + `","disk_encrypted":"true","firewall":"true"}`},
		{"too large", `{"time":"2026-12-07T03:00:00Z","os":"linux","os_distro":"` + strings.Repeat("x", MaxReportBytes) + `"}`},
	} {
		if _, err := ParseReport([]byte(tc.in)); !errors.Is(err, ErrMalformed) {
			t.Errorf("%s: %v, want ErrMalformed", tc.name, err)
		}
	}
}

// FuzzParseReport: no input panics, and an accepted report re-encodes to
// one that is accepted with the same meaning.
func FuzzParseReport(f *testing.F) {
	f.Add([]byte(`{"time":"2026-12-07T03:00:00Z","os":"linux","os_version":"6.12.0-1-amd64","disk_encrypted":"true","firewall":"false","client_version":"1.0"}`))
	f.Add([]byte(`{"time":"2026-12-07T03:00:00Z","os":"unknown","disk_encrypted":"unknown","firewall":"unknown"}`))
	f.Add([]byte(`{"time":"0001-01-01T00:00:00Z"}`))
	f.Add([]byte(`[]`))
	p, err := Compile(Config{Rules: []Rule{{Name: "k", Type: TypeOSVersion, OS: OSLinux, Operator: ">=", Version: "6.1"}, {Name: "c", Type: TypeClientVersion, Operator: ">=", Version: "1"}}})
	if err != nil {
		f.Fatal(err)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		r, err := ParseReport(b)
		if err != nil {
			return
		}
		res := p.Evaluate(r)
		if res.Compliant && (r.OS != OSLinux) {
			t.Fatalf("%+v compliant without a linux os", r)
		}
	})
}

// FuzzParseVersion: versions from reports never panic and compare
// consistently with themselves.
func FuzzParseVersion(f *testing.F) {
	for _, s := range []string{"6.1.0-13-amd64", "10.0.19045", "", ".", "1..", "18446744073709551616"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseVersion(s)
		if err != nil {
			return
		}
		if len(v) == 0 || len(v) > 8 || v.Compare(v) != 0 {
			t.Fatalf("%q → %v", s, v)
		}
	})
}

func mustJSON(t *testing.T, v any) []byte {
	t.Helper()
	b, err := json.Marshal(v)
	if err != nil {
		t.Fatal(err)
	}
	return b
}
