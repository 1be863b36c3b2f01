package gateway

import (
	"context"
	"crypto/tls"
	"errors"
	"log/slog"
	"net/netip"
	"sync/atomic"

	"github.com/vishvananda/netlink"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/dns"
)

// dnsPart runs Gateway DNS. It owns the resolver's goroutine.
type dnsPart struct {
	log     *slog.Logger
	metrics *metrics
	sink    *recordSink
	res     *identity.Resolver
	local   *local // serves DNS over HTTPS on the Access listener

	srv    *dns.Server
	tunnel atomic.Pointer[string]          // the WireGuard interface: the one that owns identities' addresses
	egress atomic.Pointer[firewall.Egress] // the plan's egress policies; nil: none
	run    actor
	// geo follows the plan's GeoIP databases for the countries of the
	// query log; the server outlives reloads, so it reads through.
	geo geo.Live
	// dotACME is gateway.dns.dot.acme of the plan last committed: DoT
	// handshakes ask the gateway's ACME certificates first while it is
	// set.
	dotACME  atomic.Bool
	dotCerts func(*tls.ClientHelloInfo) (*tls.Certificate, error) // local.acme for "dot", set at the first commit
}

// dotCertificate is the DoT listeners' ACME source: the access part's
// manager while dot.acme is set, else nil (dot.cert_file).
func (p *dnsPart) dotCertificate(hello *tls.ClientHelloInfo) (*tls.Certificate, error) {
	if !p.dotACME.Load() {
		return nil, nil
	}
	return p.dotCerts(hello)
}

// setTunnel records which interface owns the addresses of next's
// identities: every identity (static peers, enrolled devices) is a
// WireGuard address; without WireGuard there are none.
func (p *dnsPart) setTunnel(next *config.Config) {
	name := ""
	if wg := next.Tunnels.WireGuard; wg != nil {
		name = wg.Interface
	}
	p.tunnel.Store(&name)
}

func (p *dnsPart) name() string { return "gateway.dns" }

func (p *dnsPart) commit(ctx context.Context, prev, np *Plan) error {
	next := np.Config
	nc := next.Gateway.DNS
	if nc == nil {
		p.close()
		return nil
	}
	p.egress.Store(np.Firewall.Egress)
	p.geo.Set(np.geo)
	acmeOn := nc.DoT != nil && nc.DoT.ACME
	if acmeOn && !p.dotACME.Load() {
		p.log.Info("DNS over TLS serves access.acme's certificate for the names among its domains; dot.cert_file until ACME has one, and whenever it fails")
	}
	if p.dotCerts == nil {
		p.dotCerts = p.local.acme.forListener("dot")
	}
	p.dotACME.Store(acmeOn)
	if p.srv != nil {
		p.setTunnel(next)
		// In place: no query is dropped. With the same section Set only
		// re-reads the files it names (lists, the DoT certificate), so a
		// certificate renewed in place is presented after SIGHUP.
		return p.srv.Set(*nc)
	}
	egress := wanAddr(np.WAN)
	p.setTunnel(next)
	srv, err := dns.New(*nc, dns.Options{
		Logger:     p.log,
		Registerer: p.metrics.reg,
		StateDir:   next.Appliance.StateDir,
		EgressAddr: egress, // ECS from where traffic exits, never the client
		// The WAN's address is followed (DHCP); plain DNS goes from
		// each client's egress, the rest from the kernel's choice.
		EgressInterface: np.WAN,
		Egress:          dnsEgress{&p.egress},
		IdentitySource:  dnsIdentities{p.res, &p.tunnel},
		Sink:            p.sink,
		ColoCode:        next.Appliance.Colo,
		Countries:       &p.geo,
		Certificates:    p.dotCertificate,
	})
	if err != nil {
		return err
	}
	p.srv = srv
	// DoH for enrolled devices and WireGuard peers only: the Access
	// listener faces the internet and must not be an open resolver.
	p.local.doh.set(srv.DoHHandler(dns.DoHIdentifiedOnly))
	p.run.start(ctx, srv.Run)
	return nil
}

// wanAddr is the first global IPv4 address of the WAN interface: the
// egress address of DNS queries and of the ECS they carry.
func wanAddr(ifname string) netip.Addr {
	if ifname == "" {
		return netip.Addr{}
	}
	l, err := netlink.LinkByName(ifname)
	if err != nil {
		return netip.Addr{}
	}
	addrs, _ := netlink.AddrList(l, netlink.FAMILY_V4)
	for _, a := range addrs {
		if ip, ok := netip.AddrFromSlice(a.IP); ok && ip.Unmap().IsGlobalUnicast() {
			return ip.Unmap()
		}
	}
	return netip.Addr{}
}

func (p *dnsPart) close() {
	if p.srv == nil {
		return
	}
	p.local.doh.set(nil)
	if err := p.run.stop(); err != nil {
		p.log.Error("gateway dns stopped", "err", err)
	}
	p.srv = nil
}

func (p *dnsPart) ready() error {
	if p.srv == nil {
		return nil
	}
	if exited, err := p.run.exited(); exited {
		return errors.Join(errors.New("gateway dns: stopped"), err)
	}
	return p.srv.Ready()
}

func (p *dnsPart) status(s *Status) {
	if p.srv != nil {
		st := p.srv.Status()
		s.DNS = &st
	}
}

// dnsIdentities gives DNS policies and records the user and device behind a
// client address, and the interface that owns it: the resolver gives a
// query the identity only if it came through that interface.
type dnsIdentities struct {
	res    *identity.Resolver
	tunnel *atomic.Pointer[string]
}

func (d dnsIdentities) Identify(a netip.Addr) (dns.Identity, bool) {
	who, ok := d.res.Who(a)
	if !ok {
		return dns.Identity{}, false
	}
	id := dns.Identity{Email: who.Email, Groups: who.Groups, DeviceID: who.DeviceID, Posture: who.Posture}
	if who.Quarantined {
		// As in the firewall's identity sets: the device's groups give it
		// nothing while quarantined; DNS policies name it by the
		// quarantine group (a remediation page, say). The address stays,
		// for the query log.
		id.Groups = []string{QuarantineGroup}
	}
	if t := d.tunnel.Load(); t != nil {
		id.Interface = *t
	}
	return id, true
}

// dnsEgress gives Gateway DNS each client's egress address: that of the
// first egress policy that holds for the client and its identity, without
// a destination (firewall.Egress.For).
type dnsEgress struct {
	cur *atomic.Pointer[firewall.Egress]
}

func (d dnsEgress) Egress(src netip.Addr, id dns.Identity, hasID bool) (netip.Addr, bool) {
	c, ok := d.cur.Load().ForIdentity(src, firewall.Identity{Email: id.Email, Groups: id.Groups, Posture: id.Posture}, hasID)
	return c.Address.Address, ok
}

// dnsTop serves the console's top names (GET /api/v1/dns/top); false
// without a resolver.
func (g *Gateway) dnsTop(n int, user string) (any, bool) {
	var srv *dns.Server
	g.mu.Lock()
	for _, p := range g.parts {
		if dp, ok := p.(*dnsPart); ok {
			srv = dp.srv
		}
	}
	g.mu.Unlock()
	if srv == nil {
		return nil, false
	}
	return srv.Top(n, user), true
}
