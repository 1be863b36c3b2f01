package acme

import (
	"crypto/x509"
	"fmt"
	"net"
	"net/netip"
	"net/url"
	"os"
	"regexp"
	"slices"
	"strings"
)

// Config is `access.acme:`: where the Access listener's certificate comes
// from when it is not a file. Without it the listener serves
// access.tls.cert_file, or a self-signed certificate.
type Config struct {
	// Directory is the ACME directory URL; default Let's Encrypt's
	// production directory. A private CA (step-ca, an enterprise ACME)
	// gives its own. Configuring the section agrees to the CA's terms of
	// service for the account it creates.
	Directory string `yaml:"directory"`
	// Email is the account's contact, for the CA's expiry warnings.
	Email string `yaml:"email"`
	// CAFile holds the PEM roots trusted for the directory's own HTTPS,
	// for a private CA; default the system roots.
	CAFile string `yaml:"ca_file" file:"read"`
	// Domains are the names on the certificate; default the Access apps'
	// domains. An IP address (RFC 8738) serves clients that reach the
	// gateway by address, such as `edgegw enroll https://192.0.2.1`, where
	// the CA issues for addresses.
	Domains []string `yaml:"domains"`
	// Challenges are the ACME challenges answered: http-01 (on
	// HTTPListen) and tls-alpn-01 (on the Access listener itself, which
	// the CA must reach on port 443); default both.
	Challenges []string `yaml:"challenges"`
	// HTTPListen is where http-01 is answered while a challenge is open
	// (the CA connects to port 80); default 0.0.0.0:80.
	HTTPListen string `yaml:"http_listen"`
}

// Challenge names.
const (
	HTTP01    = "http-01"
	TLSALPN01 = "tls-alpn-01"
)

// Defaults.
const (
	DefaultDirectory  = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultHTTPListen = "0.0.0.0:80"
)

var (
	domainRE = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)+[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
	emailRE  = regexp.MustCompile(`^[^@\s]+@[^@\s]+\.[^@\s]+$`)
)

// SetDefaults applies the defaults; appDomains are the Access apps'
// domains, the certificate's names when Domains is empty.
func (c *Config) SetDefaults(appDomains []string) {
	if c.Directory == "" {
		c.Directory = DefaultDirectory
	}
	if len(c.Domains) == 0 {
		c.Domains = slices.Clone(appDomains)
	}
	for i, d := range c.Domains {
		c.Domains[i] = strings.ToLower(strings.TrimSuffix(d, "."))
	}
	if len(c.Challenges) == 0 {
		c.Challenges = []string{HTTP01, TLSALPN01}
	}
	if c.HTTPListen == "" {
		c.HTTPListen = DefaultHTTPListen
	}
}

// Validate reports every problem of the section; fields are relative to
// it.
func (c *Config) Validate(report func(field, msg string)) {
	if u, err := url.Parse(c.Directory); err != nil || u.Scheme != "https" || u.Host == "" {
		report("directory", fmt.Sprintf("%q is not an https:// ACME directory URL such as %s", c.Directory, DefaultDirectory))
	}
	if c.Email != "" && !emailRE.MatchString(c.Email) {
		report("email", fmt.Sprintf("%q is not an email address", c.Email))
	}
	if len(c.Domains) == 0 {
		report("domains", "missing: no names to get a certificate for (give domains, or add Access apps)")
	}
	seen := map[string]bool{}
	for i, d := range c.Domains {
		_, ipErr := netip.ParseAddr(d)
		switch {
		case ipErr != nil && !domainRE.MatchString(d):
			// Wildcards need DNS-01, which this section does not do yet.
			report(fmt.Sprintf("domains[%d]", i), fmt.Sprintf("%q is not a host name such as wiki.corp.example or an IP address (wildcards need DNS-01)", d))
		case seen[d]:
			report(fmt.Sprintf("domains[%d]", i), fmt.Sprintf("%q is listed twice", d))
		}
		seen[d] = true
	}
	for i, ch := range c.Challenges {
		if ch != HTTP01 && ch != TLSALPN01 {
			report(fmt.Sprintf("challenges[%d]", i), fmt.Sprintf("%q is not one of %s, %s", ch, HTTP01, TLSALPN01))
		}
	}
	if c.Uses(HTTP01) {
		if _, _, err := net.SplitHostPort(c.HTTPListen); err != nil {
			report("http_listen", fmt.Sprintf("%q is not host:port, such as %s", c.HTTPListen, DefaultHTTPListen))
		}
	}
}

// Uses reports whether challenge ch is answered.
func (c *Config) Uses(ch string) bool { return slices.Contains(c.Challenges, ch) }

// Clone is a deep copy.
func (c *Config) Clone() *Config {
	if c == nil {
		return nil
	}
	n := *c
	n.Domains = slices.Clone(c.Domains)
	n.Challenges = slices.Clone(c.Challenges)
	return &n
}

// Plan is a checked Config with its files read (the CA bundle); it starts
// nothing. [New] runs it.
type Plan struct {
	cfg   Config
	roots *x509.CertPool // nil: the system roots
}

// Compile reads the files cfg names. cfg must have its defaults applied.
func Compile(cfg Config) (*Plan, error) {
	p := &Plan{cfg: *cfg.Clone()}
	if cfg.CAFile != "" {
		b, err := os.ReadFile(cfg.CAFile)
		if err != nil {
			return nil, fmt.Errorf("access.acme.ca_file: %w", err)
		}
		p.roots = x509.NewCertPool()
		if !p.roots.AppendCertsFromPEM(b) {
			return nil, fmt.Errorf("access.acme.ca_file %s: no PEM certificates", cfg.CAFile)
		}
	}
	return p, nil
}

// Config is what the plan was compiled from.
func (p *Plan) Config() Config { return *p.cfg.Clone() }
