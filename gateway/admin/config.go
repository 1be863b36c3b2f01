package admin

import (
	"fmt"
	"net"
	"net/netip"
	"path/filepath"
	"regexp"
	"slices"
	"strings"
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
}

// TLS names the admin listener's certificate and key (PEM).
type TLS struct {
	CertFile string `yaml:"cert_file" file:"read"`
	KeyFile  string `yaml:"key_file" file:"secret"`
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
		if c.TLS.CertFile == "" {
			report("tls.cert_file", "missing: expected the listener's certificate (PEM)")
		}
		if c.TLS.KeyFile == "" {
			report("tls.key_file", "missing: expected the certificate's private key (PEM)")
		}
	}
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
