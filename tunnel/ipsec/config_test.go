package ipsec

import (
	"flag"
	"fmt"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"
)

var update = flag.Bool("update", false, "rewrite golden files")

func TestParseProposal(t *testing.T) {
	for _, c := range []struct {
		in   string
		ike  bool
		want Proposal
		err  string
	}{
		{"aes256gcm16-prfsha256-ecp384", true, Proposal{Encryption: "aes256gcm16", PRF: "prfsha256", DH: "ecp384"}, ""},
		{"aes128gcm16-prfsha512-modp2048", true, Proposal{Encryption: "aes128gcm16", PRF: "prfsha512", DH: "modp2048"}, ""},
		{"aes256-sha256-modp2048", true, Proposal{Encryption: "aes256", Integrity: "sha256", DH: "modp2048"}, ""},
		{"aes256gcm16-ecp384", false, Proposal{Encryption: "aes256gcm16", DH: "ecp384"}, ""},
		{"aes128-sha256-noesn", false, Proposal{Encryption: "aes128", Integrity: "sha256"}, ""},
		{"aes128-sha256-modp2048", true, Proposal{}, `"aes128" is not in the Magic WAN profile`},
		{"aes256-sha1-modp2048", true, Proposal{}, `"sha1" is not in the Magic WAN profile`},
		{"aes256gcm16-prfsha256-modp1024", true, Proposal{}, `"modp1024" is not in the Magic WAN profile`},
		{"aes256gcm16-ecp384", true, Proposal{}, "AES-GCM needs a PRF"},
		{"aes256-sha256", true, Proposal{}, "has no DH group"},
		{"aes256gcm16-sha256-prfsha256-ecp384", true, Proposal{}, "takes no integrity algorithm"},
		{"aes256-modp2048", false, Proposal{}, "needs an integrity algorithm"},
		{"aes256gcm16-esn", false, Proposal{}, "extended sequence numbers must be off"},
		{"aes256gcm16-aes128gcm16", false, Proposal{}, "names two encryption algorithms"},
		{"sha256-modp2048", true, Proposal{}, "has no encryption algorithm"},
		{"", false, Proposal{}, "empty ESP proposal"},
		{"AES256GCM16-ECP384", false, Proposal{}, "not in the Magic WAN profile"},
	} {
		got, err := ParseProposal(c.in, c.ike)
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("ParseProposal(%q, %v) error %v, want %q", c.in, c.ike, err, c.err)
			}
			continue
		}
		if err != nil || got != c.want {
			t.Errorf("ParseProposal(%q, %v) = %+v, %v; want %+v", c.in, c.ike, got, err, c.want)
		}
	}
}

func FuzzParseProposal(f *testing.F) {
	for _, s := range []string{"aes256gcm16-prfsha256-ecp384", "aes256-sha256-modp2048", "aes128-sha256-noesn", "--", "esn"} {
		f.Add(s, true)
		f.Add(s, false)
	}
	f.Fuzz(func(t *testing.T, s string, ike bool) {
		p, err := ParseProposal(s, ike)
		if err != nil {
			return
		}
		if p.Encryption == "" || (ike && p.DH == "") || (isAEAD(p.Encryption) != (p.Integrity == "")) {
			t.Fatalf("accepted %q (ike %v) as incomplete %+v", s, ike, p)
		}
	})
}

func valid() Config {
	c := Config{Name: "branch-fra", Local: netip.MustParseAddr("203.0.113.10"), Remote: netip.MustParseAddr("192.0.2.30"),
		LocalID: "lon.corp.example", RemoteID: "fra.corp.example", PSKFile: "/etc/edgegw/fra.psk",
		Address: netip.MustParsePrefix("10.200.2.0/31")}
	c.SetDefaults()
	c.HealthCheck.SetDefaults()
	return c
}

func problems(c Config) []string {
	var out []string
	c.Validate(func(f, m string) { out = append(out, f+": "+m) })
	return out
}

