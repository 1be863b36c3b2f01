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
	"time"
)

// Config is the `identity:` section.
type Config struct {
	Store string `yaml:"store"` // "sqlite" (default) or a postgres:// URL
	// StoreTLS is how a postgres store off this machine is reached:
	// "verify-full" (the default: the URL must say sslmode=verify-full, so
	// the server's certificate and name are checked) or "disable", which
	// accepts whatever sslmode the URL has and logs a warning at start.
	StoreTLS  string     `yaml:"store_tls"`
	Providers []Provider `yaml:"providers"`
	// MaxGroupAge, for providers without SCIM: a device's groups taken
	// longer ago than this at a sign-in (enrollment, renewal, an Access
	// login) are dropped until the user signs in again, so a user moved
	// out of a group at the provider loses it within this time. 0: groups
	// last until the device's key expires.
	MaxGroupAge time.Duration `yaml:"max_group_age"`
}

// StoreTLS values.
const (
	StoreTLSVerifyFull = "verify-full"
	StoreTLSDisable    = "disable"
)

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
			report("store", fmt.Sprintf("%q is neither sqlite nor a postgres://user@host:5432/db URL", redactURL(c.Store)))
		} else if msg := CheckStoreTLS(c.Store, c.StoreTLS); msg != "" {
			report("store", msg)
		}
	}
	if c.MaxGroupAge < 0 || (c.MaxGroupAge > 0 && c.MaxGroupAge < time.Minute) {
		report("max_group_age", fmt.Sprintf("%s: 0 (off) or at least 1m", c.MaxGroupAge))
	}
	switch c.StoreTLS {
	case "", StoreTLSVerifyFull, StoreTLSDisable:
	default:
		report("store_tls", fmt.Sprintf("%q is not verify-full or disable", c.StoreTLS))
	}
	seen := map[string]bool{}
	for i, p := range c.Providers {
		if p.Name != "" && seen[p.Name] {
			report(fmt.Sprintf("providers[%d].name", i), fmt.Sprintf("%q is used by an earlier provider", p.Name))
		}
		seen[p.Name] = true
	}
}

// pgHosts returns the hosts a postgres URL names (several for fail-over,
// and the host= parameter, which libpq and pgx prefer to the authority)
// and its sslmode ("" when unset).
func pgHosts(store string) (hosts []string, sslmode string, err error) {
	u, err := url.Parse(store)
	if err != nil {
		return nil, "", err
	}
	q := u.Query()
	sslmode = q.Get("sslmode")
	for _, h := range strings.Split(u.Host, ",") {
		if h == "" {
			continue
		}
		if host, _, err := net.SplitHostPort(h); err == nil {
			h = host
		}
		hosts = append(hosts, strings.Trim(h, "[]"))
	}
	if hp := q.Get("host"); hp != "" {
		hosts = nil
		for _, h := range strings.Split(hp, ",") {
			if h != "" {
				hosts = append(hosts, h)
			}
		}
	}
	return hosts, sslmode, nil
}

// offBox returns the first host of a postgres URL that is not on this
// machine (not loopback, not a Unix socket directory), or "".
func offBox(hosts []string) string {
	for _, h := range hosts {
		if !strings.HasPrefix(h, "/") && !isLoopback(h) {
			return h
		}
	}
	return ""
}

// CheckStoreTLS returns "" when a postgres store is reached safely: on
// this machine, or with sslmode=verify-full, or with TLS turned off on
// purpose (storeTLS "disable"). Device keys, users and revocations travel
// over this connection, so anything that can see or divert the traffic
// could read or forge them.
func CheckStoreTLS(store, storeTLS string) string {
	hosts, sslmode, err := pgHosts(store)
	if err != nil {
		return "not a valid postgres URL"
	}
	h := offBox(hosts)
	if h == "" || sslmode == "verify-full" || storeTLS == StoreTLSDisable {
		return ""
	}
	have := "no sslmode (pgx's default, prefer, neither requires nor verifies TLS)"
	if sslmode != "" {
		have = "sslmode=" + sslmode + ", which does not verify the server's certificate and name"
	}
	return fmt.Sprintf("the PostgreSQL server %s is not on this machine and the URL has %s: add sslmode=verify-full (and sslrootcert=/path/to/ca.pem unless the system roots sign its certificate), or set identity.store_tls: disable to accept an unverified connection", h, have)
}

// StoreUnverified returns the off-box host of a postgres store reached
// without verified TLS, or "" (also for sqlite): Open logs a warning for it.
func StoreUnverified(store string) string {
	if !strings.HasPrefix(store, "postgres://") && !strings.HasPrefix(store, "postgresql://") {
		return ""
	}
	hosts, sslmode, err := pgHosts(store)
	if err != nil || sslmode == "verify-full" {
		return ""
	}
	return offBox(hosts)
}

func redactURL(s string) string {
	u, err := url.Parse(s)
	if err != nil {
		return "(unparsable URL)"
	}
	return u.Redacted()
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
