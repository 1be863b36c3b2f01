package gateway

import (
	"context"
	"errors"
	"log/slog"
	"reflect"

	"github.com/edgegw/edgegw/access"
	"github.com/edgegw/edgegw/access/acme"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/gateway/config"
)

// accessPart runs the Access identity-aware proxy. It owns the goroutine
// that runs the server and, with access.acme, the one that keeps the
// listener's certificate: started with the part, stopped by close.
type accessPart struct {
	log     *slog.Logger
	metrics *metrics
	sink    access.RecordSink
	devs    *identity.Devices
	local   *local // enrollment, DoH, SCIM, posture for host names that are no app's; the session ender; acme, installed for the other listeners

	srv *access.Server
	run actor

	acme    *acme.Manager // nil: no access.acme
	acmeRun actor

	// geo follows the plan's GeoIP databases for the Country of
	// access_requests; the server outlives reloads, so it reads through.
	geo geo.Live
}

func (p *accessPart) name() string { return "access" }

func (p *accessPart) commit(ctx context.Context, pp, np *Plan) error {
	next := np.Config
	if next.Access == nil {
		p.close()
		return nil
	}
	p.geo.Set(np.geo)
	cfg := *next.Access
	if p.srv != nil {
		prev := pp.Config
		if reflect.DeepEqual(prev.Access, next.Access) && reflect.DeepEqual(prev.Identity, next.Identity) &&
			config.SameFiles(prev, next, "access", "identity") {
			return nil
		}
		if prev.Access.Listen == cfg.Listen {
			if err := p.srv.Commit(np.access); err != nil { // in place: sessions and keys survive
				return err
			}
			if reflect.DeepEqual(prev.Access.ACME, next.Access.ACME) && prev.Appliance.StateDir == next.Appliance.StateDir &&
				config.SameFiles(prev, next, "access.acme") {
				return nil
			}
			return p.startACME(ctx, np)
		}
		p.close() // a new listen address needs a new server
	}
	srv, err := access.NewPlan(np.access, access.Options{
		Logger:     p.log,
		Registerer: p.metrics.reg,
		StateDir:   next.Appliance.StateDir,
		Sink:       p.sink,
		Devices:    p.devs,
		Local:      p.local,
		Countries:  &p.geo,
		SignedIn:   p.local.signIns.signedIn,
		Logouts:    &p.local.logouts,
	})
	if err != nil {
		return err
	}
	p.srv = srv
	p.local.sessions.set(srv.EndSessions)
	p.run.start(ctx, srv.Run)
	return p.startACME(ctx, np)
}

// startACME replaces the certificate manager with one for np's
// access.acme (none without it). The listener serves its configured or
// self-signed certificate until the new manager has one.
func (p *accessPart) startACME(ctx context.Context, np *Plan) error {
	p.stopACME()
	if np.access == nil || np.access.ACME() == nil {
		return nil
	}
	ap := np.access.ACME()
	m, err := acme.New(ap, acme.Options{
		StateDir:   np.Config.Appliance.StateDir,
		Logger:     p.log,
		Registerer: p.metrics.reg,
		Listening:  p.srv.Addr,
	})
	if err != nil {
		return err
	}
	p.acme = m
	p.srv.SetCertificates(m)
	p.local.acme.set(m) // for DoT and the admin listener, when they ask for ACME
	p.acmeRun.start(ctx, m.Run)
	return nil
}

func (p *accessPart) stopACME() {
	if p.acme == nil {
		return
	}
	p.srv.SetCertificates(nil)
	p.local.acme.set(nil)
	if err := p.acmeRun.stop(); err != nil {
		p.log.Error("acme stopped", "err", err)
	}
	p.acme.Close()
	p.acme = nil
}

func (p *accessPart) close() {
	if p.srv == nil {
		return
	}
	p.stopACME()
	p.local.sessions.set(nil)
	if err := p.run.stop(); err != nil {
		p.log.Error("access proxy stopped", "err", err)
	}
	p.srv.Close()
	p.srv = nil
}

func (p *accessPart) ready() error {
	if p.srv == nil {
		return nil
	}
	if exited, err := p.run.exited(); exited {
		// Run ended on its own (e.g. the listen address was taken).
		return errors.Join(errors.New("access: proxy stopped"), err)
	}
	return p.srv.Ready()
}

func (p *accessPart) status(s *Status) {
	if p.srv == nil {
		return
	}
	a := AccessStatus{Ready: true}
	if err := p.ready(); err != nil {
		a.Ready, a.Error = false, err.Error()
	}
	if addr := p.srv.Addr(); addr != nil {
		a.Listen = addr.String()
	}
	if p.acme != nil {
		for _, d := range p.acme.Domains() {
			a.ACME = append(a.ACME, ACMECertificate{Domain: d, Expires: p.acme.Expiry(d)})
		}
	}
	s.Access = &a
}
