package bgp

import (
	"fmt"
	"net/netip"

	api "github.com/osrg/gobgp/v4/api"
)

// exportPolicy compiles every neighbor's export rules into one GoBGP
// global export policy, applied to each neighbor at once by SetPolicies.
// Each rule is a statement matching its neighbor (a neighbor set of one
// address), its prefixes exactly, and locally originated routes only, so
// that a prefix learned from a branch or an ISP is never passed on. What
// no statement accepts is rejected (the assignment's default): a
// neighbor without rules gets every announced prefix from one implicit
// rule, and nothing else.
func exportPolicy(c *Config) *api.SetPoliciesRequest {
	req := &api.SetPoliciesRequest{}
	pol := &api.Policy{Name: "edgegw-export"}
	for _, n := range c.Neighbors {
		nset := "nb-" + n.Name
		req.DefinedSets = append(req.DefinedSets, &api.DefinedSet{
			DefinedType: api.DefinedType_DEFINED_TYPE_NEIGHBOR, Name: nset,
			List: []string{netip.PrefixFrom(n.Address, n.Address.BitLen()).String()},
		})
		rules := n.Export
		if len(rules) == 0 {
			rules = []ExportRule{{}}
		}
		for i, r := range rules {
			ps := r.Prefixes
			if len(ps) == 0 {
				ps = c.Announce
			}
			if len(ps) == 0 {
				continue // nothing announced: no statement, all rejected
			}
			pset := fmt.Sprintf("px-%s-%d", n.Name, i)
			ds := &api.DefinedSet{DefinedType: api.DefinedType_DEFINED_TYPE_PREFIX, Name: pset}
			for _, p := range ps {
				ds.Prefixes = append(ds.Prefixes, &api.Prefix{IpPrefix: p.String(),
					MaskLengthMin: uint32(p.Bits()), MaskLengthMax: uint32(p.Bits())})
			}
			req.DefinedSets = append(req.DefinedSets, ds)
			act := &api.Actions{RouteAction: api.RouteAction_ROUTE_ACTION_ACCEPT}
			if len(r.Communities) > 0 {
				cs := make([]string, 0, len(r.Communities))
				for _, s := range r.Communities {
					v, _ := ParseCommunity(s) // validated
					cs = append(cs, fmt.Sprintf("%d:%d", v>>16, v&0xffff))
				}
				act.Community = &api.CommunityAction{Type: api.CommunityAction_TYPE_ADD, Communities: cs}
			}
			if len(r.LargeCommunities) > 0 {
				cs := make([]string, 0, len(r.LargeCommunities))
				for _, s := range r.LargeCommunities {
					v, _ := ParseLargeCommunity(s) // validated
					cs = append(cs, v.String())
				}
				act.LargeCommunity = &api.CommunityAction{Type: api.CommunityAction_TYPE_ADD, Communities: cs}
			}
			if r.Prepend > 0 {
				act.AsPrepend = &api.AsPrependAction{Asn: c.ASN, Repeat: uint32(r.Prepend)}
			}
			pol.Statements = append(pol.Statements, &api.Statement{
				Name: fmt.Sprintf("st-%s-%d", n.Name, i),
				Conditions: &api.Conditions{
					NeighborSet: &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: nset},
					PrefixSet:   &api.MatchSet{Type: api.MatchSet_TYPE_ANY, Name: pset},
					RouteType:   api.Conditions_ROUTE_TYPE_LOCAL,
				},
				Actions: act,
			})
		}
	}
	req.Policies = []*api.Policy{pol}
	req.Assignments = []*api.PolicyAssignment{{
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_EXPORT,
		Policies: []*api.Policy{{Name: pol.Name}}, DefaultAction: api.RouteAction_ROUTE_ACTION_REJECT,
	}, {
		// Import takes everything into the Adj-RIB-In; the neighbor's
		// ImportPolicy decides what becomes a route (and counts it).
		Name: "global", Direction: api.PolicyDirection_POLICY_DIRECTION_IMPORT,
		DefaultAction: api.RouteAction_ROUTE_ACTION_ACCEPT,
	}}
	return req
}
