package enroll

import (
	"context"
	"errors"
	"log/slog"
	"net/http"
	"net/netip"
	"time"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/tunnel/wireguard"
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
	Now     func() time.Time
}

// Admin serves the device endpoints of the admin API:
//
//	GET  /api/v1/devices               every device (revoked ones too)
//	GET  /api/v1/devices/{id}          one device
//	POST /api/v1/devices/{id}/revoke   revoke it (idempotent)
//
// Answers are JSON; errors are {"error":{"code","message"}} with 404 for an
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
	return a
}

// ServeHTTP implements http.Handler.
func (a *Admin) ServeHTTP(w http.ResponseWriter, r *http.Request) { a.mux.ServeHTTP(w, r) }

// Device is a device as the admin API shows it.
type Device struct {
	ID        string        `json:"id"`
	Name      string        `json:"name"`
	Email     string        `json:"email"`
	Subject   string        `json:"subject"`
	Groups    []string      `json:"groups"`
	PublicKey wireguard.Key `json:"public_key"`
	Address   netip.Addr    `json:"address"`
	Created   time.Time     `json:"created"`
	LastSeen  time.Time     `json:"last_seen"`
	Expires   time.Time     `json:"expires"`
	Revoked   bool          `json:"revoked"`
	RevokedAt *time.Time    `json:"revoked_at,omitempty"`
	Status    string        `json:"status"` // active | expired | revoked
}

// DeviceOf converts a registry device for the admin API at time now.
func DeviceOf(d identity.Device, now time.Time) Device {
	out := Device{
		ID: d.ID, Name: d.Name, Email: d.Email, Subject: d.Subject, Groups: d.Groups, PublicKey: d.PublicKey,
		Address: d.Address, Created: d.Created, LastSeen: d.LastSeen, Expires: d.Expires, Revoked: d.Revoked, Status: "active",
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
	}
	return out
}

func (a *Admin) list(w http.ResponseWriter, r *http.Request) {
	devs, err := a.reg.List(r.Context())
	if err != nil {
		a.fail(w, r, "", err)
		return
	}
	now := a.opts.Now()
	out := make([]Device, 0, len(devs))
	for _, d := range devs {
		out = append(out, DeviceOf(d, now))
	}
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
