package admin

import (
	"fmt"
	"net"
	"net/netip"
	"os"
	"path/filepath"
	"regexp"
	"slices"
	"strings"

	"github.com/edgegw/edgegw/access/identity"
	accesspolicy "github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/gateway/console"
)

// DefaultSocket is where the admin socket is bound unless admin.socket says
// otherwise, and where the CLI looks for it.
const DefaultSocket = "/run/edgegw/admin.sock"

// DefaultListen is the TCP listener's default address: loopback, so that
// /healthz and /readyz answer the appliance's own health check and nothing
// else reaches it.
const DefaultListen = "127.0.0.1:9100"

// Config is the `admin:` section.
type Config struct {
	// Listen is the TCP listener (HOST:PORT). /healthz and /readyz are
	// open on it, /api/* needs a token, /metrics is open only on loopback
	// unless Metrics opens it. Any address but loopback needs TLS.
	Listen string `yaml:"listen"`
	// Socket is the Unix socket the edgegw CLI on the box uses: mode 0600,
	// in a directory of mode 0700, and only uid 0 is served on it.
	Socket string `yaml:"socket"`
	// TLS is the listener's certificate; required on a non-loopback
	// address.
	TLS *TLS `yaml:"tls"`
	// Hosts are the names, besides the listener's own address and
	// localhost, that requests may carry in their Host header (what a
	// remote admin or a scraper types in its URL). Anything else is
	// refused, so that a web page cannot reach the API by rebinding a
	// name of its own to the listener's address.
	Hosts []string `yaml:"hosts"`
	// Metrics opens /metrics on a non-loopback listener to a scraper.
	Metrics Metrics `yaml:"metrics"`
	// OIDC turns on single sign-on for the console through one of
	// identity.providers; Policies then decide who may use it and as
	// which role. Token logins keep working (break-glass).
	OIDC *OIDC `yaml:"oidc"`
	// Policies are Access policies (first match wins, block denies, no
	// match denies) over the signed-in user and the browser's address,
	// each allow policy with the role it grants.
	Policies []RolePolicy `yaml:"policies"`
}

// OIDC names the identity provider the console signs users in with.
type OIDC struct {
	// Provider is the name of one of identity.providers. Its redirect
	// URI must allow https://HOST:PORT/console/oidc/callback for every
	// name operators use in the URL (admin.hosts).
	Provider string `yaml:"provider"`
	// IdP is that provider, resolved by the configuration loader.
	IdP *identity.Provider `yaml:"-"`
}

// RolePolicy is an Access policy that grants a console role.
type RolePolicy struct {
	accesspolicy.Policy `yaml:",inline"`
	// Role is admin or viewer for an allow policy; a block policy has
	// none.
	Role string `yaml:"role"`
}

// TLS names the admin listener's certificate and key (PEM).
type TLS struct {
	CertFile string `yaml:"cert_file" file:"read"`
	KeyFile  string `yaml:"key_file" file:"secret"`
	// ACME serves the gateway's ACME certificate (access.acme) for the
	// names of admin.hosts among access.acme.domains; cert_file stays the
	// fallback, served until ACME has a certificate and whenever it fails.
	// Without cert_file and key_file the fallback is a self-signed
	// certificate for admin.hosts, kept in <state_dir>/admin.
	ACME bool `yaml:"acme"`
}

// Metrics says who may scrape /metrics on a listener that is not on
// loopback (on loopback it is always open): a bearer token of any role
// when Token is set, and any source address inside Allow without one.
type Metrics struct {
	Token bool           `yaml:"token"`
	Allow []netip.Prefix `yaml:"allow"`
}

// SetDefaults binds the listener to loopback and the socket under /run.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.Socket == "" {
		c.Socket = DefaultSocket
	}
}

var hostRE = regexp.MustCompile(`^(?i:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?)(\.(?i:[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?))*$`)

