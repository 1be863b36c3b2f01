package access

import (
	"os"
	"strings"
	"testing"

	"go.yaml.in/yaml/v3"

	"github.com/edgegw/edgegw/access/identity"
)

// TestExampleConfig: the reference example's identity, access and
// enrollment sections decode into these types and pass validation.
func TestExampleConfig(t *testing.T) {
	b, err := os.ReadFile("../gateway/config/edgegw.example.yaml")
	if err != nil {
		t.Fatalf("the repository's example configuration: %v", err)
	}
	var doc struct {
		Identity identity.Config `yaml:"identity"`
		Access   Config          `yaml:"access"`
		Tunnels  struct {
			WireGuard struct {
				Enrollment EnrollmentConfig `yaml:"enrollment"`
			} `yaml:"wireguard"`
		} `yaml:"tunnels"`
	}
	if err := yaml.Unmarshal(b, &doc); err != nil {
		t.Fatal(err)
	}
	var problems []string
	report := func(prefix string) func(string, string) {
		return func(f, m string) { problems = append(problems, prefix+f+": "+m) }
	}
	doc.Identity.SetDefaults()
	doc.Identity.Validate(report("identity."))
	for i := range doc.Identity.Providers {
		doc.Identity.Providers[i].SetDefaults()
		doc.Identity.Providers[i].Validate(report("identity.providers[]."))
	}
	doc.Access.SetDefaults()
	doc.Access.Validate(report("access."))
	CheckProviders(&doc.Access, doc.Identity.Names(), report("access."))
	e := &doc.Tunnels.WireGuard.Enrollment
	e.SetDefaults()
	e.Validate(report("enrollment."))
	if len(problems) > 0 {
		t.Fatalf("example config problems:\n%s", strings.Join(problems, "\n"))
	}
	a := doc.Access
	if len(a.Apps) != 1 || a.Apps[0].Audience != "wiki.corp.example" || a.SessionDuration.Hours() != 24 || len(a.Apps[0].Policies[0].Require) != 1 ||
		a.ServiceTokens[0].ClientSecretFile != "/etc/edgegw/ci-bot.secret" || e.KeyExpiry.Hours() != 720 || len(e.Policies) != 1 {
		t.Fatalf("decoded %+v / %+v", a, e)
	}
}
