package access

import (
	"fmt"
	"net"
	"net/mail"
	"net/url"
	"reflect"
	"regexp"
	"slices"
	"strings"
	"time"
	"unicode"

	"github.com/edgegw/edgegw/access/acme"
	"github.com/edgegw/edgegw/access/policy"
)

// Config is the `access:` section.
type Config struct {
	Listen          string         `yaml:"listen"` // host:port; default 0.0.0.0:443
	TLS             TLSConfig      `yaml:"tls"`
	ACME            *acme.Config   `yaml:"acme"`             // nil: the certificate of tls, or a self-signed one
	SessionDuration time.Duration  `yaml:"session_duration"` // default 24h
	Signing         SigningConfig  `yaml:"signing"`
	Apps            []App          `yaml:"apps"`
	ServiceTokens   []ServiceToken `yaml:"service_tokens"`

	// CookieKeyFile holds the key sealing session cookies: 32 random bytes
	// or their base64. An HA pair gives both nodes the same file, so a
	// session cookie from one node opens on the other. Default: a key the
	// node makes in <state_dir>/access/cookie.key.
	CookieKeyFile string `yaml:"cookie_key_file" file:"secret"`
	// SigningKeyFile holds the assertion signing key, a PEM EC P-256 or
	// RSA private key; its kid comes from the public key, so both nodes of
	// a pair publish the same JWKS. The node never rotates it: the admin
	// replaces the file on both nodes and reloads, and the previous key
	// stays published for signing.grace. Default: keys the node makes and
	// rotates in <state_dir>/access.
	SigningKeyFile string `yaml:"signing_key_file" file:"secret"`
}

// TLSConfig names the listener's certificate. With neither file given a
// self-signed certificate for the apps' domains is made in the state dir.
// ClientCAFile turns on client certificates (mTLS) for the certificate and
// common_name selectors; a certificate is asked for, not required.
type TLSConfig struct {
	CertFile     string `yaml:"cert_file" file:"read"`
	KeyFile      string `yaml:"key_file" file:"secret"`
	ClientCAFile string `yaml:"client_ca_file" file:"read"`
}

// SigningConfig is how edgegw signs the assertion it sends upstream.
type SigningConfig struct {
	Algorithm string        `yaml:"algorithm"` // ES256 (default) or RS256
	Issuer    string        `yaml:"issuer"`    // iss claim; default "edgegw-access"
	Rotation  time.Duration `yaml:"rotation"`  // new key after this; default 1008h (6 weeks)
	Grace     time.Duration `yaml:"grace"`     // the previous key stays published; default 168h
}

// App is one self-hosted application behind the proxy.
type App struct {
	Name            string          `yaml:"name"`
	Domain          string          `yaml:"domain"`           // host name the app is served on
	Upstream        string          `yaml:"upstream"`         // http(s)://host:port of the origin
	Audience        string          `yaml:"audience"`         // aud of its tokens; default the domain
	Providers       []string        `yaml:"providers"`        // restrict logins to these identity providers; default all
	SessionDuration time.Duration   `yaml:"session_duration"` // default the section's
	Policies        []policy.Policy `yaml:"policies"`
}

// ServiceToken is a machine credential: a client id sent in clear and a
// secret read from a file.
type ServiceToken struct {
	Name             string `yaml:"name"`
	ClientID         string `yaml:"client_id"`
	ClientSecretFile string `yaml:"client_secret_file" file:"secret"`
}

// EnrollmentConfig is `tunnels.wireguard.enrollment:`: who may enroll a
// device, with Access policy semantics.
type EnrollmentConfig struct {
	Enabled   bool            `yaml:"enabled"`
	KeyExpiry time.Duration   `yaml:"key_expiry"` // default 720h
	Policies  []policy.Policy `yaml:"policies"`
	// GatewayName is shown to users approving a device; default the
	// host name.
	GatewayName string `yaml:"gateway_name"`
	// URL is the public address of the enrollment pages, such as
	// https://gw.corp.example: the console's enrollment link and QR code
	// name it. Default: the host name the console was reached by, on the
	// Access listener's port (which is wrong when admins use an address
	// users cannot reach).
	URL string `yaml:"url"`
	// RequireGatewayGrant (default true) enrolls only through device
	// grants the gateway started itself; false also accepts an ID token
	// a client obtained by itself (older edgegw enroll), which a phished
	// device code can produce.
	RequireGatewayGrant *bool `yaml:"require_gateway_grant"`
	// MaxDevicesPerUser refuses more usable devices per user; 0: no limit.
	MaxDevicesPerUser int `yaml:"max_devices_per_user"`
	// NotifyURL receives a JSON POST for every enrolled device.
	NotifyURL string `yaml:"notify_url"`
	// Approval is "none" (default) or "admin": new devices wait, pending,
	// until an admin approves them with the devices API.
	Approval string `yaml:"approval"`
	// NotifyEmail mails every enrolled device to the admins and the user.
	NotifyEmail *EnrollmentMail `yaml:"notify_email"`
}

