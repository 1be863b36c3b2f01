package firewall

import (
	"fmt"
	"net/netip"
	"path"
	"regexp"
	"slices"
	"strings"
)

// EgressConfig is the `firewall.egress:` section: the addresses traffic
// may leave from, each with where it is (published as an RFC 8805
// geofeed), and ordered policies in the rules language that choose one by
// identity, source, destination and port.
type EgressConfig struct {
	Addresses []EgressAddress `yaml:"addresses"`
	Policies  []EgressPolicy  `yaml:"policies"`
	// GeofeedPath is the URL path at which the admin TCP listener serves
	// the geofeed without authentication (a geofeed URL, such as the one
	// an inetnum's geofeed: attribute names, must be public), for any
	// Host; empty: the geofeed is only written to
	// <state_dir>/egress/geofeed.csv.
	GeofeedPath string `yaml:"geofeed_path"`
}

// reservedPaths are the admin listener's own paths, which the geofeed may
// not shadow.
var reservedPaths = []string{"/api/", "/console/", "/metrics", "/healthz", "/readyz"}

// EgressAddress is one address forwarded traffic may leave from. It must
// be an address of Interface (the kernel answers for it there), or routed
// to the gateway by the uplink.
type EgressAddress struct {
	Name    string     `yaml:"name"`
	Address netip.Addr `yaml:"address"`
	// Interface is the WAN link the address leaves through; empty: the
	// gateway's WAN interface.
	Interface string `yaml:"interface"`
	// Prefix is the range the geofeed publishes for this address;
	// default: the address alone (/32 or /128).
	Prefix netip.Prefix `yaml:"prefix"`
	// Country is the ISO 3166-1 alpha-2 code the address geolocates to.
	Country string `yaml:"country"`
	// Region is the ISO 3166-2 subdivision, such as US-CA; optional.
	Region string `yaml:"region"`
	// City is the city name; optional.
	City string `yaml:"city"`
}

// EgressPolicy chooses Egress for the traffic its expression matches.
// Policies are evaluated in order, the first match wins; traffic no
// policy matches is masqueraded to the WAN address as without policies.
type EgressPolicy struct {
	ID         string `yaml:"id"`
	Expression string `yaml:"expression"`
	Egress     string `yaml:"egress"` // the name of an address
}

var (
	egressName  = regexp.MustCompile(`^[a-z][a-z0-9_-]{0,31}$`)
	countryCode = regexp.MustCompile(`^[A-Z]{2}$`)
	regionCode  = regexp.MustCompile(`^[A-Z]{2}-[A-Z0-9]{1,3}$`)
)

// SetDefaults gives every address its own host prefix for the geofeed.
func (c *EgressConfig) SetDefaults() {
	for i := range c.Addresses {
		a := &c.Addresses[i]
		if !a.Prefix.IsValid() && a.Address.IsValid() {
			a.Prefix = netip.PrefixFrom(a.Address, a.Address.BitLen())
		}
	}
}

