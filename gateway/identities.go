package gateway

import (
	"net/netip"
	"sync/atomic"

	"github.com/edgegw/edgegw/gateway/config"
)

// peerIdentities answers "who is behind this source address" for DNS, flow
// records and Access: static WireGuard peers that carry an email or groups,
// then enrolled devices from the registry's snapshot. Lookups read
// immutable snapshots and take no lock.
type peerIdentities struct {
	snap atomic.Pointer[[]peerIdentity]
	devs *devices
}

type peerIdentity struct {
	prefixes []netip.Prefix
	email    string
	groups   []string
}

func (p *peerIdentities) set(cfg *config.Config) {
	var ids []peerIdentity
	for _, id := range identities(cfg) {
		ids = append(ids, peerIdentity{prefixes: id.Addrs, email: id.Email, groups: id.Groups})
	}
	p.snap.Store(&ids)
}

// who is the user behind a; deviceID is empty for static peers.
func (p *peerIdentities) who(a netip.Addr) (email string, groups []string, deviceID string, ok bool) {
	a = a.Unmap()
	if ids := p.snap.Load(); ids != nil {
		for _, id := range *ids {
			for _, pfx := range id.prefixes {
				if pfx.Contains(a) {
					return id.email, id.groups, "", true
				}
			}
		}
	}
	if p.devs != nil {
		if s := p.devs.load(); s != nil {
			if d, ok := s.ByAddr(a); ok {
				return d.Email, d.Groups, d.ID, true
			}
		}
	}
	return "", nil, "", false
}

// Lookup implements dns.Identities.
func (p *peerIdentities) Lookup(a netip.Addr) (email string, groups []string, ok bool) {
	email, groups, _, ok = p.who(a)
	return email, groups, ok
}