// EnrollmentMail is `tunnels.wireguard.enrollment.notify_email:`. The
// gateway always upgrades to STARTTLS and verifies the server.
type EnrollmentMail struct {
	Server string   `yaml:"server"` // host:port, e.g. smtp.corp.example:587
	From   string   `yaml:"from"`
	Admins []string `yaml:"admins"`
	// User (default true) also mails the user the device enrolled for.
	User         *bool  `yaml:"user"`
	Username     string `yaml:"username"`
	PasswordFile string `yaml:"password_file" file:"secret"`
	// CAFile holds the PEM roots of the server's certificate (a private
	// CA); "": the system's.
	CAFile string `yaml:"ca_file" file:"read"`
}

// TellUser tells whether the device's user is mailed too.
func (m *EnrollmentMail) TellUser() bool { return m.User == nil || *m.User }

// GatewayGrantRequired tells whether only gateway-started grants enroll.
func (e *EnrollmentConfig) GatewayGrantRequired() bool {
	return e.RequireGatewayGrant == nil || *e.RequireGatewayGrant
}

// Defaults.
const (
	DefaultListen          = "0.0.0.0:443"
	DefaultSessionDuration = 24 * time.Hour
	DefaultIssuer          = "edgegw-access"
	DefaultRotation        = 6 * 7 * 24 * time.Hour
	DefaultGrace           = 7 * 24 * time.Hour
	DefaultKeyExpiry       = 30 * 24 * time.Hour
	maxSessionDuration     = 31 * 24 * time.Hour
)

var (
	appNameRE = regexp.MustCompile(`^[a-z0-9][a-z0-9_-]{0,62}$`)
	domainRE  = regexp.MustCompile(`^([a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?\.)*[a-z0-9]([a-z0-9-]{0,61}[a-z0-9])?$`)
)

// SetDefaults applies the defaults.
func (c *Config) SetDefaults() {
	if c.Listen == "" {
		c.Listen = DefaultListen
	}
	if c.SessionDuration == 0 {
		c.SessionDuration = DefaultSessionDuration
	}
	if c.Signing.Algorithm == "" {
		c.Signing.Algorithm = "ES256"
	}
	if c.Signing.Issuer == "" {
		c.Signing.Issuer = DefaultIssuer
	}
	if c.Signing.Rotation == 0 {
		c.Signing.Rotation = DefaultRotation
	}
	if c.Signing.Grace == 0 {
		c.Signing.Grace = DefaultGrace
	}
	for i := range c.Apps {
		a := &c.Apps[i]
		a.Domain = strings.ToLower(strings.TrimSuffix(a.Domain, "."))
		if a.Audience == "" {
			a.Audience = a.Domain
		}
		if a.SessionDuration == 0 {
			a.SessionDuration = c.SessionDuration
		}
	}
	if c.ACME != nil {
		var domains []string
		for _, a := range c.Apps {
			domains = append(domains, a.Domain)
		}
		c.ACME.SetDefaults(domains)
	}
}

