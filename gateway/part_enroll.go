package gateway

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"sync/atomic"
	"time"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/scim"
	"github.com/edgegw/edgegw/gateway/config"
)

// swapHandler serves whichever handler a part last installed, or 404 with
// why when none is: the Access listener and the admin listener outlive the
// parts that serve paths on them.
type swapHandler struct {
	h    atomic.Pointer[http.Handler]
	none string // the 404 text while nothing is installed
}

func (s *swapHandler) set(h http.Handler) {
	if h == nil {
		s.h.Store(nil)
		return
	}
	s.h.Store(&h)
}

func (s *swapHandler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	if h := s.h.Load(); h != nil {
		(*h).ServeHTTP(w, r)
		return
	}
	http.Error(w, s.none, http.StatusNotFound)
}

// local is what the Access listener serves for host names that are not an
// app's: device enrollment, DNS over HTTPS and SCIM, each installed by its
// part.
type local struct {
	enroll swapHandler
	doh    swapHandler
	scim   swapHandler
}

func newLocal() *local {
	l := &local{}
	l.enroll.none = "Device enrollment is not enabled on this gateway."
	l.doh.none = "DNS over HTTPS is not enabled on this gateway."
	l.scim.none = "SCIM provisioning is not enabled on this gateway."
	return l
}

func (l *local) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	switch {
	case enroll.Handles(r.URL.Path):
		l.enroll.ServeHTTP(w, r)
	case r.URL.Path == "/dns-query":
		l.doh.ServeHTTP(w, r)
	case scim.Handles(r.URL.Path):
		l.scim.ServeHTTP(w, r)
	default:
		http.Error(w, "No application is configured for this host name.", http.StatusNotFound)
	}
}

// enrollPart serves device enrollment (tunnels.wireguard.enrollment) on
// the Access listener, writing to the device registry. It has no
// goroutine of its own.
type enrollPart struct {
	log     *slog.Logger
	metrics *metrics
	local   *local
	ids     *identityPart
	wg      *wgPart

	h *enroll.Handler
}

func (p *enrollPart) name() string { return "tunnels.wireguard.enrollment" }

func (p *enrollPart) apply(ctx context.Context, prev, next *config.Config) error {
	wg := next.Tunnels.WireGuard
	if wg == nil || wg.Enrollment == nil || !wg.Enrollment.Enabled || p.ids.reg == nil {
		p.close()
		return nil
	}
	reg := p.ids.reg
	opts := enroll.Options{
		Policies:  wg.Enrollment.Policies,
		KeyExpiry: wg.Enrollment.KeyExpiry,
		Registry:  reg,
		Tunnel:    p.tunnel(next),
		Changed:   func(ctx context.Context, _ identity.Device) { p.ids.sync(ctx, reg) },
		Logger:    p.log,
	}
	for _, prov := range identityOf(next).Providers {
		opts.Providers = append(opts.Providers, enroll.Provider{Provider: prov, DeviceClientID: prov.DeviceClientID})
	}
	if p.h != nil {
		return p.h.Update(opts) // in place: sign-ins in progress survive
	}
	h, err := enroll.New(opts)
	if err != nil {
		return err
	}
	p.h = h
	p.metrics.set("enroll", h)
	p.local.enroll.set(h)
	return nil
}

// tunnel is what an enrolled client's wg-quick file needs from the
// running device: its key and port, the office prefixes, and the gateway's
// tunnel address as resolver when Gateway DNS runs.
func (p *enrollPart) tunnel(cfg *config.Config) func(context.Context) (enroll.Tunnel, error) {
	wg := cfg.Tunnels.WireGuard
	t := enroll.Tunnel{
		ListenPort:          wg.ListenPort,
		AllowedIPs:          officePrefixes(cfg),
		MTU:                 wg.MTU,
		PersistentKeepalive: 25 * time.Second, // remote users are usually behind NAT
	}
	if cfg.Gateway.DNS != nil {
		t.DNS = []netip.Addr{wg.Address.Addr()}
	}
	return func(context.Context) (enroll.Tunnel, error) {
		pub := p.wg.pub.Load()
		if pub == nil {
			return enroll.Tunnel{}, errors.New("the WireGuard device is down")
		}
		t := t
		t.PublicKey = *pub
		return t, nil
	}
}

func (p *enrollPart) close() {
	if p.h == nil {
		return
	}
	p.local.enroll.set(nil)
	p.metrics.set("enroll", nil)
	p.h = nil
}

func (p *enrollPart) ready() error { return nil }

func (p *enrollPart) status(s *Status) {}