func TestValidate(t *testing.T) {
	if p := problems(valid()); len(p) > 0 {
		t.Fatalf("valid config: %v", p)
	}
	if c := valid(); c.HealthCheck.Type != "request" || *c.ReplayWindow != 1024 || c.Rekey != 4*time.Hour {
		t.Errorf("defaults: %+v", c)
	}
	for _, c := range []struct {
		mod  func(*Config)
		want string
	}{
		{func(c *Config) { c.IKEProposals = []string{"aes256gcm16-prfsha256-ecp384", "3des-md5-modp1024"} },
			`ike_proposals[1]: tunnel "branch-fra": IKE proposal "3des-md5-modp1024": "3des" is not in the Magic WAN profile`},
		{func(c *Config) { c.ESPProposals = []string{"aes256gcm16-esn"} }, `esp_proposals[0]: tunnel "branch-fra": ESP proposal`},
		{func(c *Config) { c.LocalID = "" }, `local_id: tunnel "branch-fra": "" is missing`},
		{func(c *Config) { c.RemoteID = "not an id" }, `remote_id: tunnel "branch-fra": "not an id" is not a valid FQDN`},
		{func(c *Config) { c.RemoteID = "ipsec@" }, `is not a valid user@FQDN`},
		{func(c *Config) { c.RemoteID = "keyid:acct_tunnel" }, ""},
		{func(c *Config) { c.RemoteID = "192.0.2.30" }, ""},
		{func(c *Config) { c.RemoteID = "ipsec@t1.acct.ipsec.cloudflare.com" }, ""},
		{func(c *Config) { c.Rekey = 9 * time.Hour }, `rekey: tunnel "branch-fra": must be at most 8h`},
		{func(c *Config) { c.HealthCheck.Type = "reply" }, `health_check.type: tunnel "branch-fra": reply-style probes`},
		{func(c *Config) { c.Remote = netip.Addr{}; c.Initiator = true }, "remote: an initiator needs the peer's address"},
		{func(c *Config) { w := 5000; c.ReplayWindow = &w }, "replay_window: must be from 0 (off) to 4096"},
	} {
		cfg := valid()
		c.mod(&cfg)
		got := strings.Join(problems(cfg), "\n")
		if c.want == "" && got != "" || !strings.Contains(got, c.want) {
			t.Errorf("got %q, want %q", got, c.want)
		}
	}
}

func TestValidateList(t *testing.T) {
	a, b := valid(), valid()
	b.Name = "branch-ams"
	b.RemoteID = "FRA.corp.example"
	var got []string
	ValidateList([]Config{a, b, a}, func(f, m string) { got = append(got, f+": "+m) })
	want := []string{
		`[1].remote_id: tunnel "branch-ams": remote_id "FRA.corp.example" is already tunnel "branch-fra"'s on local address 203.0.113.10`,
		`[2].name: tunnel "branch-fra" is defined twice (also [0])`,
		`[2].remote_id: tunnel "branch-fra": remote_id "fra.corp.example" is already tunnel "branch-fra"'s on local address 203.0.113.10`,
		`[2].remote_id: tunnel "branch-fra": remote_id "fra.corp.example" is already tunnel "branch-ams"'s on local address 203.0.113.10`,
	}
	if strings.Join(got, "\n") != strings.Join(want, "\n") {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}
}

func TestReadPSK(t *testing.T) {
	dir := t.TempDir()
	write := func(name, body string, mode os.FileMode) string {
		p := filepath.Join(dir, name)
		if err := os.WriteFile(p, []byte(body), mode); err != nil {
			t.Fatal(err)
		}
		os.Chmod(p, mode)
		return p
	}
	for _, c := range []struct {
		path, want, err string
	}{
		{write("ok", "  s3cret key of 20 characters\n", 0o600), "s3cret key of 20 characters", ""},
		{write("group", "0123456789abcdefghij", 0o640), "0123456789abcdefghij", ""},
		{write("short", "s3cret key\n", 0o600), "", `tunnel "branch-fra": the pre-shared key in ` + dir + `/short is 10 characters long, the minimum is 20`},
		{filepath.Join(dir, "missing"), "", `tunnel "branch-fra": psk_file ` + dir + `/missing does not exist`},
		{write("empty", "\n\n", 0o600), "", `tunnel "branch-fra": psk_file ` + dir + `/empty is empty`},
		{write("world", "k", 0o644), "", `tunnel "branch-fra": psk_file ` + dir + `/world is readable by other users (mode 0644)`},
		{dir, "", "is not a regular file"},
	} {
		cfg := valid()
		cfg.PSKFile = c.path
		got, err := cfg.ReadPSK()
		if c.err != "" {
			if err == nil || !strings.Contains(err.Error(), c.err) {
				t.Errorf("%s: error %v, want %q", c.path, err, c.err)
			}
			continue
		}
		if err != nil || string(got) != c.want {
			t.Errorf("%s: %q, %v", c.path, got, err)
		}
	}
}