// Validate reports every problem of the section, naming app and policy.
func (c *Config) Validate(report func(field, msg string)) {
	if _, _, err := net.SplitHostPort(c.Listen); err != nil {
		report("listen", fmt.Sprintf("%q is not host:port, such as 0.0.0.0:443", c.Listen))
	}
	if (c.TLS.CertFile == "") != (c.TLS.KeyFile == "") {
		report("tls", "cert_file and key_file go together: give both, or neither for a self-signed certificate")
	}
	if c.ACME != nil {
		c.ACME.Validate(func(field, msg string) { report("acme."+field, msg) })
	}
	if c.SessionDuration < time.Minute || c.SessionDuration > maxSessionDuration {
		report("session_duration", "expected a duration between 1m and 744h")
	}
	switch c.Signing.Algorithm {
	case "ES256", "RS256":
	default:
		report("signing.algorithm", fmt.Sprintf("%q is not one of ES256, RS256", c.Signing.Algorithm))
	}
	if c.CookieKeyFile != "" && c.CookieKeyFile == c.SigningKeyFile {
		report("cookie_key_file", "is also signing_key_file: the cookie key and the signing key are different secrets in different files")
	}
	if c.Signing.Rotation < time.Hour {
		report("signing.rotation", "expected a duration of at least 1h")
	}
	if c.Signing.Grace < time.Minute {
		report("signing.grace", "expected a duration of at least 1m")
	}
	tokens := map[string]bool{}
	ids := map[string]bool{}
	for i, t := range c.ServiceTokens {
		f := fmt.Sprintf("service_tokens[%d]", i)
		switch {
		case t.Name == "":
			report(f+".name", "missing: every service token needs a name")
		case tokens[t.Name]:
			report(f+".name", fmt.Sprintf("%q is used by an earlier service token", t.Name))
		}
		tokens[t.Name] = true
		switch {
		case t.ClientID == "":
			report(f+".client_id", "missing: expected the client id clients send")
		case ids[t.ClientID]:
			report(f+".client_id", "is used by an earlier service token")
		}
		ids[t.ClientID] = true
		if t.ClientSecretFile == "" {
			report(f+".client_secret_file", "missing: expected the file holding the secret")
		}
	}
	names, domains := map[string]bool{}, map[string]bool{}
	for i, a := range c.Apps {
		f := fmt.Sprintf("apps[%d]", i)
		where := fmt.Sprintf(" (app %q)", a.Name)
		switch {
		case a.Name == "":
			report(f+".name", "missing: every app needs a name")
		case !appNameRE.MatchString(a.Name):
			report(f+".name", fmt.Sprintf("%q is not a name of lower-case letters, digits, - and _", a.Name))
		case names[a.Name]:
			report(f+".name", fmt.Sprintf("%q is used by an earlier app", a.Name))
		}
		names[a.Name] = true
		switch {
		case a.Domain == "":
			report(f+".domain", "missing: expected the host name the app is served on"+where)
		case !domainRE.MatchString(a.Domain):
			report(f+".domain", fmt.Sprintf("%q is not a host name such as wiki.corp.example%s", a.Domain, where))
		case domains[a.Domain]:
			report(f+".domain", fmt.Sprintf("%q is served by an earlier app%s", a.Domain, where))
		}
		domains[a.Domain] = true
		if msg := checkUpstream(a.Upstream); msg != "" {
			report(f+".upstream", msg+where)
		}
		if a.SessionDuration < 0 || a.SessionDuration > maxSessionDuration {
			report(f+".session_duration", "expected a duration up to 744h"+where)
		}
		checkPolicies(f+".policies", a.Policies, tokens, where, report)
		if len(a.Policies) == 0 {
			report(f+".policies", "missing: an app without policies denies everyone"+where)
		}
	}
}

func checkPolicies(prefix string, ps []policy.Policy, tokens map[string]bool, where string, report func(field, msg string)) {
	seen := map[string]bool{}
	for j, p := range ps {
		pf := fmt.Sprintf("%s[%d]", prefix, j)
		at := fmt.Sprintf("%s, policy %q)", strings.TrimSuffix(where, ")"), p.Name)
		if where == "" {
			at = fmt.Sprintf(" (policy %q)", p.Name)
		}
		if p.Name != "" && seen[p.Name] {
			report(pf+".name", fmt.Sprintf("%q is used by an earlier policy%s", p.Name, where))
		}
		seen[p.Name] = true
		p.Check(tokens, func(field, msg string) { report(pf+"."+field, msg+at) })
	}
}

func checkUpstream(s string) string {
	if s == "" {
		return "missing: expected the origin's URL, such as http://10.0.0.5:8080"
	}
	u, err := url.Parse(s)
	if err != nil || (u.Scheme != "http" && u.Scheme != "https") || u.Host == "" || u.User != nil || u.RawQuery != "" || u.Fragment != "" {
		return fmt.Sprintf("%q is not an origin URL such as http://10.0.0.5:8080", s)
	}
	return ""
}

// CheckProviders reports apps that restrict logins to providers missing
// from identity.providers; providers are the names defined there.
func CheckProviders(c *Config, providers []string, report func(field, msg string)) {
	for i, a := range c.Apps {
		for j, p := range a.Providers {
			if !slices.Contains(providers, p) {
				report(fmt.Sprintf("apps[%d].providers[%d]", i, j), fmt.Sprintf("%q is not a provider in identity.providers (app %q)", p, a.Name))
			}
		}
		if len(providers) == 0 && len(a.Policies) > 0 {
			for _, p := range a.Policies {
				if p.Action == policy.Allow || p.Action == policy.Block {
					report(fmt.Sprintf("apps[%d]", i), fmt.Sprintf("app %q has allow/block policies but identity.providers is empty, so nobody can log in", a.Name))
					break
				}
			}
		}
	}
}

// SetDefaults applies the enrollment defaults.
func (e *EnrollmentConfig) SetDefaults() {
	if e.KeyExpiry == 0 {
		e.KeyExpiry = DefaultKeyExpiry
	}
}

