package gateway

import (
	"context"
	"log/slog"
	"reflect"
	"slices"
	"time"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/posture"
	"github.com/edgegw/edgegw/access/scim"
	"github.com/edgegw/edgegw/firewall/geo"
)

// identityPart runs who is who: the static identities of the resolver
// every consumer asks, and, when WireGuard is configured with an identity
// section or enrollment, the device registry (and the goroutine that keeps
// its snapshot current), the devices API, device enrollment and SCIM
// provisioning (/scim/v2) on the Access listener: everything that writes
// to the registry.
type identityPart struct {
	log     *slog.Logger
	metrics *metrics
	devs    *identity.Devices
	res     *identity.Resolver
	api     *swapHandler // the admin API's /api/v1/devices
	local   *local       // enrollment is served on the Access listener

	reg    *identity.Registry
	opts   identity.Options // what reg was opened with
	unsub  func()
	run    actor
	enr    *enroll.Handler
	enrRun actor        // enr.Run: enrollment notifications
	scim   *scim.Server // SCIM provisioning, writing to reg
	// geo follows the plan's GeoIP databases for enrollment policies'
	// geo selectors.
	geo geo.Live
	// posture takes devices' posture reports and quarantines; postRun
	// owns its staleness sweep.
	posture *posture.Server
	postRun actor
	// groupRun owns the identity.max_group_age sweep while groupAge > 0.
	groupRun actor
	groupAge time.Duration
}

func (p *identityPart) name() string { return "identity" }

func (p *identityPart) commit(ctx context.Context, prev, next *Plan) error {
	p.res.SetStatic(next.static)
	if !next.registryOn {
		p.close()
		return nil
	}
	if p.reg == nil || !sameRegistry(p.opts, next.registry) {
		if err := p.open(ctx, next.registry); err != nil {
			return err
		}
	}
	if err := p.commitEnroll(ctx, next); err != nil {
		return err
	}
	if err := p.commitPosture(ctx, next); err != nil {
		return err
	}
	p.commitGroupRefresh(ctx, next)
	return p.commitSCIM(ctx, next)
}

// commitGroupRefresh, for providers without SCIM, takes each Access
// sign-in's groups into the user's devices and, with
// identity.max_group_age, drops groups no sign-in refreshed within it.
// With SCIM the provider pushes changes itself and neither runs.
func (p *identityPart) commitGroupRefresh(ctx context.Context, next *Plan) {
	maxAge := identityOf(next.Config).MaxGroupAge
	if next.Config.SCIM != nil {
		maxAge = 0
		p.local.signIns.set(nil)
	} else {
		reg := p.reg
		p.local.signIns.set(func(ctx context.Context, issuer, subject string, groups []string) {
			devs, err := reg.RefreshUserGroups(ctx, identity.SubjectOf(issuer, subject), groups)
			if err != nil {
				p.log.Warn("refresh a device's groups at sign-in", "err", err)
				return
			}
			if len(devs) > 0 {
				p.sync(ctx, reg)
			}
		})
	}
	if maxAge == p.groupAge {
		return
	}
	p.stopGroupExpiry()
	if maxAge > 0 {
		reg := p.reg
		p.groupRun.start(ctx, func(ctx context.Context) error { return reg.RunGroupExpiry(ctx, maxAge, 10*time.Second) })
		p.groupAge = maxAge
	}
}

func (p *identityPart) stopGroupExpiry() {
	if p.groupAge == 0 {
		return
	}
	p.groupRun.stop()
	p.groupAge = 0
}

// commitPosture serves posture reports (posture:) on the Access listener
// and runs the sweep that quarantines devices whose reports went stale.
// A reload swaps the rules in place.
func (p *identityPart) commitPosture(ctx context.Context, next *Plan) error {
	if next.posture == nil {
		p.closePosture()
		return nil
	}
	if p.posture != nil {
		p.posture.Update(next.posture, next.postureKey)
		return nil
	}
	reg := p.reg
	srv, err := posture.New(posture.Options{
		Registry:   reg,
		Policy:     next.posture,
		GatewayKey: next.postureKey,
		// A quarantine or release is answered once the identity sets
		// follow the registry.
		Applied: func(ctx context.Context) { p.sync(ctx, reg) },
		Logger:  p.log.With("component", "posture"),
	})
	if err != nil {
		return err
	}
	p.posture = srv
	p.devs.SetPosture(true)
	p.postRun.start(ctx, srv.Run)
	p.metrics.set("posture", srv)
	p.local.posture.set(srv)
	p.log.Info("device posture: reports taken at "+posture.Path, "max_age", next.posture.MaxAge())
	return nil
}

