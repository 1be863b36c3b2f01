package enroll

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"time"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall/rules"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// Admin API paths, served by Admin on the admin listener.
const (
	PathDevices = "/api/v1/devices"
)

// AdminOptions configure Admin.
type AdminOptions struct {
	Logger *slog.Logger
	// Revoked is called after a device was revoked, with the request's
	// context, so the WireGuard device can drop the peer now (for example
	// with the registry's Refresh) rather than at its next sync.
	Revoked func(context.Context, identity.Device)
	// Approved is called after a pending device was approved, as Revoked.
	Approved func(context.Context, identity.Device)
	Now      func() time.Time
}

// Admin serves the device endpoints of the admin API:
//
//	GET  /api/v1/devices               every device (revoked ones too)
//	GET  /api/v1/devices?q=&status=&offset=&limit=
//	                                   one page of the devices that match
//	GET  /api/v1/devices/{id}          one device
//	POST /api/v1/devices/{id}/revoke   revoke it (idempotent)
//	POST /api/v1/devices/{id}/approve  let a pending device in (idempotent; 409 if revoked)
//
// A list answer carries X-Total-Count, the number of devices that match
// before paging. Answers are JSON; errors are {"error":{"code","message"}} with 404 for an
// unknown id and 503 when the registry is down.
type Admin struct {
	reg     Registry
	opts    AdminOptions
	log     *slog.Logger
	mux     *http.ServeMux
	metrics *metrics
}

// NewAdmin makes the admin handler over reg.
func NewAdmin(reg Registry, opts AdminOptions) *Admin {
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	a := &Admin{reg: reg, opts: opts, log: opts.Logger.With("component", "enroll"), mux: http.NewServeMux(), metrics: newMetrics()}
	a.mux.HandleFunc("GET "+PathDevices, a.list)
	a.mux.HandleFunc("GET "+PathDevices+"/{id}", a.show)
	a.mux.HandleFunc("POST "+PathDevices+"/{id}/revoke", a.revoke)
	a.mux.HandleFunc("POST "+PathDevices+"/{id}/approve", a.approve)
	return a
}

// ServeHTTP implements http.Handler.
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Device is a device as the admin API shows it.
type Device struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Email     string     `json:"email"`
	Subject   string     `json:"subject"`
	Groups    []string   `json:"groups"`
	PublicKey wgconf.Key `json:"public_key"`
	Address   netip.Addr `json:"address"`
	Created   time.Time  `json:"created"`
	LastSeen  time.Time  `json:"last_seen"`
	Expires   time.Time  `json:"expires"`
	Revoked   bool       `json:"revoked"`
	RevokedAt *time.Time `json:"revoked_at,omitempty"`
	Status    string     `json:"status"` // active | pending | expired | revoked
	Pending   bool       `json:"pending"`
	// Quarantined: the device failed its posture checks or stopped
	// reporting (posture:); it reaches only what remediation needs.
	Quarantined bool `json:"quarantined"`
	// Posture is what the device's current posture report says, as
	// device.posture.* rules see it; absent before a report and once it
	// went stale.
	Posture *DevicePosture `json:"posture,omitempty"`
}

// DevicePosture is a device's posture attributes in the admin API: each
// yes/no check "true", "false" or "unknown", each text "" when unknown.
type DevicePosture struct {
	OS            string `json:"os,omitempty"`
	OSVersion     string `json:"os_version,omitempty"`
	ClientVersion string `json:"client_version,omitempty"`
	DiskEncrypted string `json:"disk_encrypted"`
	Firewall      string `json:"firewall"`
	Compliant     string `json:"compliant"`
}

// postureOf is p for the admin API, nil when it knows nothing.
func postureOf(p rules.Posture) *DevicePosture {
	if p == (rules.Posture{}) {
		return nil
	}
	return &DevicePosture{OS: p.OS, OSVersion: p.OSVersion, ClientVersion: p.ClientVersion,
		DiskEncrypted: p.DiskEncrypted.String(), Firewall: p.Firewall.String(), Compliant: p.Compliant.String()}
}

// DeviceOf converts a registry device for the admin API at time now.
func DeviceOf(d identity.Device, now time.Time) Device {
	out := Device{
		ID: d.ID, Name: d.Name, Email: d.Email, Subject: d.Subject, Groups: d.Groups, PublicKey: d.PublicKey,
		Address: d.Address, Created: d.Created, LastSeen: d.LastSeen, Expires: d.Expires, Revoked: d.Revoked, Status: "active",
		Pending: d.Pending, Quarantined: d.Quarantined, Posture: postureOf(d.Posture),
	}
	if out.Groups == nil {
		out.Groups = []string{}
	}
	switch {
	case d.Revoked:
		t := d.RevokedAt
		out.RevokedAt, out.Status = &t, "revoked"
	case !d.Expires.IsZero() && !now.Before(d.Expires):
		out.Status = "expired"
	case d.Pending:
		out.Status = "pending"
	}
	return out
}

func (a *Admin) approve(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := a.reg.Approve(r.Context(), id)
	if err != nil {
		a.fail(w, r, id, err)
		return
	}
	a.log.Info("device approved", "device", d.ID, "name", d.Name, "email", d.Email, "address", d.Address, "remote", r.RemoteAddr)
	if a.opts.Approved != nil {
		a.opts.Approved(r.Context(), d)
	}
	writeJSON(w, http.StatusOK, DeviceOf(d, a.opts.Now()))
}

// Pager is a registry that filters and pages in its database, as
// identity.Registry does; the device list uses it when the registry has
// it, and otherwise filters the whole List itself.
type Pager interface {
	Page(ctx context.Context, f identity.Filter) ([]identity.Device, int, error)
}