// Validate checks the section. A listener that other hosts can reach
// without TLS is refused: its bearer tokens would cross the network in
// the clear.
func (c *Config) Validate(report func(field, msg string)) {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		report("listen", fmt.Sprintf("%q: expected HOST:PORT such as 127.0.0.1:9100", c.Listen))
	} else if !Loopback(c.Listen) && c.TLS == nil {
		report("listen", fmt.Sprintf("%q is not a loopback address: other hosts could reach the admin API, so it needs admin.tls (cert_file, key_file) and clients need tokens (edgegw admin token create); use 127.0.0.1:9100 for the local health check only", c.Listen))
	}
	if !filepath.IsAbs(c.Socket) || filepath.Clean(c.Socket) != c.Socket {
		report("socket", fmt.Sprintf("%q: expected a clean absolute path such as %s", c.Socket, DefaultSocket))
	} else if len(c.Socket) > 107 {
		report("socket", fmt.Sprintf("%q is longer than a Unix socket path may be (107 bytes)", c.Socket))
	} else if sharedDir(filepath.Dir(c.Socket)) {
		report("socket", fmt.Sprintf("%q: the socket needs a directory of its own, which edgegw keeps at mode 0700, such as %s", c.Socket, DefaultSocket))
	}
	if c.TLS != nil {
		switch {
		case c.TLS.CertFile == "" && c.TLS.KeyFile == "" && c.TLS.ACME:
			// A self-signed fallback until ACME has a certificate.
		case c.TLS.CertFile == "":
			report("tls.cert_file", "missing: expected the listener's certificate (PEM) (or acme: true, with a self-signed certificate until ACME has one)")
		case c.TLS.KeyFile == "":
			report("tls.key_file", "missing: expected the certificate's private key (PEM)")
		}
		if c.TLS.CertFile == "" && c.TLS.KeyFile != "" {
			report("tls.key_file", "set without cert_file: name both, or neither with acme: true")
		}
	}
	c.validateConsole(report)
	for i, h := range c.Hosts {
		if !hostRE.MatchString(strings.TrimSuffix(h, ".")) || len(h) > 253 {
			report(fmt.Sprintf("hosts[%d]", i), fmt.Sprintf("%q is not a host name (no port, no scheme, no wildcard)", h))
		}
	}
}

// sharedDir reports whether dir is a system directory other programs use,
// which edgegw must not take to mode 0700.
func sharedDir(dir string) bool {
	return slices.Contains([]string{"/", "/run", "/var/run", "/tmp", "/var/tmp", "/dev/shm", "/var", "/etc", "/root"}, dir)
}

// Loopback reports whether a HOST:PORT listen address is reachable only
// from this machine: a loopback IP or "localhost". An empty host, an
// unspecified address or any other name is not.
func Loopback(listen string) bool {
	host, _, err := net.SplitHostPort(listen)
	if err != nil {
		return false
	}
	if strings.EqualFold(host, "localhost") {
		return true
	}
	a, err := netip.ParseAddr(host)
	return err == nil && a.Unmap().IsLoopback()
}

// hostAllowed reports whether a request's Host header names this
// listener: an IP literal equal to the address the connection arrived on
// (or any loopback address on a loopback listener), localhost, or one of
// the configured names. A DNS-rebinding page can only send a name of its
// own, which is none of these.
func hostAllowed(hostHeader string, local netip.Addr, names []string) bool {
	host := hostHeader
	if h, _, err := net.SplitHostPort(hostHeader); err == nil {
		host = h
	} else if strings.HasPrefix(host, "[") && strings.HasSuffix(host, "]") {
		host = host[1 : len(host)-1]
	}
	if host == "" {
		return false
	}
	if a, err := netip.ParseAddr(host); err == nil {
		if a.Zone() != "" {
			return false
		}
		a = a.Unmap()
		return a == local.Unmap() || (local.Unmap().IsLoopback() && a.IsLoopback())
	}
	host = strings.ToLower(strings.TrimSuffix(host, "."))
	if host == "localhost" {
		return true
	}
	return slices.ContainsFunc(names, func(n string) bool {
		return strings.ToLower(strings.TrimSuffix(n, ".")) == host
	})
}

