// Package identity knows who is behind traffic: the `identity:`
// configuration (the user store and the OIDC providers), and the device
// registry: users' WireGuard devices, their keys and the addresses they
// were given, so that Access, the firewall, DNS and flow records can match
// on identity. It is a leaf that imports no subsystem.
//
// The registry (Open) keeps devices in SQLite in the state directory or in
// a PostgreSQL database that several appliances share. Its schema migrates
// forward on Open. Readers on hot paths use the immutable Snapshot of
// active devices, which Run keeps current by polling a generation counter
// every write bumps, so a revocation on one appliance reaches the others
// within about a second.
package identity

import (
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"regexp"
	"slices"
	"strings"
)

// Config is the `identity:` section.
type Config struct {
	Store     string     `yaml:"store"` // "sqlite" (default) or a postgres:// URL
	Providers []Provider `yaml:"providers"`
}

// Provider is one OIDC identity provider users may log in with.
type Provider struct {
	Name             string   `yaml:"name"`
	Issuer           string   `yaml:"issuer"`
	ClientID         string   `yaml:"client_id"`
	ClientSecretFile string   `yaml:"client_secret_file" file:"secret"` // empty: a public client (PKCE only)
	Scopes           []string `yaml:"scopes"`                           // default openid, email, profile
	GroupsClaim      string   `yaml:"groups_claim"`                     // default "groups"
	// DeviceClientID is the public (secret-less) client `edgegw enroll`
	// uses for the device authorization grant; empty: ClientID, which the
	// provider must then allow to use that grant without a secret.
	DeviceClientID string `yaml:"device_client_id"`
}

var nameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)

// SetDefaults applies the defaults.
func (c *Config) SetDefaults() {
	if c.Store == "" {
		c.Store = "sqlite"
	}
}

// Validate checks the section; provider fields are checked by Provider.
func (c *Config) Validate(report func(field, msg string)) {
	if c.Store != "sqlite" {
		u, err := url.Parse(c.Store)
		if err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") || u.Host == "" {
			report("store", fmt.Sprintf("%q is neither sqlite nor a postgres://user@host:5432/db URL", c.Store))
		}
	}
	seen := map[string]bool{}
	for i, p := range c.Providers {
		if p.Name != "" && seen[p.Name] {
			report(fmt.Sprintf("providers[%d].name", i), fmt.Sprintf("%q is used by an earlier provider", p.Name))
		}
		seen[p.Name] = true
	}
}

// Names lists the providers' names in order.
func (c *Config) Names() []string {
	out := make([]string, 0, len(c.Providers))
	for _, p := range c.Providers {
		out = append(out, p.Name)
	}
	return out
}

// SetDefaults applies the provider defaults.
func (p *Provider) SetDefaults() {
	if len(p.Scopes) == 0 {
		p.Scopes = []string{"openid", "email", "profile"}
	}
	if p.GroupsClaim == "" {
		p.GroupsClaim = "groups"
	}
}

// Validate checks one provider.
func (p *Provider) Validate(report func(field, msg string)) {
	switch {
	case p.Name == "":
		report("name", "missing: every provider needs a name")
	case !nameRE.MatchString(p.Name):
		report("name", fmt.Sprintf("%q is not a name of lower-case letters, digits, - and _", p.Name))
	}
	if msg := CheckIssuer(p.Issuer); msg != "" {
		report("issuer", msg)
	}
	if p.ClientID == "" {
		report("client_id", "missing: expected the client id registered at the provider")
	}
	if len(p.Scopes) > 0 && !slices.Contains(p.Scopes, "openid") {
		report("scopes", "must include openid")
	}
	for i, s := range p.Scopes {
		if s == "" || strings.ContainsAny(s, " \t\"") {
			report(fmt.Sprintf("scopes[%d]", i), fmt.Sprintf("%q is not a scope name", s))
		}
	}
}

// CheckIssuer returns "" for an acceptable issuer URL: https, or http on a
// loopback host (for tests and local providers), without query or fragment.
func CheckIssuer(issuer string) string {
	if issuer == "" {
		return "missing: expected the provider's issuer URL, such as https://sso.example.com"
	}
	u, err := url.Parse(issuer)
	if err != nil || u.Host == "" || u.RawQuery != "" || u.Fragment != "" || u.User != nil {
		return fmt.Sprintf("%q is not an issuer URL such as https://sso.example.com", issuer)
	}
	switch u.Scheme {
	case "https":
	case "http":
		if !isLoopback(u.Hostname()) {
			return fmt.Sprintf("%q must use https (plain http is allowed only for loopback hosts)", issuer)
		}
	default:
		return fmt.Sprintf("%q must use https", issuer)
	}
	return ""
}

func isLoopback(host string) bool {
	if strings.EqualFold(host, "localhost") || strings.HasSuffix(strings.ToLower(host), ".localhost") {
		return true
	}
	if a, err := netip.ParseAddr(host); err == nil {
		return a.Unmap().IsLoopback()
	}
	return net.ParseIP(host).IsLoopback()
}
