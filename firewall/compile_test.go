package firewall

import (
	"flag"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// goldenFiles runs fn on every testdata/dir/*.txt file: a YAML input, a
// line "-- want --", and the expected output, which -update rewrites.
func goldenFiles(t *testing.T, dir string, fn func(t *testing.T, input string) string) {
	files, err := filepath.Glob(filepath.Join("testdata", dir, "*.txt"))
	if err != nil || len(files) == 0 {
		t.Fatalf("no golden files in testdata/%s: %v", dir, err)
	}
	const sep = "-- want --\n"
	for _, file := range files {
		t.Run(strings.TrimSuffix(filepath.Base(file), ".txt"), func(t *testing.T) {
			b, err := os.ReadFile(file)
			if err != nil {
				t.Fatal(err)
			}
			input, want, _ := strings.Cut(string(b), sep)
			got := fn(t, input)
			if *update {
				if err := os.WriteFile(file, []byte(input+sep+got), 0o644); err != nil {
					t.Fatal(err)
				}
				return
			}
			if got != want {
				t.Errorf("%s: output differs (run with -update to accept)\n--- got ---\n%s--- want ---\n%s", file, got, want)
			}
		})
	}
}

// specInput is the YAML of a golden compile test.
type specInput struct {
	WAN      string   `yaml:"wan"`
	LAN      []string `yaml:"lan"`
	Firewall Config   `yaml:"firewall"`
	Sampling struct {
		Rate  int    `yaml:"rate"`
		Group uint16 `yaml:"group"`
	} `yaml:"sampling"`
	// Tunnels: interface → the prefixes it owns, in order.
	Tunnels     []tunnelInput `yaml:"tunnels"`
	DenyForward bool          `yaml:"deny_forward"`
}

type tunnelInput struct {
	Interface string         `yaml:"interface"`
	Prefixes  []netip.Prefix `yaml:"prefixes"`
}

// spec is the Spec of a golden input, with rs as its rules and its
// egress policies compiled.
func (in *specInput) spec(t testing.TB, rs *Ruleset) Spec {
	t.Helper()
	eg, err := CompileEgress(&in.Firewall)
	if err != nil {
		t.Fatal(err)
	}
	s := Spec{WAN: in.WAN, LAN: in.LAN, Rules: rs, Sampling: Sampling(in.Sampling), DenyForward: in.DenyForward, Egress: eg}
	for _, t := range in.Tunnels {
		s.Tunnels = append(s.Tunnels, TunnelSources{Interface: t.Interface, Prefixes: t.Prefixes})
	}
	return s
}

func TestCompileGolden(t *testing.T) {
	goldenFiles(t, "compile", func(t *testing.T, input string) string {
		var in specInput
		if err := yaml.Unmarshal([]byte(input), &in); err != nil {
			t.Fatalf("input: %v", err)
		}
		var errs []string
		in.Firewall.Validate(func(f, m string) { errs = append(errs, f+": "+m) })
		if len(errs) > 0 {
			t.Fatalf("invalid input:\n%s", strings.Join(errs, "\n"))
		}
		rs, err := CompileRules(&in.Firewall)
		if err != nil {
			t.Fatal(err)
		}
		spec := in.spec(t, rs)
		if len(in.Firewall.Rules) == 0 && len(in.Firewall.Lists) == 0 {
			spec.Rules = nil // no firewall section
		}
		return Compile(spec).String()
	})
}

func TestValidateGolden(t *testing.T) {
	goldenFiles(t, "errors", func(t *testing.T, input string) string {
		var in specInput
		if err := yaml.Unmarshal([]byte(input), &in); err != nil {
			t.Fatalf("input: %v", err)
		}
		var b strings.Builder
		in.Firewall.Validate(func(f, m string) { b.WriteString(f + ": " + m + "\n") })
		if _, err := CompileRules(&in.Firewall); (err == nil) != (b.Len() == 0) {
			t.Errorf("Validate and CompileRules disagree: CompileRules error %v", err)
		}
		return b.String()
	})
}

// TestWANAddress: with a WAN address (an HA pair's virtual one), IPv4
// leaving the WAN is translated to it, not masqueraded to the node's own;
// IPv6 is still masqueraded.
func TestWANAddress(t *testing.T) {
	out := Compile(Spec{WAN: "eth0", WANAddress: netip.MustParseAddr("198.51.100.10")}).String()
	snat := strings.Index(out, "snat to 198.51.100.10")
	masq := strings.Index(out, "masquerade")
	if snat < 0 || masq < snat || !strings.Contains(out, "meta nfproto ipv4") {
		t.Errorf("postrouting without snat to the WAN address before the masquerade:\n%s", out)
	}
	// The node's own packets (no input interface) keep their source.
	if own := strings.Index(out, `iifname "" counter accept`); own < 0 || own > snat {
		t.Errorf("postrouting does not exempt the node's own packets before the snat:\n%s", out)
	}
	if strings.Contains(Compile(Spec{WAN: "eth0"}).String(), "snat") {
		t.Error("snat without a WAN address")
	}
}
