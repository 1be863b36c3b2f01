package gateway

import (
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"reflect"
	"slices"
	"strings"
	"sync/atomic"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/gateway/admin"
)

// fwPart owns edgegw's nftables table: masquerade on the WAN, the
// anti-spoofing stage and the Magic-Firewall rules, with lists and
// identity sets updated in place.
type fwPart struct {
	log     *slog.Logger
	metrics *metrics
	devs    *identity.Devices
	table   *firewall.Table
	static  []firewall.Identity // from the plan in the kernel
	// quarantine: the plan in the kernel has posture:, so quarantined
	// devices get only the quarantine group.
	quarantine bool
	ids        []firewall.Identity // in the kernel: static plus enrolled devices
	rules      *firewall.Config    // the section in the kernel, for view
	geofeed    string              // the egress geofeed written; "" none
	egress     *firewall.Egress    // the egress policies in the kernel; nil none
	wan        string              // the plan's WAN, where egress addresses default to
	// served is the geofeed the admin listener serves, read without the
	// gateway's lock on every request to that listener.
	served atomic.Pointer[servedGeofeed]
	// geo follows firewall.geoip's files for a replaced database and
	// updates the table's geo sets in place; geoRun owns its goroutine.
	geo    *geo.Watcher
	geoRun actor
}

func (p *fwPart) name() string { return "firewall" }

// withDeviceIdentities appends every active enrolled device in snap;
// with quarantine (posture: configured), a device carries its posture
// attributes (device.posture.*), and a quarantined device has only the
// quarantine group and a failing posture.
func withDeviceIdentities(static []firewall.Identity, snap *identity.Snapshot, quarantine bool) []firewall.Identity {
	if snap == nil || snap.Len() == 0 {
		return static
	}
	ids := make([]firewall.Identity, len(static), len(static)+snap.Len())
	copy(ids, static)
	for d := range snap.All() {
		email, groups := deviceIdentity(d, quarantine)
		id := firewall.Identity{
			Email:  email,
			Groups: groups,
			Addrs:  []netip.Prefix{netip.PrefixFrom(d.Address, d.Address.BitLen())},
		}
		if quarantine { // device.posture.* only while posture rules run
			id.Posture = d.RulePosture()
		}
		ids = append(ids, id)
	}
	return ids
}

// setDevices follows a new registry snapshot into the identity sets,
// without touching rules.
func (p *fwPart) setDevices(snap *identity.Snapshot) error {
	if p.table == nil {
		return nil
	}
	ids := withDeviceIdentities(p.static, snap, p.quarantine)
	if reflect.DeepEqual(ids, p.ids) {
		return nil
	}
	if err := p.table.UpdateIdentities(ids); err != nil {
		return err
	}
	p.ids = ids
	return nil
}

func (p *fwPart) commit(ctx context.Context, prev, next *Plan) error {
	if p.table == nil {
		p.table = firewall.New(p.log)
		p.metrics.set("firewall", firewall.NewCollector(p.table))
	}
	// The plan's databases go in first, so the rules that use them are
	// applied with their sets filled, in one batch.
	var db *geo.DB
	if next.geo != nil {
		db = next.geo.Current()
	}
	if err := p.table.UpdateGeo(db); err != nil {
		return fmt.Errorf("geoip sets: %w", err)
	}
	if err := p.commitTable(prev, next); err != nil {
		return err
	}
	p.followGeo(ctx, next.geo)
	p.publishGeofeed(next)
	p.egress, p.wan = next.Firewall.Egress, next.WAN
	if p.egress != nil {
		// The admin API's bytes per egress come from connection tracking;
		// without it, it shows connections only.
		if err := firewall.EnableFlowAccounting(); err != nil {
			p.log.Warn("egress: bytes per egress address are not counted", "err", err)
		}
	}
	return nil
}

// followGeo runs the plan's database watcher in place of the one
// running: a database replaced on disk then updates the geo sets in place,
// without a reload. The plan's own watcher runs (not the previous one,
// even for the same files) because the flow, Access and DNS parts look up
// records' countries through the plan's watcher.
func (p *fwPart) followGeo(ctx context.Context, w *geo.Watcher) {
	if w == p.geo {
		return
	}
	p.stopGeo()
	if w == nil {
		return
	}
	table := p.table
	w.OnChange(table.UpdateGeo)
	p.geo = w
	p.geoRun.start(ctx, func(ctx context.Context) error { w.Run(ctx); return nil })
	p.metrics.set("geoip", geo.NewCollector(w))
}

func (p *fwPart) stopGeo() {
	if p.geo == nil {
		return
	}
	p.geoRun.stop()
	p.metrics.set("geoip", nil)
	p.geo = nil
}

func (p *fwPart) commitTable(prev, next *Plan) error {
	ids := withDeviceIdentities(next.fwStatic, p.devs.Load(), next.posture != nil)
	// The quarantine rule is not in firewall:, so a change of it is a
	// change of the rules.
	if p.table != nil && prev != nil && sameTable(prev.Firewall, next.Firewall) && prev.quarantineRule == next.quarantineRule {
		if lists, ok := changedLists(prev, next); ok {
			if err := p.updateInPlace(next.Firewall.Rules, lists, ids); err != nil {
				return err
			}
			p.static, p.rules, p.quarantine = next.fwStatic, next.Config.Firewall, next.posture != nil
			return nil
		}
	}
	return p.replace(next, ids)
}