func (p *identityPart) closePosture() {
	if p.posture == nil {
		return
	}
	p.local.posture.set(nil)
	p.devs.SetPosture(false)
	p.metrics.set("posture", nil)
	p.postRun.stop()
	p.posture = nil
}

// commitSCIM serves SCIM provisioning (scim:) on the Access listener. The
// plan read the token file, so a reload after it was rewritten rotates
// the token, and one that cannot be read fails with the old token still
// in force.
func (p *identityPart) commitSCIM(ctx context.Context, next *Plan) error {
	if next.Config.SCIM == nil {
		p.closeSCIM()
		return nil
	}
	if p.scim != nil {
		p.scim.SetToken(next.scimToken)
		return nil
	}
	reg := p.reg
	srv, err := scim.Open(ctx, scim.Options{
		StateDir: next.Config.Appliance.StateDir,
		// A deactivated or deleted user's Access sessions end with their
		// devices.
		Registry: endingSessions{reg, &p.local.sessions},
		// A deactivation is answered once the WireGuard peers and
		// identity sets follow the registry.
		Applied: func(ctx context.Context) { p.sync(ctx, reg) },
		Token:   next.scimToken,
		Logger:  p.log.With("component", "scim"),
	})
	if err != nil {
		return err
	}
	p.scim = srv
	p.metrics.set("scim", srv.Collector())
	p.local.scim.set(srv)
	users, groups := srv.Counts()
	p.log.Info("SCIM provisioning served at "+scim.Prefix, "users", users, "groups", groups)
	return nil
}

// endingSessions is the registry as SCIM sees it: revoking a user also
// ends their Access sessions, whether or not they have devices.
type endingSessions struct {
	*identity.Registry
	sessions *sessionEnder
}

func (e endingSessions) RevokeUser(ctx context.Context, emails []string) ([]identity.Device, error) {
	devs, err := e.Registry.RevokeUser(ctx, emails)
	// Sessions end even when the registry failed: the provider retries
	// the request, and ending them twice is harmless.
	e.sessions.end(emails)
	return devs, err
}

func (p *identityPart) closeSCIM() {
	if p.scim == nil {
		return
	}
	p.local.scim.set(nil)
	p.metrics.set("scim", nil)
	if err := p.scim.Close(); err != nil {
		p.log.Error("close SCIM store", "err", err)
	}
	p.scim = nil
}

func (p *identityPart) open(ctx context.Context, o identity.Options) error {
	o.Logger = p.log.With("component", "identity")
	reg, err := identity.Open(ctx, o)
	if err != nil {
		return err
	}
	p.close()
	p.reg, p.opts = reg, o
	p.unsub = reg.Subscribe(p.devs.Publish)
	p.devs.Publish(reg.Snapshot())
	p.local.logouts.set(reg)
	p.metrics.set("identity", reg.Collector())
	api := enroll.NewAdmin(reg, enroll.AdminOptions{
		Logger:   p.log,
		Revoked:  func(ctx context.Context, _ identity.Device) { p.sync(ctx, reg) },
		Approved: func(ctx context.Context, _ identity.Device) { p.sync(ctx, reg) },
	})
	p.metrics.set("devices-api", api)
	p.api.set(api)
	p.run.start(ctx, reg.Run)
	p.log.Info("device registry open", "store", storeName(o.Store), "devices", reg.Snapshot().Len())
	return nil
}