// MaxPage is the largest limit a device list accepts.
const MaxPage = 1000

// ListQuery is a device list's filter and page, from the query string:
// q matches a substring (case-insensitive) of the id, name, email,
// address or a group; status is active, expired or revoked; offset and
// limit page through the matches, oldest first. Without limit every match
// is listed, as before paging existed.
type ListQuery struct {
	Q      string
	Status string
	Offset int
	Limit  int // 0: no limit
}

// ParseListQuery reads a ListQuery from a device list's query string.
func ParseListQuery(v url.Values) (ListQuery, error) {
	q := ListQuery{Q: strings.ToLower(strings.TrimSpace(v.Get("q"))), Status: v.Get("status")}
	if len(q.Q) > 256 {
		return q, errors.New("q: at most 256 characters")
	}
	switch q.Status {
	case "", "active", "expired", "revoked":
	default:
		return q, fmt.Errorf("status %q: expected active, expired or revoked", q.Status)
	}
	for _, f := range []struct {
		name     string
		to       *int
		min, max int
	}{{"offset", &q.Offset, 0, math.MaxInt32}, {"limit", &q.Limit, 1, MaxPage}} {
		s := v.Get(f.name)
		if s == "" {
			continue
		}
		n, err := strconv.Atoi(s)
		if err != nil || n < f.min || n > f.max {
			return q, fmt.Errorf("%s %q: expected a whole number from %d to %d", f.name, s, f.min, f.max)
		}
		*f.to = n
	}
	return q, nil
}

// Match reports whether d passes the query's filter.
func (q ListQuery) Match(d Device) bool {
	if q.Status != "" && d.Status != q.Status {
		return false
	}
	if q.Q == "" {
		return true
	}
	if strings.Contains(strings.ToLower(d.ID), q.Q) || strings.Contains(strings.ToLower(d.Name), q.Q) ||
		strings.Contains(strings.ToLower(d.Email), q.Q) || (d.Address.IsValid() && strings.Contains(d.Address.String(), q.Q)) {
		return true
	}
	return slices.ContainsFunc(d.Groups, func(g string) bool { return strings.Contains(strings.ToLower(g), q.Q) })
}

func (a *Admin) list(w http.ResponseWriter, r *http.Request) {
	q, err := ParseListQuery(r.URL.Query())
	if err != nil {
		writeError(w, refuse(http.StatusBadRequest, CodeBadRequest, "Device list: "+err.Error()+".", err))
		return
	}
	now := a.opts.Now()
	if p, ok := a.reg.(Pager); ok {
		devs, total, err := p.Page(r.Context(), identity.Filter{Query: q.Q, Status: q.Status, Now: now, Offset: q.Offset, Limit: q.Limit})
		if err != nil {
			a.fail(w, r, "", err)
			return
		}
		out := make([]Device, 0, len(devs))
		for _, d := range devs {
			out = append(out, DeviceOf(d, now))
		}
		w.Header().Set("X-Total-Count", strconv.Itoa(total))
		writeJSON(w, http.StatusOK, out)
		return
	}
	devs, err := a.reg.List(r.Context())
	if err != nil {
		a.fail(w, r, "", err)
		return
	}
	out := make([]Device, 0, min(len(devs), max(q.Limit, 1)))
	total := 0
	for _, d := range devs {
		dev := DeviceOf(d, now)
		if !q.Match(dev) {
			continue
		}
		total++
		if total > q.Offset && (q.Limit == 0 || len(out) < q.Limit) {
			out = append(out, dev)
		}
	}
	w.Header().Set("X-Total-Count", strconv.Itoa(total))
	writeJSON(w, http.StatusOK, out)
}

func (a *Admin) show(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := a.reg.Get(r.Context(), id)
	if err != nil {
		a.fail(w, r, id, err)
		return
	}
	writeJSON(w, http.StatusOK, DeviceOf(d, a.opts.Now()))
}

func (a *Admin) revoke(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	d, err := a.reg.Revoke(r.Context(), id)
	if err != nil {
		a.fail(w, r, id, err)
		return
	}
	a.metrics.revoked.Inc()
	a.log.Info("device revoked", "device", d.ID, "name", d.Name, "email", d.Email, "address", d.Address, "remote", r.RemoteAddr)
	if a.opts.Revoked != nil {
		a.opts.Revoked(r.Context(), d)
	}
	writeJSON(w, http.StatusOK, DeviceOf(d, a.opts.Now()))
}

func (a *Admin) fail(w http.ResponseWriter, r *http.Request, id string, err error) {
	var e *apiError
	switch {
	case errors.Is(err, identity.ErrNotFound):
		e = refuse(http.StatusNotFound, "not_found", "No device has the id "+quote(id)+".", err)
	case errors.Is(err, identity.ErrNotPending):
		e = refuse(http.StatusConflict, CodeDeviceRevoked, "Device "+quote(id)+" was revoked; it cannot be approved.", err)
	case errors.Is(err, identity.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		e = refuse(http.StatusServiceUnavailable, CodeRegistryUnavailable, "The device registry is unavailable: "+err.Error(), err)
	default:
		e = refuse(http.StatusInternalServerError, CodeInternal, "The device registry failed: "+err.Error(), err)
	}
	a.log.Warn("device admin request failed", "path", r.URL.Path, "device", id, "err", err)
	writeError(w, e)
}

func quote(s string) string {
	if len(s) > 80 {
		s = s[:80] + "…"
	}
	return `"` + s + `"`
}