// publishGeofeed writes the RFC 8805 geofeed of the egress addresses to
// <state_dir>/egress/geofeed.csv (for the web server or the RPSL geofeed:
// attribute that points at it), or removes the one an earlier plan wrote.
// A geofeed that cannot be written is logged: the addresses are in the
// kernel either way.
func (p *fwPart) publishGeofeed(next *Plan) {
	file := ""
	if eg := next.Firewall.Egress; eg != nil {
		file = filepath.Join(next.Config.Appliance.StateDir, "egress", "geofeed.csv")
		if err := writeFileAtomic(file, eg.Geofeed()); err != nil {
			p.log.Error("egress geofeed", "file", file, "err", err)
		} else {
			p.log.Info("egress policies", "addresses", len(eg.Addresses()), "geofeed", file)
		}
	}
	if p.geofeed != "" && p.geofeed != file {
		if err := os.Remove(p.geofeed); err != nil && !errors.Is(err, fs.ErrNotExist) {
			p.log.Warn("remove the old egress geofeed", "file", p.geofeed, "err", err)
		}
	}
	p.geofeed = file
	served := &servedGeofeed{}
	if eg := next.Firewall.Egress; eg != nil && next.Config.Firewall.Egress.GeofeedPath != "" {
		served = &servedGeofeed{path: next.Config.Firewall.Egress.GeofeedPath, csv: eg.Geofeed()}
	}
	p.served.Store(served)
}

// servedGeofeed is the geofeed the admin listener serves at path; path ""
// serves none.
type servedGeofeed struct {
	path string
	csv  []byte
}

// servedFeed is admin.Options.Geofeed.
func (p *fwPart) servedFeed() (string, []byte) {
	if g := p.served.Load(); g != nil {
		return g.path, g.csv
	}
	return "", nil
}

// sameTable tells whether two specs differ at most in their rules.
func sameTable(a, b firewall.Spec) bool {
	return a.WAN == b.WAN && slices.Equal(a.LAN, b.LAN) && a.Sampling == b.Sampling &&
		a.DenyForward == b.DenyForward && a.IdentityInterface == b.IdentityInterface &&
		reflect.DeepEqual(a.Egress, b.Egress) &&
		reflect.DeepEqual(a.Clamp, b.Clamp) && reflect.DeepEqual(a.Tunnels, b.Tunnels)
}

// changedLists names the lists whose contents differ between the plans;
// ok is false unless list contents are all that changed in the rules.
func changedLists(prev, next *Plan) ([]string, bool) {
	pf, nf := prev.Config.Firewall, next.Config.Firewall
	if (pf == nil) != (nf == nil) {
		return nil, false
	}
	if nf == nil {
		return nil, true
	}
	return nf.ChangedLists(pf)
}

// replace swaps the plan's whole table in with one netlink batch.
func (p *fwPart) replace(next *Plan, ids []firewall.Identity) error {
	if next.WAN == "" {
		p.log.Warn("no interfaces.wan and no default route: internet-bound traffic is not masqueraded")
	}
	prog := firewall.Compile(next.Firewall)
	if err := p.table.UpdateIdentities(ids); err != nil {
		return err
	}
	if err := p.table.Apply(prog); err != nil {
		return err
	}
	p.static, p.ids, p.rules, p.quarantine = next.fwStatic, ids, next.Config.Firewall, next.posture != nil
	if rs := next.Firewall.Rules; rs != nil {
		p.log.Info("firewall rules applied", "rules", len(rs.Rules()))
	}
	return nil
}

// updateInPlace handles a plan that changes only list contents or
// identities: sets are updated from the compiled ruleset without touching
// rules (and their counters).
func (p *fwPart) updateInPlace(rs *firewall.Ruleset, lists []string, ids []firewall.Identity) error {
	for _, name := range lists {
		items, _ := rs.List(name)
		if err := p.table.UpdateList(name, items); err != nil {
			return err
		}
		p.log.Info("firewall list updated in place", "list", name, "entries", len(items))
	}
	if !reflect.DeepEqual(ids, p.ids) {
		if err := p.table.UpdateIdentities(ids); err != nil {
			return err
		}
		p.ids = ids
	}
	return nil
}

// view is what the console shows of the firewall: the rules in force in
// evaluation order with what the kernel counted for each, and the lists'
// sizes. The caller holds the gateway's lock.
func (p *fwPart) view() (admin.FirewallView, error) {
	var v admin.FirewallView
	if p.rules == nil {
		return v, nil
	}
	counts := map[string]firewall.Counter{}
	if p.table != nil {
		var err error
		if counts, err = p.table.Counters(); err != nil {
			return v, fmt.Errorf("read the firewall's counters: %w", err)
		}
	}
	for _, r := range p.rules.Rules {
		if r.Enabled != nil && !*r.Enabled {
			continue
		}
		n := counts[r.ID]
		v.Rules = append(v.Rules, admin.FirewallRule{ID: r.ID, Action: r.Action, Expression: r.Expression, Packets: n.Packets, Bytes: n.Bytes})
	}
	for name, entries := range p.rules.Lists {
		v.Lists = append(v.Lists, admin.FirewallList{Name: name, Entries: len(entries)})
	}
	slices.SortFunc(v.Lists, func(a, b admin.FirewallList) int { return strings.Compare(a.Name, b.Name) })
	return v, nil
}

func (p *fwPart) close() {
	p.stopGeo()
	p.served.Store(nil)
	p.egress = nil
	if p.table == nil {
		return
	}
	p.metrics.set("firewall", nil)
	if err := p.table.Close(); err != nil {
		p.log.Error("remove nftables table", "err", err)
	}
	p.table = nil
}

func (p *fwPart) ready() error { return nil }

func (p *fwPart) status(s *Status) {}
