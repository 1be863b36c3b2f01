package gateway

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/netip"
	"slices"
	"sync/atomic"
	"time"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/netflow"
	"github.com/edgegw/edgegw/netflow/ingest"
)

// netflowPart turns the packets the firewall samples (netflow.sample_rate)
// into network_analytics_logs records for Logpush. It owns the NFLOG
// reader's goroutine. It is applied after the firewall and the tunnels, so
// the ruleset it names and the interfaces it maps exist.
type netflowPart struct {
	log     *slog.Logger
	metrics *metrics
	sink    *recordSink
	fw      *fwPart
	ids     *peerIdentities

	s     *netflow.Sampler
	run   actor
	bound atomic.Bool // s has bound its NFLOG group; read by the firewall part

	// in receives flows from other routers (netflow.ingest); it owns its
	// sockets' reader goroutines. inListen is what it listens on.
	in       *ingest.Server
	inListen []string
}

func (p *netflowPart) name() string { return "netflow" }

func (p *netflowPart) apply(ctx context.Context, prev, next *config.Config) error {
	if next.Netflow == nil {
		p.close()
		return nil
	}
	colo := netflow.Colo{Code: next.Appliance.Colo, Name: next.Appliance.Name, Country: next.Appliance.Country}
	if p.s == nil {
		s, err := netflow.New(netflow.Options{
			Group:  firewall.DefaultSamplingGroup,
			Colo:   colo,
			Sink:   p.sink,
			Logger: p.log.With("component", "netflow"),
		})
		if err != nil {
			return err
		}
		p.s = s
		p.s.SetIdentities(flowIdentities{p.ids})
		p.metrics.set("netflow", s.Collector())
		p.run.start(ctx, s.Run)
		// Samples logged before the group is bound are lost: the gateway
		// forwards only after every part is applied, so wait here.
		t := time.NewTimer(5 * time.Second)
		defer t.Stop()
		select {
		case <-s.Bound():
			p.bound.Store(true)
		case err := <-p.run.done:
			p.run.done <- err // kept for ready and close
			return err
		case <-t.C:
			return fmt.Errorf("netflow: NFLOG group %d not bound after 5s", firewall.DefaultSamplingGroup)
		}
	}
	// The group is bound: now the firewall may feed it.
	if err := p.fw.enableSampling(next); err != nil {
		return err
	}
	p.ids.set(next)
	p.s.SetColo(colo)
	p.s.SetRules(flowRules(p.fw.rules, next.Netflow.SampleRate))
	p.s.SetInterfaces(flowInterfaces(next, p.fw.wan, p.log))
	return p.applyIngest(next.Netflow.Ingest, colo)
}

// applyIngest starts, restarts (other addresses) or stops the flow ingest
// listeners. Their records go to the same sink as the sampler's.
func (p *netflowPart) applyIngest(cfg *netflow.IngestConfig, colo netflow.Colo) error {
	var listen []string
	if cfg != nil {
		listen = cfg.Listen
	}
	if p.in != nil && slices.Equal(p.inListen, listen) {
		p.in.SetColo(colo)
		return nil
	}
	p.closeIngest()
	if len(listen) == 0 {
		return nil
	}
	in, err := ingest.New(ingest.Options{Listen: listen, Sink: p.sink, Colo: colo, Logger: p.log})
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

// flowRules names the rules by their position in the configuration, as
// the firewall's sample prefixes do (disabled rules keep their place).
func flowRules(rs *firewall.Ruleset, rate int) netflow.Rules {
	r := netflow.Rules{SampleInterval: rate}
	if rs == nil {
		return r
	}
	r.RulesetID = rs.ID()
	last := 0
	for _, info := range rs.Rules() {
		last = max(last, info.Position)
	}
	r.RuleIDs = make([]string, last)
	for n := 1; n <= last; n++ {
		if info, ok := rs.ByPosition(n); ok {
			r.RuleIDs[n-1] = info.ID
		}
	}
	return r
}

// flowInterfaces maps the kernel's interface indexes to what each interface
// is to the gateway, which sets a record's Direction and TunnelName.
func flowInterfaces(cfg *config.Config, wan string, log *slog.Logger) netflow.Interfaces {
	ifs := netflow.Interfaces{}
	add := func(name string, role netflow.Role) {
		if name == "" {
			return
		}
		ifi, err := net.InterfaceByName(name)
		if err != nil {
			log.Warn("netflow: interface not found; its samples carry no direction", "interface", name, "err", err)
			return
		}
		ifs[uint32(ifi.Index)] = netflow.Interface{Name: name, Role: role}
	}
	add(wan, netflow.RoleWAN)
	for _, lan := range cfg.Interfaces.LAN {
		add(lan, netflow.RoleLAN)
	}
	if wg := cfg.Tunnels.WireGuard; wg != nil {
		add(wg.Interface, netflow.RoleTunnel)
	}
	for _, g := range cfg.Tunnels.GRE {
		add(g.Name, netflow.RoleTunnel)
	}
	for _, t := range cfg.Tunnels.IPsec {
		add(t.Name, netflow.RoleTunnel)
	}
	return ifs
}

// flowIdentities gives flow records the user and device behind a source.
type flowIdentities struct{ ids *peerIdentities }

func (f flowIdentities) Lookup(a netip.Addr) (netflow.Identity, bool) {
	email, _, dev, ok := f.ids.who(a)
	return netflow.Identity{Email: email, DeviceID: dev}, ok
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
	p.bound.Store(false)
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
