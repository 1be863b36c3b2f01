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

	"github.com/miekg/dns"

	"github.com/edgegw/edgegw/access/acme/rfc2136"
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
	// the CA must reach on port 443); default both. dns-01 (through
	// RFC2136) is answered alone: it serves names the CA cannot reach,
	// and wildcards.
	Challenges []string `yaml:"challenges"`
	// HTTPListen is where http-01 is answered while a challenge is open
	// (the CA connects to port 80); default 0.0.0.0:80.
	HTTPListen string `yaml:"http_listen"`
	// RFC2136 is where dns-01 publishes its TXT records: a DNS UPDATE
	// (RFC 2136) to the zone's primary, signed with a TSIG key.
	RFC2136 *RFC2136 `yaml:"rfc2136"`
}

// RFC2136 is `access.acme.rfc2136:`, the zone dns-01 updates.
type RFC2136 struct {
	// Server is the zone's primary, host:port (port 53 by default).
	Server string `yaml:"server"`
	// Zone holds the names of the certificate (their _acme-challenge
	// records are added to it).
	Zone string `yaml:"zone"`
	// TSIGKeyName and TSIGAlgorithm name the key the server accepts
	// updates with; the algorithm defaults to hmac-sha256.
	TSIGKeyName   string `yaml:"tsig_key_name"`
	TSIGAlgorithm string `yaml:"tsig_algorithm"`
	// TSIGSecretFile holds the key's secret, base64, as tsig-keygen or
	// keymgr print it.
	TSIGSecretFile string `yaml:"tsig_secret_file" file:"secret"`
}

// Challenge names.
const (
	HTTP01    = "http-01"
	TLSALPN01 = "tls-alpn-01"
	DNS01     = "dns-01"
)

// Defaults.
const (
	DefaultDirectory  = "https://acme-v02.api.letsencrypt.org/directory"
	DefaultHTTPListen = "0.0.0.0:80"
	DefaultTSIG       = "hmac-sha256"
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
	if r := c.RFC2136; r != nil {
		if r.TSIGAlgorithm == "" {
			r.TSIGAlgorithm = DefaultTSIG
		}
		if _, _, err := net.SplitHostPort(r.Server); err != nil && r.Server != "" {
			r.Server = net.JoinHostPort(r.Server, "53")
		}
		r.Zone = strings.ToLower(strings.TrimSuffix(r.Zone, "."))
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
	dns01 := c.Uses(DNS01)
	seen := map[string]bool{}
	for i, d := range c.Domains {
		_, ipErr := netip.ParseAddr(d)
		host := d
		if dns01 {
			host = strings.TrimPrefix(d, "*.") // dns-01 proves wildcards
		}
		switch {
		case ipErr != nil && !domainRE.MatchString(host):
			report(fmt.Sprintf("domains[%d]", i), fmt.Sprintf("%q is not a host name such as wiki.corp.example or an IP address (wildcards need DNS-01)", d))
		case dns01 && ipErr == nil:
			report(fmt.Sprintf("domains[%d]", i), fmt.Sprintf("%q is an address: dns-01 proves names only (use http-01 or tls-alpn-01)", d))
		case dns01 && c.RFC2136 != nil && domainRE.MatchString(c.RFC2136.Zone) && host != c.RFC2136.Zone && !strings.HasSuffix(host, "."+c.RFC2136.Zone):
			report(fmt.Sprintf("domains[%d]", i), fmt.Sprintf("%q is outside rfc2136.zone %q, where dns-01 adds its records", d, c.RFC2136.Zone))
		case seen[d]:
			report(fmt.Sprintf("domains[%d]", i), fmt.Sprintf("%q is listed twice", d))
		}
		seen[d] = true
	}
	for i, ch := range c.Challenges {
		if ch != HTTP01 && ch != TLSALPN01 && ch != DNS01 {
			report(fmt.Sprintf("challenges[%d]", i), fmt.Sprintf("%q is not one of %s, %s, %s", ch, HTTP01, TLSALPN01, DNS01))
		}
	}
	switch {
	case dns01 && len(c.Challenges) > 1:
		// certmagic answers dns-01 exclusively once it is configured.
		report("challenges", fmt.Sprintf("%s is answered alone: drop %s and %s", DNS01, HTTP01, TLSALPN01))
	case dns01 && c.RFC2136 == nil:
		report("rfc2136", "missing: dns-01 needs the zone to update (server, zone, tsig_key_name, tsig_secret_file)")
	case !dns01 && c.RFC2136 != nil:
		report("rfc2136", fmt.Sprintf("set, but %s is not among challenges: it would not be used", DNS01))
	}
	if r := c.RFC2136; r != nil {
		r.validate(func(f, m string) { report("rfc2136."+f, m) })
	}
	if c.Uses(HTTP01) {
		if _, _, err := net.SplitHostPort(c.HTTPListen); err != nil {
			report("http_listen", fmt.Sprintf("%q is not host:port, such as %s", c.HTTPListen, DefaultHTTPListen))
		}
	}
}

func (r *RFC2136) validate(report func(field, msg string)) {
	if host, port, err := net.SplitHostPort(r.Server); err != nil || host == "" || port == "" {
		report("server", fmt.Sprintf("%q is not the primary's address, such as 192.0.2.53 or ns1.corp.example:53", r.Server))
	}
	if r.Zone == "" || !domainRE.MatchString(r.Zone) {
		report("zone", fmt.Sprintf("%q is not a zone name such as corp.example", r.Zone))
	}
	if _, ok := dns.IsDomainName(r.TSIGKeyName); !ok || r.TSIGKeyName == "" {
		report("tsig_key_name", fmt.Sprintf("%q is not a key name such as edgegw-acme (as in the server's key statement)", r.TSIGKeyName))
	}
	if _, ok := rfc2136.Algorithms[r.TSIGAlgorithm]; !ok {
		report("tsig_algorithm", fmt.Sprintf("%q is not one of hmac-sha1, hmac-sha224, hmac-sha256, hmac-sha384, hmac-sha512", r.TSIGAlgorithm))
	}
	if r.TSIGSecretFile == "" {
		report("tsig_secret_file", "missing: expected the file holding the key's secret (base64)")
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
	if c.RFC2136 != nil {
		r := *c.RFC2136
		n.RFC2136 = &r
	}
	return &n
}

// Plan is a checked Config with its files read (the CA bundle); it starts
// nothing. [New] runs it.
type Plan struct {
	cfg   Config
	roots *x509.CertPool    // nil: the system roots
	dns   *rfc2136.Provider // nil: no dns-01
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
	if r := cfg.RFC2136; r != nil {
		b, err := os.ReadFile(r.TSIGSecretFile)
		if err != nil {
			return nil, fmt.Errorf("access.acme.rfc2136.tsig_secret_file: %w", err)
		}
		p.dns = &rfc2136.Provider{
			Server: r.Server, Zone: r.Zone, KeyName: r.TSIGKeyName, Algorithm: r.TSIGAlgorithm,
			Secret: strings.TrimSpace(string(b)),
		}
		if err := p.dns.Check(); err != nil {
			return nil, fmt.Errorf("access.acme.rfc2136 (secret in %s): %w", r.TSIGSecretFile, err)
		}
	}
	return p, nil
}

// Config is what the plan was compiled from.
func (p *Plan) Config() Config { return *p.cfg.Clone() }
