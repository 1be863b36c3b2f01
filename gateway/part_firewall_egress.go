package gateway

import (
	"net/netip"
	"slices"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/admin"
)

// egressView is who leaves from where, for GET /api/v1/egress: the egress
// addresses in force with the identities the policies map to each, the
// policies' connection counters from the NAT chain, and what connection
// tracking holds now per address and per identity. A conntrack table that
// cannot be read is reported in the view, not as a failure: the rest
// still answers. The caller holds the gateway's lock.
func (p *fwPart) egressView() (admin.EgressView, error) {
	var v admin.EgressView
	eg := p.egress
	if eg == nil || p.rules == nil || p.rules.Egress == nil {
		return v, nil
	}
	v.GeofeedPath, _ = p.servedFeed()
	counts := map[string]firewall.Counter{}
	if p.table != nil {
		var err error
		if counts, err = p.table.EgressCounts(); err != nil {
			return v, err
		}
	}
	flows, err := firewall.ReadEgressFlows(eg)
	if err != nil {
		v.FlowsError = err.Error()
	}
	byName := map[string]int{}
	for _, a := range eg.Addresses() {
		byName[a.Name] = len(v.Addresses)
		v.Addresses = append(v.Addresses, admin.EgressAddress{
			Name: a.Name, Address: a.Address.String(), Prefix: a.Prefix.String(),
			Interface: ifaceOr(a.Interface, p.wan), Country: a.Country, Region: a.Region, City: a.City,
			Policies: []string{}, Identities: []string{},
			EgressFlows: egressFlows(flows.ByEgress[a.Address]),
		})
	}
	for _, pol := range p.rules.Egress.Policies {
		n := counts[pol.ID].Packets // the counter of a NAT rule: first packets
		v.Policies = append(v.Policies, admin.EgressPolicy{ID: pol.ID, Expression: pol.Expression, Egress: pol.Egress, Connections: n})
		if i, ok := byName[pol.Egress]; ok {
			a := &v.Addresses[i]
			a.Policies = append(a.Policies, pol.ID)
			a.ConnectionsTotal += n
		}
	}
	for _, as := range eg.Assignments(p.ids) {
		id := admin.EgressIdentity{Email: as.Email, Source: as.Addr.String(), Egress: as.Egress, Country: as.Country,
			Policy: as.Policy, Active: []admin.EgressActive{}}
		if as.Address.IsValid() {
			id.EgressAddress = as.Address.String()
			if a := &v.Addresses[byName[as.Egress]]; !slices.Contains(a.Identities, as.Email) {
				a.Identities = append(a.Identities, as.Email)
			}
		}
		for pair, u := range flows.ByClient {
			if as.Addr.Contains(pair.Client) {
				id.Active = append(id.Active, admin.EgressActive{EgressAddress: pair.Egress.String(), EgressFlows: egressFlows(u)})
			}
		}
		slices.SortFunc(id.Active, func(a, b admin.EgressActive) int {
			return netip.MustParseAddr(a.EgressAddress).Compare(netip.MustParseAddr(b.EgressAddress))
		})
		v.Identities = append(v.Identities, id)
	}
	return v, nil
}

func egressFlows(u firewall.EgressUsage) admin.EgressFlows {
	return admin.EgressFlows{ActiveConnections: u.Connections, BytesOut: u.BytesOut, BytesIn: u.BytesIn,
		PacketsOut: u.PacketsOut, PacketsIn: u.PacketsIn}
}

// ifaceOr is an egress address's interface: its own, else the WAN.
func ifaceOr(ifc, wan string) string {
	if ifc != "" {
		return ifc
	}
	return wan
}