// validateConsole checks admin.oidc and admin.policies: both or neither;
// only allow and block policies, each allow with a role; selectors the
// console can judge (identity ones, ip, everyone).
func (c *Config) validateConsole(report func(field, msg string)) {
	if c.OIDC != nil && c.OIDC.Provider == "" {
		report("oidc.provider", "missing: expected the name of one of identity.providers")
	}
	if c.OIDC != nil && len(c.Policies) == 0 {
		report("policies", "missing: single sign-on needs policies that say who is an admin and who a viewer")
	}
	if c.OIDC == nil && len(c.Policies) > 0 {
		report("policies", "set without admin.oidc: they judge users signed in through the identity provider, so name it in admin.oidc.provider")
	}
	names := map[string]int{}
	for i, p := range c.Policies {
		f := fmt.Sprintf("policies[%d]", i)
		p.Check(map[string]bool{}, func(field, msg string) { report(f+"."+field, msg) })
		if j, ok := names[p.Name]; ok && p.Name != "" {
			report(f+".name", fmt.Sprintf("%q is the name of policies[%d]: the name says which role a sign-in got, so each must be unique", p.Name, j))
		}
		names[p.Name] = i
		switch p.Action {
		case accesspolicy.Allow:
			if !Role(p.Role).Valid() {
				report(f+".role", fmt.Sprintf("%q: an allow policy grants admin or viewer", p.Role))
			}
		case accesspolicy.Block:
			if p.Role != "" {
				report(f+".role", "a block policy grants no role")
			}
		case accesspolicy.Bypass, accesspolicy.ServiceAuth:
			report(f+".action", fmt.Sprintf("%s: the console signs every user in; use allow or block", p.Action))
		}
		for _, l := range []struct {
			name string
			list []accesspolicy.Selector
		}{{"include", p.Include}, {"require", p.Require}, {"exclude", p.Exclude}} {
			for k, s := range l.list {
				if s.Kind() == accesspolicy.KindNetwork && s.IP == "" {
					report(fmt.Sprintf("%s.%s[%d]", f, l.name, k), fmt.Sprintf("%s: the console judges a signed-in user and the browser's address (ip), not %s", s.Key(), s.Key()))
				}
			}
		}
	}
}

// consoleOIDC builds the console's single sign-on from the section: the
// provider's client secret read, the policies compiled. nil when off.
func consoleOIDC(c Config) (*console.OIDC, error) {
	if c.OIDC == nil {
		return nil, nil
	}
	if c.OIDC.IdP == nil {
		return nil, fmt.Errorf("admin.oidc.provider %q: no such identity provider", c.OIDC.Provider)
	}
	p := c.OIDC.IdP
	o := &console.OIDC{
		Provider: p.Name, Issuer: p.Issuer, ClientID: p.ClientID, Scopes: p.Scopes, GroupsClaim: p.GroupsClaim,
		Roles: map[string]string{},
	}
	if len(o.Scopes) == 0 {
		o.Scopes = []string{"openid", "email", "profile"}
	}
	if o.GroupsClaim == "" {
		o.GroupsClaim = "groups"
	}
	if p.ClientSecretFile != "" {
		b, err := os.ReadFile(p.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("admin.oidc: the client secret of %q: %w", p.Name, err)
		}
		o.ClientSecret = strings.TrimSpace(string(b))
	}
	ps := make([]accesspolicy.Policy, len(c.Policies))
	for i, rp := range c.Policies {
		ps[i] = rp.Policy
		if rp.Action == accesspolicy.Allow {
			o.Roles[rp.Name] = rp.Role
		}
	}
	set, err := accesspolicy.Compile(ps)
	if err != nil {
		return nil, fmt.Errorf("admin.policies: %w", err)
	}
	o.Policies, o.Claims = set, accesspolicy.Claims(ps)
	return o, nil
}
