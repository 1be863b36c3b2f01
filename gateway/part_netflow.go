package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net/netip"
	"slices"
	"time"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/netflow"
	"github.com/edgegw/edgegw/netflow/ingest"
)

// netflowPart turns the packets the firewall samples (netflow.sample_rate)
// into network_analytics_logs records for Logpush, and runs the flow
// ingest listeners. It owns the NFLOG reader's goroutine. It commits
// before the firewall: the plan's table feeds the NFLOG group, which must
// be bound first (go-nflog configures a group with several commands after
// binding it, and a sample arriving in between breaks that exchange).
type netflowPart struct {
	log     *slog.Logger
	metrics *metrics
	sink    *recordSink
	res     *identity.Resolver

	s   *netflow.Sampler
	run actor
	// geo follows the plan's GeoIP databases for the records' country
	// and AS fields, the sampler's and the ingested flows' alike; both
	// outlive reloads, so they read through.
	geo geo.Live

	// in receives flows from other routers (netflow.ingest); it owns its
	// sockets' reader goroutines. inListen is what it listens on.
	in       *ingest.Server
	inListen []string
}

func (p *netflowPart) name() string { return "netflow" }

func (p *netflowPart) commit(ctx context.Context, _, np *Plan) error {
	next := np.Config
	if next.Netflow == nil {
		p.close()
		return nil
	}
	colo := netflow.Colo{Code: next.Appliance.Colo, Name: next.Appliance.Name, Country: next.Appliance.Country}
	p.geo.Set(np.geo)
	if p.s == nil {
		if err := p.start(ctx, colo); err != nil {
			return err
		}
	}
	p.s.SetColo(colo)
	p.s.SetRules(np.flowRules)
	p.s.SetRoles(np.flowRoles)
	return p.applyIngest(next.Netflow.Ingest, colo)
}

// start runs the sampler and waits until it has bound its NFLOG group:
// samples logged before are lost.
func (p *netflowPart) start(ctx context.Context, colo netflow.Colo) error {
	s, err := netflow.New(netflow.Options{
		Group:  firewall.DefaultSamplingGroup,
		Colo:   colo,
		Sink:   p.sink,
		Logger: p.log.With("component", "netflow"),
		Places: &p.geo,
	})
	if err != nil {
		return err
	}
	s.SetIdentities(flowIdentities{p.res})
	p.run.start(ctx, s.Run)
	t := time.NewTimer(5 * time.Second)
	defer t.Stop()
	select {
	case <-s.Bound():
	case err := <-p.run.done:
		p.run.done <- err // kept for ready and close
		return err
	case <-t.C:
		p.run.stop()
		return fmt.Errorf("netflow: NFLOG group %d not bound after 5s", firewall.DefaultSamplingGroup)
	}
	p.s = s
	p.metrics.set("netflow", s.Collector())
	return nil
}

// applyIngest starts, restarts (other addresses) or stops the flow ingest
// listeners. Their records go to the same sink as the sampler's.
func (p *netflowPart) applyIngest(cfg *netflow.IngestConfig, colo netflow.Colo) error {
	var listen []string
	var exporters []netip.Prefix
	if cfg != nil {
		listen, exporters = cfg.Listen, cfg.Exporters
	}
	if p.in != nil && slices.Equal(p.inListen, listen) {
		p.in.SetColo(colo)
		p.in.SetExporters(exporters)
		return nil
	}
	p.closeIngest()
	if len(listen) == 0 {
		return nil
	}
	in, err := ingest.New(ingest.Options{Listen: listen, Sink: p.sink, Colo: colo, Logger: p.log, Exporters: exporters, Places: &p.geo})
	if err != nil {
		return err
	}
	p.in, p.inListen = in, slices.Clone(listen)
	p.metrics.set("netflow_ingest", in.Collector())
	return nil
}

func (p *netflowPart) closeIngest() {
	if p.in == nil {
		return
	}
	if err := p.in.Close(); err != nil {
		p.log.Warn("netflow ingest: close", "err", err)
	}
	p.metrics.set("netflow_ingest", nil)
	p.in, p.inListen = nil, nil
}

// flowIdentities gives flow records the user and device behind a source.
type flowIdentities struct{ res *identity.Resolver }

func (f flowIdentities) Lookup(a netip.Addr) (netflow.Identity, bool) {
	who, ok := f.res.Who(a)
	return netflow.Identity{Email: who.Email, DeviceID: who.DeviceID}, ok
}

func (p *netflowPart) close() {
	p.closeIngest()
	if p.s == nil {
		return
	}
	if err := p.run.stop(); err != nil {
		p.log.Error("netflow sampler stopped", "err", err)
	}
	p.metrics.set("netflow", nil)
	p.s = nil
}

func (p *netflowPart) ready() error {
	if p.s == nil {
		return nil
	}
	if exited, err := p.run.exited(); exited {
		return errors.Join(errors.New("netflow: sampler stopped"), err)
	}
	return nil
}

func (p *netflowPart) status(s *Status) {}
