package gateway

import (
	"fmt"
	"strings"

	accesspolicy "github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/dns"
)

// checkGeoSelectors refuses geo selectors in Access and enrollment
// policies, and geo fields in Gateway DNS policies, when firewall.geoip
// names no country database: they would never match, silently.
func checkGeoSelectors(cfg *config.Config) error {
	if f := cfg.Firewall; f != nil && f.GeoIP.Files().Country != "" {
		return nil
	}
	var where []string
	if a := cfg.Access; a != nil {
		for i, app := range a.Apps {
			if accesspolicy.UsesGeo(app.Policies) {
				where = append(where, fmt.Sprintf("access.apps[%d] (%q).policies", i, app.Name))
			}
		}
	}
	if wg := cfg.Tunnels.WireGuard; wg != nil && wg.Enrollment != nil && accesspolicy.UsesGeo(wg.Enrollment.Policies) {
		where = append(where, "tunnels.wireguard.enrollment.policies")
	}
	if g := cfg.Gateway.DNS; g != nil && dns.UsesGeo(g.Policies) {
		where = append(where, "gateway.dns.policies (dns.src.geo.country, dns.dst.geo.country)")
	}
	if len(where) > 0 {
		return fmt.Errorf("%s: a geo selector needs the GeoIP country database, firewall.geoip.country (a GeoLite2-Country or DB-IP country mmdb file), which is not configured", strings.Join(where, ", "))
	}
	return nil
}