// validate checks the section; lists are the firewall's, which policies
// may name. Fields are reported relative to firewall.
func (c *EgressConfig) validate(fw *Config, report func(field, msg string)) {
	names := map[string]int{}
	addrs := map[netip.Addr]int{}
	for i, a := range c.Addresses {
		f := fmt.Sprintf("egress.addresses[%d]", i)
		switch {
		case a.Name == "":
			report(f+".name", "missing: every egress address needs a name (policies choose it by name)")
		case !egressName.MatchString(a.Name):
			report(f+".name", fmt.Sprintf("%q: use lower-case letters, digits, '_' and '-', starting with a letter (at most 32)", a.Name))
		default:
			if j, dup := names[a.Name]; dup {
				report(f+".name", fmt.Sprintf("%q is already the name of egress.addresses[%d]", a.Name, j))
			}
			names[a.Name] = i
		}
		switch {
		case !a.Address.IsValid():
			report(f+".address", "missing: expected the address traffic leaves from, such as 203.0.113.10")
		case a.Address.Is4In6() || a.Address.Zone() != "":
			report(f+".address", fmt.Sprintf("%s: expected a plain IPv4 or IPv6 address", a.Address))
		case !a.Address.IsGlobalUnicast():
			report(f+".address", fmt.Sprintf("%s is not a unicast address traffic can leave from", a.Address))
		default:
			if j, dup := addrs[a.Address]; dup {
				report(f+".address", fmt.Sprintf("%s is already egress.addresses[%d]", a.Address, j))
			}
			addrs[a.Address] = i
		}
		if a.Prefix.IsValid() && a.Address.IsValid() {
			if a.Prefix.Masked() != a.Prefix {
				report(f+".prefix", fmt.Sprintf("%s has host bits set; did you mean %s?", a.Prefix, a.Prefix.Masked()))
			} else if !a.Prefix.Contains(a.Address) {
				report(f+".prefix", fmt.Sprintf("%s does not contain the address %s", a.Prefix, a.Address))
			}
		}
		if a.Interface != "" && (len(a.Interface) > 15 || strings.ContainsAny(a.Interface, "/ \t\n*")) {
			report(f+".interface", fmt.Sprintf("%q is not an interface name", a.Interface))
		}
		switch {
		case a.Country == "":
			report(f+".country", "missing: expected the ISO 3166-1 alpha-2 code the address geolocates to, such as DE")
		case !countryCode.MatchString(a.Country):
			report(f+".country", fmt.Sprintf("%q is not an ISO 3166-1 alpha-2 code such as DE (two capital letters)", a.Country))
		}
		if a.Region != "" {
			if !regionCode.MatchString(a.Region) {
				report(f+".region", fmt.Sprintf("%q is not an ISO 3166-2 code such as US-CA", a.Region))
			} else if countryCode.MatchString(a.Country) && !strings.HasPrefix(a.Region, a.Country+"-") {
				report(f+".region", fmt.Sprintf("%q is not a region of country %s", a.Region, a.Country))
			}
		}
		if strings.ContainsAny(a.City, ",\"\r\n#") {
			report(f+".city", "a city may not contain commas, quotes, '#' or line breaks (it is a geofeed CSV field)")
		}
	}
	if p := c.GeofeedPath; p != "" {
		switch {
		case !strings.HasPrefix(p, "/") || p == "/":
			report("egress.geofeed_path", fmt.Sprintf("%q: expected a URL path such as /geofeed.csv", p))
		case strings.ContainsAny(p, "?#%\\ \t\r\n") || path.Clean(p) != p:
			report("egress.geofeed_path", fmt.Sprintf("%q: expected a clean URL path (no query, escapes, spaces or dot segments), such as /geofeed.csv", p))
		case slices.ContainsFunc(reservedPaths, func(r string) bool { return p == strings.TrimSuffix(r, "/") || strings.HasPrefix(p, r) }):
			report("egress.geofeed_path", fmt.Sprintf("%q is the admin listener's own (%s)", p, strings.Join(reservedPaths, ", ")))
		}
	}
	ids := map[string]int{}
	resolve := fw.listResolver()
	for i, p := range c.Policies {
		f := fmt.Sprintf("egress.policies[%d]", i)
		switch {
		case p.ID == "":
			report(f+".id", "missing: every egress policy needs an id")
		case !ruleID.MatchString(p.ID):
			report(f+".id", fmt.Sprintf("%q: use letters, digits, '_', '.' and '-' (at most 64)", p.ID))
		default:
			if j, dup := ids[p.ID]; dup {
				report(f+".id", fmt.Sprintf("%q is already the id of egress.policies[%d]", p.ID, j))
			}
			ids[p.ID] = i
		}
		switch _, ok := names[p.Egress]; {
		case p.Egress == "":
			report(f+".egress", "missing: expected the name of an egress address")
		case !ok:
			report(f+".egress", fmt.Sprintf("%q is not the name of an egress address (have: %s)", p.Egress, strings.Join(c.names(), ", ")))
		}
		if strings.TrimSpace(p.Expression) == "" {
			report(f+".expression", "missing: expected an expression such as identity.groups contains \"eu\"")
			continue
		}
		if _, err := compileEgressPolicy(newCompiler(), i, p, fw, resolve); err != nil {
			report(f+".expression", fmt.Sprintf("egress policy %q: %s", p.ID, errorMessage(fw.suggestLists(err))))
		}
	}
}

func (c *EgressConfig) names() []string {
	var out []string
	for _, a := range c.Addresses {
		out = append(out, a.Name)
	}
	return out
}

// Clone returns a deep copy of c.
func (c *EgressConfig) Clone() *EgressConfig {
	if c == nil {
		return nil
	}
	return &EgressConfig{Addresses: slices.Clone(c.Addresses), Policies: slices.Clone(c.Policies), GeofeedPath: c.GeofeedPath}
}

// Equal reports whether c and o are the same section.
func (c *EgressConfig) Equal(o *EgressConfig) bool {
	if c == nil || o == nil {
		return c == o
	}
	return slices.Equal(c.Addresses, o.Addresses) && slices.Equal(c.Policies, o.Policies) && c.GeofeedPath == o.GeofeedPath
}