// commitEnroll serves device enrollment (tunnels.wireguard.enrollment)
// when enabled, writing to the registry.
func (p *identityPart) commitEnroll(ctx context.Context, next *Plan) error {
	wg := next.Config.Tunnels.WireGuard
	if wg.Enrollment == nil || !wg.Enrollment.Enabled {
		p.closeEnroll()
		return nil
	}
	reg, tun := p.reg, next.enrollTunnel
	p.geo.Set(next.geo)
	opts := enroll.Options{
		Policies:  wg.Enrollment.Policies,
		Countries: &p.geo,
		KeyExpiry: wg.Enrollment.KeyExpiry,
		Registry:  reg,
		Tunnel:    func(context.Context) (enroll.Tunnel, error) { return tun, nil },
		Changed:   func(ctx context.Context, _ identity.Device) { p.sync(ctx, reg) },
		Logger:    p.log,

		GatewayName:       wg.Enrollment.GatewayName,
		ClientTokens:      !wg.Enrollment.GatewayGrantRequired(),
		MaxDevicesPerUser: wg.Enrollment.MaxDevicesPerUser,
		NotifyURL:         wg.Enrollment.NotifyURL,
		AdminApproval:     wg.Enrollment.Approval == "admin",
	}
	if m := wg.Enrollment.NotifyEmail; m != nil {
		opts.NotifyMail = &enroll.Mail{Server: m.Server, From: m.From, Admins: m.Admins, User: m.TellUser(),
			Username: m.Username, Password: next.enrollMailPassword, TLS: next.enrollMailTLS}
	}
	for _, prov := range identityOf(next.Config).Providers {
		opts.Providers = append(opts.Providers, enroll.Provider{Provider: prov, DeviceClientID: prov.DeviceClientID})
	}
	if p.enr != nil {
		return p.enr.Update(opts) // in place: sign-ins in progress survive
	}
	h, err := enroll.New(opts)
	if err != nil {
		return err
	}
	p.enr = h
	p.enrRun.start(ctx, h.Run)
	p.metrics.set("enroll", h)
	p.local.enroll.set(h)
	return nil
}

// sameRegistry tells whether a reload can keep the open registry.
func sameRegistry(a, b identity.Options) bool {
	return a.Store == b.Store && a.StateDir == b.StateDir && a.Pool == b.Pool &&
		slices.Equal(a.Reserved, b.Reserved) && reflect.DeepEqual(a.Now, b.Now)
}

// storeName hides a postgres URL's password in logs.
func storeName(s string) string {
	if s == "" || s == "sqlite" {
		return "sqlite"
	}
	return "postgres"
}

// sync brings the registry's snapshot, and so the WireGuard peers and the
// identity sets, up to date before an enrollment or a revocation answers.
// It waits at most 5 s for the device loop; the change applies anyway.
func (p *identityPart) sync(ctx context.Context, reg *identity.Registry) {
	if err := reg.Refresh(ctx); err != nil {
		p.log.Warn("device registry refresh", "err", err)
		return
	}
	wctx, cancel := context.WithTimeout(ctx, 5*time.Second)
	defer cancel()
	if err := p.devs.WaitApplied(wctx, reg.Snapshot()); err != nil {
		p.log.Warn("enrolled devices: the kernel did not follow the registry in time", "err", err)
	}
}

// touch records a device's last-seen time, when a registry runs. The
// caller holds the gateway's lock.
func (p *identityPart) touch(ctx context.Context, id string, t time.Time) error {
	if p.reg == nil {
		return nil
	}
	return p.reg.Touch(ctx, id, t)
}

func (p *identityPart) closeEnroll() {
	if p.enr == nil {
		return
	}
	p.local.enroll.set(nil)
	p.metrics.set("enroll", nil)
	p.enrRun.stop()
	p.enr = nil
}

func (p *identityPart) close() {
	p.closeSCIM()
	p.closePosture()
	p.stopGroupExpiry()
	p.local.signIns.set(nil)
	p.closeEnroll()
	if p.reg == nil {
		return
	}
	p.unsub()
	p.local.logouts.set(nil)
	p.api.set(nil)
	p.metrics.set("devices-api", nil)
	if err := p.run.stop(); err != nil {
		p.log.Error("device registry stopped", "err", err)
	}
	p.metrics.set("identity", nil)
	if err := p.reg.Close(); err != nil {
		p.log.Error("close device registry", "err", err)
	}
	p.reg = nil
	p.devs.Publish(nil)
}

func (p *identityPart) ready() error { return nil }

func (p *identityPart) status(s *Status) {
	if p.reg == nil {
		return
	}
	s.Devices = p.reg.Snapshot().Len()
}
