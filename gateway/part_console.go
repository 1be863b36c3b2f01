package gateway

import (
	"context"
	"fmt"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/config"
)

// consolePart keeps what the operator console shows of the running
// gateway beyond its status: the configuration in force and the
// firewall's rules with their kernel counters. It is the last part, so it
// holds a configuration only once every other part runs it (and is put
// back with them when a reload fails). It starts nothing.
//
// The admin server reads it through admin.Options.RunningConfig
// (runningConfig) and admin.Options.Firewall (firewallView).
type consolePart struct {
	fw  *fwPart
	cfg atomic.Pointer[config.Config]
}

func (p *consolePart) name() string { return "console" }

func (p *consolePart) apply(_ context.Context, _, next *config.Config) error {
	p.cfg.Store(next)
	return nil
}

func (p *consolePart) close()         {}
func (p *consolePart) ready() error   { return nil }
func (p *consolePart) status(*Status) {}

// runningConfig is the file and configuration in force.
func (p *consolePart) runningConfig() (string, any) {
	c := p.cfg.Load()
	if c == nil {
		return "", struct{}{}
	}
	return c.File, c
}

// firewallView is the configured rules in evaluation order with what the
// kernel counted for each, and the lists' sizes. The firewall part makes
// its table at its first apply, before the admin server starts, and drops
// it only at close, after the admin server stopped.
func (p *consolePart) firewallView() (admin.FirewallView, error) {
	var v admin.FirewallView
	c := p.cfg.Load()
	if c == nil || c.Firewall == nil {
		return v, nil
	}
	counts := map[string]firewall.Counter{}
	if t := p.fw.table; t != nil {
		var err error
		if counts, err = t.Counters(); err != nil {
			return v, fmt.Errorf("read the firewall's counters: %w", err)
		}
	}
	for _, r := range c.Firewall.Rules {
		if r.Enabled != nil && !*r.Enabled {
			continue
		}
		n := counts[r.ID]
		v.Rules = append(v.Rules, admin.FirewallRule{ID: r.ID, Action: r.Action, Expression: r.Expression, Packets: n.Packets, Bytes: n.Bytes})
	}
	for name, entries := range c.Firewall.Lists {
		v.Lists = append(v.Lists, admin.FirewallList{Name: name, Entries: len(entries)})
	}
	slices.SortFunc(v.Lists, func(a, b admin.FirewallList) int { return strings.Compare(a.Name, b.Name) })
	return v, nil
}
