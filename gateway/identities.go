package gateway

import (
	"net/netip"
	"sync/atomic"

	"github.com/edgegw/edgegw/gateway/config"
)

// peerIdentities answers "who is behind this source address" from the
// static WireGuard peers that carry an email or groups. Enrolled devices
// join when the device registry lands. Lookups read an immutable snapshot.
type peerIdentities struct {
	snap atomic.Pointer[[]peerIdentity]
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

// Lookup implements dns.Identities.
func (p *peerIdentities) Lookup(a netip.Addr) (email string, groups []string, ok bool) {
	ids := p.snap.Load()
	if ids == nil {
		return "", nil, false
	}
	for _, id := range *ids {
		for _, pfx := range id.prefixes {
			if pfx.Contains(a) {
				return id.email, id.groups, true
			}
		}
	}
	return "", nil, false
}
