package alert

import (
	"net/netip"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	good := func() Config {
		return Config{
			Rules:    []RuleConfig{{Name: "a", Prefixes: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/24")}, BitsPerSecond: 1}},
			Webhooks: []WebhookConfig{{URL: "https://hooks.example.net/x"}},
		}
	}
	for _, tc := range []struct {
		name string
		edit func(c *Config)
		want []string // "field: part of the message"
	}{
		{"good", func(c *Config) {}, nil},
		{"twice", func(c *Config) { c.Rules = append(c.Rules, c.Rules[0]) }, []string{"rules[1].name: \"a\" is already the name of rules[0]"}},
		{"short", func(c *Config) { c.Rules[0].Duration = 5 * time.Second }, []string{"rules[0]: alert rule \"a\": duration 5s"}},
		{"host bits", func(c *Config) { c.Rules[0].Prefixes[0] = netip.MustParsePrefix("10.0.0.1/24") }, []string{"rules[0].prefixes[0]: 10.0.0.1/24 has host bits set"}},
		{"no threshold", func(c *Config) { c.Rules[0].BitsPerSecond = 0 }, []string{"rules[0]: alert rule \"a\": no threshold"}},
		{"pagerduty", func(c *Config) { c.PagerDuty = []PagerDutyConfig{{URL: "mailto:x"}} }, []string{
			"pagerduty[0].routing_key_file: missing", "pagerduty[0].url: alert pagerduty: events URL \"mailto:x\" must be an http or https URL"}},
		{"email", func(c *Config) {
			c.Email = []EmailConfig{{Server: "smtp.example.net", From: "gw@example.net", To: []string{"noc@example.net"}, Username: "gw"}}
		}, []string{"email[0]: alert email: server \"smtp.example.net\" is not host:port", "email[0].password_file: username and password_file go together"}},
		{"email recipients", func(c *Config) { c.Email = []EmailConfig{{Server: "smtp.example.net:587", From: "gw@example.net"}} },
			[]string{"email[0]: alert email: no recipients"}},
		{"bad url", func(c *Config) { c.Webhooks[0].URL = "mailto:x@example.net" }, []string{"webhooks[0].url: alert webhook \"mailto:x@example.net\": must be an http or https URL"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			c := good()
			tc.edit(&c)
			c.SetDefaults()
			var got []string
			c.Validate(func(f, msg string) { got = append(got, f+": "+msg) })
			if len(got) != len(tc.want) {
				t.Fatalf("got %q, want %q", got, tc.want)
			}
			for i := range got {
				if !strings.HasPrefix(got[i], tc.want[i]) {
					t.Errorf("got %q, want %q…", got[i], tc.want[i])
				}
			}
		})
	}
	c := good()
	c.SetDefaults()
	if rs := c.AllRules(); len(rs) != 1 || rs[0].Duration != time.Minute {
		t.Errorf("rules %+v", rs)
	}
	secret := filepath.Join(t.TempDir(), "s")
	os.WriteFile(secret, []byte("hunter2\n"), 0o600)
	c.Webhooks[0].SecretFile = secret
	hs, err := c.LoadWebhooks()
	if err != nil || !slices.Equal(hs, []Webhook{{URL: c.Webhooks[0].URL, Secret: "hunter2"}}) {
		t.Errorf("webhooks %+v, %v", hs, err)
	}
	c.PagerDuty = []PagerDutyConfig{{RoutingKeyFile: secret}}
	if _, err := c.LoadPagerDuty("gw"); err == nil || !strings.Contains(err.Error(), "32 characters") {
		t.Errorf("a 7-character routing key: %v", err)
	}
	os.WriteFile(secret, []byte(strings.Repeat("k", 32)+"\n"), 0o600)
	if ps, err := c.LoadPagerDuty("gw"); err != nil || len(ps) != 1 || ps[0].Source != "gw" || ps[0].RoutingKey != strings.Repeat("k", 32) {
		t.Errorf("pagerduty %+v, %v", ps, err)
	}
	c.Email = []EmailConfig{{Server: "smtp.example.net:587", From: "gw@example.net", To: []string{"noc@example.net"}, Username: "gw", PasswordFile: secret, CAFile: secret}}
	if _, err := c.LoadEmail(); err == nil || !strings.Contains(err.Error(), "no PEM certificate") {
		t.Errorf("a CA file without certificates: %v", err)
	}
	c.Email[0].CAFile = ""
	if ms, err := c.LoadEmail(); err != nil || len(ms) != 1 || ms[0].Password != strings.Repeat("k", 32) || ms[0].TLS != nil {
		t.Errorf("email %+v, %v", ms, err)
	}
	c.Webhooks[0].SecretFile = secret + ".gone"
	if _, err := c.LoadWebhooks(); err == nil {
		t.Error("a missing secret file loaded")
	}
}
