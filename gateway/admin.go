package gateway

import (
	"context"
	"net/http"

	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/netflow/logpush"
)

// newAdmin wires the admin plane (gateway/admin) to the gateway: its
// status, readiness and metrics, the device API, reloads, and the audit
// trail into Logpush. pctx is the context parts run under, for reloads
// asked through the API.
func (g *Gateway) newAdmin(pctx context.Context, cfg *config.Config, sink *recordSink, devices http.Handler, fw *fwPart) (*admin.Server, error) {
	srv, err := admin.New(admin.Options{
		Logger:   g.log.With("component", "admin"),
		StateDir: cfg.Appliance.StateDir,
		Metrics:  g.metrics.reg,
		Ready:    g.notReady,
		Status:   func() any { return g.Status() },
		Logpush: func() any {
			jobs := g.Status().Logpush
			if jobs == nil {
				jobs = []logpush.JobStatus{}
			}
			return jobs
		},
		Devices: devices,
		Flows:   &sink.analytics,
		Routes:  g.routesView, // part_site.go
		Reload: func(ctx context.Context) (string, error) {
			a, _ := admin.ActorFrom(ctx)
			return g.opts.ConfigPath, g.reload(pctx, a.ID)
		},
		Audit: sink.AuditRecord,
		// The console's Config and Firewall pages: what runs now.
		RunningConfig: func() (string, any) {
			g.mu.Lock()
			defer g.mu.Unlock()
			return g.plan.Config.File, g.plan.Config
		},
		Config: configEditor{g: g, pctx: pctx},

		// The console's "test a packet", DNS top names and enrollment link.
		FirewallTest: g.firewallTest, // firewalltest.go
		DNSTop:       g.dnsTop,       // part_dns.go
		EnrollPort:   g.enrollPort,   // firewalltest.go
		EnrollURL:    g.enrollURL,    // firewalltest.go
		Firewall: func() (admin.FirewallView, error) {
			g.mu.Lock()
			defer g.mu.Unlock()
			return fw.view()
		},
		Egress: func() (admin.EgressView, error) {
			g.mu.Lock()
			in := fw.egressInputs()
			g.mu.Unlock()
			return in.view()
		},
		Geofeed: fw.servedFeed,
		// admin.tls.acme: the access part's ACME certificates.
		Certificates: g.local().acme.forListener("admin"),
	})
	if err != nil {
		return nil, err
	}
	// The expiry of the ACME certificates DoT and this listener served.
	g.metrics.set("acme-listeners", &g.local().acme)
	g.metrics.set("admin", srv)
	return srv, nil
}

// local is what the parts share for the Access listener (local.go), as
// handed to the access part in run: the admin listener asks its ACME
// certificate source.
func (g *Gateway) local() *local {
	for _, p := range g.parts {
		if a, ok := p.(*accessPart); ok {
			return a.local
		}
	}
	return newLocal() // no access part: no ACME manager is ever installed
}

// auditReload records a reload edgegw made on a signal.
func (g *Gateway) auditReload(signal string, err error) {
	e := admin.Event{
		Action: "reload", Result: err == nil, Actor: admin.Signal(signal),
		ResourceType: "configuration", ResourceID: g.opts.ConfigPath,
		Description: "reload applied",
	}
	if err != nil {
		e.Error = err.Error()
		e.Description = "reload refused; the previous configuration keeps running"
	}
	g.admin.Audit(e)
}
