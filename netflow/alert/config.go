package alert

import (
	"fmt"
	"net/netip"
	"os"
	"strings"
	"time"

	smtprelay "github.com/edgegw/edgegw/gateway/mail"
)

// Config is `netflow.alerts:`: volumetric rules and where their events go.
type Config struct {
	Rules    []RuleConfig    `yaml:"rules"`
	Webhooks []WebhookConfig `yaml:"webhooks"`
	// PagerDuty are services that get a trigger per alert and its resolve.
	PagerDuty []PagerDutyConfig `yaml:"pagerduty"`
	// Email are SMTP servers (always STARTTLS) that mail each event.
	Email []EmailConfig `yaml:"email"`
}

// EmailConfig is one SMTP destination (see Email).
type EmailConfig struct {
	Server       string   `yaml:"server"` // host:port, e.g. smtp.example.net:587
	From         string   `yaml:"from"`
	To           []string `yaml:"to"`
	Username     string   `yaml:"username"`                    // "": no authentication
	PasswordFile string   `yaml:"password_file" file:"secret"` // with username
	CAFile       string   `yaml:"ca_file" file:"read"`         // PEM roots for the server's certificate; "": the system's
}

// PagerDutyConfig is one PagerDuty service (see PagerDuty).
type PagerDutyConfig struct {
	// RoutingKeyFile holds the service's integration key.
	RoutingKeyFile string `yaml:"routing_key_file" file:"secret"`
	// URL is the Events API v2 endpoint; default DefaultPagerDutyURL.
	URL string `yaml:"url"`
}

// RuleConfig is one rule (see Rule).
type RuleConfig struct {
	Name             string         `yaml:"name"`
	Prefixes         []netip.Prefix `yaml:"prefixes"`
	BitsPerSecond    uint64         `yaml:"bits_per_second"`
	PacketsPerSecond uint64         `yaml:"packets_per_second"`
	Duration         time.Duration  `yaml:"duration"` // default 60s
	Sum              bool           `yaml:"sum"`
}

// WebhookConfig is one webhook (see Webhook).
type WebhookConfig struct {
	URL string `yaml:"url"`
	// SecretFile holds the value of the cf-webhook-auth header; empty: none.
	SecretFile string `yaml:"secret_file" file:"secret"`
}

// SetDefaults fills each rule's default duration.
func (c *Config) SetDefaults() {
	for i := range c.Rules {
		if c.Rules[i].Duration == 0 {
			c.Rules[i].Duration = time.Minute
		}
	}
}

// Validate checks the section; field names are relative to it.
func (c *Config) Validate(report func(field, msg string)) {
	seen := map[string]int{}
	for i := range c.Rules {
		rc := &c.Rules[i]
		f := fmt.Sprintf("rules[%d]", i)
		if j, ok := seen[rc.Name]; ok && rc.Name != "" {
			report(f+".name", fmt.Sprintf("%q is already the name of rules[%d]", rc.Name, j))
		}
		seen[rc.Name] = i
		r := rc.Rule()
		if err := r.Validate(); err != nil {
			report(f, err.Error())
		}
		for k, p := range rc.Prefixes {
			if p != p.Masked() {
				report(fmt.Sprintf("%s.prefixes[%d]", f, k), fmt.Sprintf("%v has host bits set; did you mean %v?", p, p.Masked()))
			}
		}
	}
	for i, pc := range c.PagerDuty {
		f := fmt.Sprintf("pagerduty[%d]", i)
		if pc.RoutingKeyFile == "" {
			report(f+".routing_key_file", "missing: the file holding the service's integration key")
		}
		p := PagerDuty{RoutingKey: strings.Repeat("k", 32), URL: pc.URL}
		if err := p.validate(); err != nil {
			report(f+".url", err.Error())
		}
	}
	for i, ec := range c.Email {
		f := fmt.Sprintf("email[%d]", i)
		m := Email{Server: ec.Server, From: ec.From, To: ec.To}
		if err := m.validate(); err != nil {
			report(f, err.Error())
		}
		if (ec.Username == "") != (ec.PasswordFile == "") {
			report(f+".password_file", "username and password_file go together")
		}
	}
	for i, w := range c.Webhooks {
		f := fmt.Sprintf("webhooks[%d]", i)
		h := Webhook{URL: w.URL}
		if err := h.validate(); err != nil {
			report(f+".url", err.Error())
		}
	}
}

// Rule is the rule the section describes.
func (rc *RuleConfig) Rule() Rule {
	return Rule{Name: rc.Name, Prefixes: rc.Prefixes, BitsPerSecond: rc.BitsPerSecond,
		PacketsPerSecond: rc.PacketsPerSecond, Duration: rc.Duration, Sum: rc.Sum}
}

// AllRules are the section's rules.
func (c *Config) AllRules() []Rule {
	rs := make([]Rule, len(c.Rules))
	for i := range c.Rules {
		rs[i] = c.Rules[i].Rule()
	}
	return rs
}

// LoadPagerDuty reads the PagerDuty services' key files; source names
// the gateway in their events.
func (c *Config) LoadPagerDuty(source string) ([]PagerDuty, error) {
	var ps []PagerDuty
	for _, pc := range c.PagerDuty {
		b, err := os.ReadFile(pc.RoutingKeyFile)
		if err != nil {
			return nil, fmt.Errorf("alert pagerduty: routing key: %w", err)
		}
		p := PagerDuty{RoutingKey: strings.TrimSpace(string(b)), URL: pc.URL, Source: source}
		if err := p.validate(); err != nil {
			return nil, fmt.Errorf("%s: %w", pc.RoutingKeyFile, err)
		}
		ps = append(ps, p)
	}
	return ps, nil
}

// LoadEmail reads the SMTP destinations' password and CA files.
func (c *Config) LoadEmail() ([]Email, error) {
	var ms []Email
	for _, ec := range c.Email {
		m := Email{Server: ec.Server, From: ec.From, To: ec.To, Username: ec.Username}
		if ec.PasswordFile != "" {
			b, err := os.ReadFile(ec.PasswordFile)
			if err != nil {
				return nil, fmt.Errorf("alert email %s: password: %w", ec.Server, err)
			}
			m.Password = strings.TrimRight(string(b), "\r\n")
		}
		if ec.CAFile != "" {
			cfg, err := smtprelay.LoadCA(ec.CAFile)
			if err != nil {
				return nil, fmt.Errorf("alert email %s: %w", ec.Server, err)
			}
			m.TLS = cfg
		}
		ms = append(ms, m)
	}
	return ms, nil
}

// LoadWebhooks reads the webhooks' secret files.
func (c *Config) LoadWebhooks() ([]Webhook, error) {
	var hs []Webhook
	for _, w := range c.Webhooks {
		h := Webhook{URL: w.URL}
		if w.SecretFile != "" {
			b, err := os.ReadFile(w.SecretFile)
			if err != nil {
				return nil, fmt.Errorf("alert webhook %s: secret: %w", w.URL, err)
			}
			h.Secret = strings.TrimSpace(string(b))
		}
		hs = append(hs, h)
	}
	return hs, nil
}