// TestPSKLength: a pre-shared key shorter than 20 characters (surrounding
// whitespace not counted, characters not bytes) is refused both by the
// configuration check, at psk_file, and when the tunnel reads it, with
// the reason in the message.
func TestPSKLength(t *testing.T) {
	dir := t.TempDir()
	for i, c := range []struct {
		name, psk string
		ok        bool
	}{
		{"empty line only", "\n", true}, // reported as empty by the generic file check, not here
		{"one character", "k", false},
		{"dictionary word", "password", false},
		{"19 characters", "0123456789abcdefghi", false},
		{"19 characters padded with spaces", "   0123456789abcdefghi   \n", false},
		{"20 characters", "0123456789abcdefghij", true},
		{"20 characters and a newline", "0123456789abcdefghij\n", true},
		{"19 runes in 38 bytes", strings.Repeat("é", 19), false},
		{"20 runes", strings.Repeat("é", 20), true},
		{"base64 of 30 random bytes", "pIhT0kMZK1o6t3tYQm8gW5L2c0k3nqQ7xZr9cU1v", true},
	} {
		t.Run(c.name, func(t *testing.T) {
			cfg := valid()
			cfg.PSKFile = filepath.Join(dir, fmt.Sprint(i))
			if err := os.WriteFile(cfg.PSKFile, []byte(c.psk), 0o600); err != nil {
				t.Fatal(err)
			}
			var reports []string
			cfg.CheckFiles(func(f, m string) { reports = append(reports, f+": "+m) })
			_, err := cfg.ReadPSK()
			if c.ok {
				if len(reports) > 0 {
					t.Errorf("CheckFiles reported %q", reports)
				}
				if err != nil && strings.TrimSpace(c.psk) != "" {
					t.Errorf("ReadPSK: %v", err)
				}
				return
			}
			n := len([]rune(strings.TrimSpace(c.psk)))
			want := fmt.Sprintf(`psk_file: tunnel "branch-fra": the pre-shared key in %s is %d characters long, the minimum is 20: `+
				"anyone who captures one IKEv2 exchange can guess a short key offline", cfg.PSKFile, n)
			if len(reports) != 1 || !strings.HasPrefix(reports[0], want) {
				t.Errorf("CheckFiles reported %q, want one starting %q", reports, want)
			}
			if err == nil || !strings.Contains(err.Error(), strings.TrimPrefix(want, "psk_file: ")) {
				t.Errorf("ReadPSK: %v", err)
			}
		})
	}
	// A file the generic check reports (missing) gives no second report.
	cfg := valid()
	cfg.PSKFile = filepath.Join(dir, "missing")
	cfg.CheckFiles(func(f, m string) { t.Errorf("missing file reported here: %s: %s", f, m) })
}

// TestConnMessage compares the VICI messages for a responder and an
// initiator (kernel-libipsec), a responder carrying BGP (kernel-libipsec,
// wide selectors whatever is routed) and an initiator of the kernel
// backend, with golden files (-update rewrites them).
func TestConnMessage(t *testing.T) {
	resp := Tunnel{Config: valid(), Routed: []netip.Prefix{netip.MustParsePrefix("10.30.0.0/16"), netip.MustParsePrefix("10.20.0.0/16")}}
	init := resp
	init.Initiator = true
	init.Remote = netip.MustParseAddr("192.0.2.31")
	wide := resp
	wide.Wide = true
	cases := map[string]struct {
		tun  Tunnel
		ifID uint32
	}{"responder": {resp, 0}, "initiator": {init, 0}, "kernel-initiator": {init, allocIfID(init.Name, nil)},
		"wide-responder": {wide, 0}}
	for name, c := range cases {
		tun := c.tun
		m, err := connMessage(tun, c.ifID)
		if err != nil {
			t.Fatal(err)
		}
		s, err := sharedMessage(tun, []byte("psk"))
		if err != nil {
			t.Fatal(err)
		}
		got := "# load-conn\n" + m.String() + "\n# load-shared\n" + s.String() + "\n"
		path := filepath.Join("testdata", name+".vici")
		if *update {
			os.WriteFile(path, []byte(got), 0o644)
		}
		want, err := os.ReadFile(path)
		if err != nil {
			t.Fatal(err)
		}
		if got != string(want) {
			t.Errorf("%s: got\n%s\nwant\n%s", name, got, want)
		}
	}
}
