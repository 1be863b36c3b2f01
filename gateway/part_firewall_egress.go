package gateway

import (
	"net/netip"
	"slices"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/admin"
)

// egressInputs is what the egress view is made of, taken under the
// gateway's lock; the kernel is read afterwards, without it (a conntrack
// dump of a busy gateway takes a while).
type egressInputs struct {
	egress   *firewall.Egress
	policies []firewall.EgressPolicy
	ids      []firewall.Identity
	table    *firewall.Table
	wan      string
	geofeed  string
}

// egressInputs takes the view's inputs. The caller holds the gateway's
// lock.
func (p *fwPart) egressInputs() egressInputs {
	in := egressInputs{egress: p.egress, ids: p.ids, table: p.table, wan: p.wan}
	if p.rules != nil && p.rules.Egress != nil {
		in.policies = p.rules.Egress.Policies
	}
	in.geofeed, _ = p.servedFeed()
	return in
}

// view is who leaves from where, for GET /api/v1/egress: the egress
// addresses in force with the identities the policies map to each, the
// policies' connection counters from the NAT chain, and what connection
// tracking holds now per address and per identity. A conntrack table that
// cannot be read is reported in the view, not as a failure: the rest
// still answers.
func (in egressInputs) view() (admin.EgressView, error) {
	var v admin.EgressView
	eg := in.egress
	if eg == nil {
		return v, nil
	}
	v.GeofeedPath = in.geofeed
	counts := map[string]firewall.Counter{}
	if in.table != nil {
		var err error
		if counts, err = in.table.EgressCounts(); err != nil {
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
			Interface: ifaceOr(a.Interface, in.wan), Country: a.Country, Region: a.Region, City: a.City,
			Policies: []string{}, Identities: []string{},
			EgressFlows: egressFlows(flows.ByEgress[a.Address]),
		})
	}
	for _, pol := range in.policies {
		n := counts[pol.ID].Packets // the counter of a NAT rule: first packets
		v.Policies = append(v.Policies, admin.EgressPolicy{ID: pol.ID, Expression: pol.Expression, Egress: pol.Egress, Connections: n})
		if i, ok := byName[pol.Egress]; ok {
			a := &v.Addresses[i]
			a.Policies = append(a.Policies, pol.ID)
			a.ConnectionsTotal += n
		}
	}
	for _, as := range eg.Assignments(in.ids) {
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