// Validate checks the enrollment section.
func (e *EnrollmentConfig) Validate(report func(field, msg string)) {
	if e.KeyExpiry < time.Hour {
		report("key_expiry", "expected a duration of at least 1h")
	}
	if n := len([]rune(e.GatewayName)); n > 64 || strings.ContainsFunc(e.GatewayName, unicode.IsControl) {
		report("gateway_name", "expected at most 64 characters without control characters")
	}
	if e.URL != "" {
		if u, err := url.Parse(e.URL); err != nil || u.Scheme != "https" || u.Host == "" || u.User != nil ||
			(u.Path != "" && u.Path != "/") || u.RawQuery != "" || u.Fragment != "" {
			report("url", fmt.Sprintf("%q is not an https URL of a host, such as https://gw.corp.example or https://gw.corp.example:8443", e.URL))
		}
	}
	if e.Approval != "" && e.Approval != "none" && e.Approval != "admin" {
		report("approval", fmt.Sprintf("%q: expected none or admin", e.Approval))
	}
	if e.MaxDevicesPerUser < 0 {
		report("max_devices_per_user", "expected 0 (no limit) or a positive number")
	}
	if e.NotifyURL != "" {
		if u, err := url.Parse(e.NotifyURL); err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
			report("notify_url", fmt.Sprintf("%q is not an http(s) URL such as https://hooks.corp.example/edgegw", e.NotifyURL))
		}
	}
	if m := e.NotifyEmail; m != nil {
		if err := enrollMailCheck(m); err != nil {
			report("notify_email", err.Error())
		}
		if (m.Username == "") != (m.PasswordFile == "") {
			report("notify_email.password_file", "username and password_file go together")
		}
	}
	if e.Enabled && len(e.Policies) == 0 {
		report("policies", "missing: enrollment is enabled but no policy says who may enroll")
	}
	checkPolicies("policies", e.Policies, nil, "", report)
	for i, p := range e.Policies {
		if p.Action == policy.Bypass {
			report(fmt.Sprintf("policies[%d].action", i), fmt.Sprintf("bypass is meaningless for enrollment, which always needs a login (policy %q)", p.Name))
		}
		if policy.UsesPosture([]policy.Policy{p}) {
			// The client reports posture through the tunnel it gets by
			// enrolling: a device being enrolled has none to judge. The
			// gate is posture: itself, which quarantines a new device
			// whose first report fails or does not come within grace.
			report(fmt.Sprintf("policies[%d]", i), fmt.Sprintf("a posture selector cannot decide enrollment: a device reports its posture only once enrolled; posture: rules quarantine a new device until its first report passes (policy %q)", p.Name))
		}
	}
}

// Compile compiles the enrollment policies for evaluation.
func (e *EnrollmentConfig) Compile() (*policy.Set, error) { return policy.Compile(e.Policies) }

// Equal reports whether two configs are the same.
func (c *Config) Equal(o *Config) bool { return reflect.DeepEqual(c, o) }

// Clone returns a deep copy of c.
func (c *Config) Clone() Config {
	n := *c
	n.ServiceTokens = slices.Clone(c.ServiceTokens)
	n.ACME = c.ACME.Clone()
	n.Apps = slices.Clone(c.Apps)
	for i := range n.Apps {
		n.Apps[i].Providers = slices.Clone(n.Apps[i].Providers)
		n.Apps[i].Policies = clonePolicies(n.Apps[i].Policies)
	}
	return n
}

func clonePolicies(ps []policy.Policy) []policy.Policy {
	ps = slices.Clone(ps)
	for i := range ps {
		ps[i].Include = cloneSelectors(ps[i].Include)
		ps[i].Require = cloneSelectors(ps[i].Require)
		ps[i].Exclude = cloneSelectors(ps[i].Exclude)
	}
	return ps
}

func cloneSelectors(ss []policy.Selector) []policy.Selector {
	ss = slices.Clone(ss)
	for i := range ss {
		s := &ss[i]
		if s.Claim != nil {
			c := *s.Claim
			s.Claim = &c
		}
		for _, b := range []**bool{&s.Everyone, &s.AnyServiceToken, &s.Certificate, &s.Device} {
			if *b != nil {
				v := **b
				*b = &v
			}
		}
	}
	return ss
}

// enrollMailCheck checks the server and the addresses of notify_email.
func enrollMailCheck(m *EnrollmentMail) error {
	host, port, err := net.SplitHostPort(m.Server)
	if err != nil || host == "" || port == "" {
		return fmt.Errorf("server %q is not host:port, such as smtp.corp.example:587", m.Server)
	}
	if _, err := mail.ParseAddress(m.From); err != nil {
		return fmt.Errorf("from %q: %w", m.From, err)
	}
	if len(m.Admins) == 0 && !m.TellUser() {
		return fmt.Errorf("no recipients: name admins, or leave user on")
	}
	for _, a := range m.Admins {
		if _, err := mail.ParseAddress(a); err != nil {
			return fmt.Errorf("admin %q: %w", a, err)
		}
	}
	return nil
}
