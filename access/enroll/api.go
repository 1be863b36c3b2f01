package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"golang.org/x/crypto/curve25519"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/internal/replay"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// Discovery is the document at PathDiscovery. Issuer, ClientID and Scopes
// are those of the default (first) provider, for clients that know only
// one; Providers lists them all.
type Discovery struct {
	Issuer          string              `json:"issuer"`
	ClientID        string              `json:"client_id"`
	Scopes          []string            `json:"scopes"`
	Provider        string              `json:"provider"`
	Providers       []DiscoveryProvider `json:"providers"`
	EnrollEndpoint  string              `json:"enroll_endpoint"`
	BrowserEndpoint string              `json:"browser_endpoint"`
	// StartEndpoint and PollEndpoint run the gateway-started device
	// grant; a client that finds them uses them rather than EnrollEndpoint.
	StartEndpoint string `json:"start_endpoint,omitempty"`
	PollEndpoint  string `json:"poll_endpoint,omitempty"`
	Gateway       string `json:"gateway,omitempty"` // the name the approval page shows
}

// DiscoveryProvider is one provider in the discovery document.
type DiscoveryProvider struct {
	Name     string   `json:"name"`
	Issuer   string   `json:"issuer"`
	ClientID string   `json:"client_id"` // for the device authorization grant
	Scopes   []string `json:"scopes"`
}

// Request is the body of POST PathAPI.
type Request struct {
	Provider    string `json:"provider,omitempty"` // default the first provider
	IDToken     string `json:"id_token"`
	AccessToken string `json:"access_token,omitempty"` // lets the gateway read userinfo
	PublicKey   string `json:"public_key"`             // base64, as `wg pubkey` writes it
	Name        string `json:"name"`
}

// Response is what a successful enrollment returns: the device and
// everything a wg-quick file needs except the private key.
type Response struct {
	Device    DeviceInfo    `json:"device"`
	Interface InterfaceInfo `json:"interface"`
	Peer      PeerInfo      `json:"peer"`
}

// DeviceInfo describes the enrolled device.
type DeviceInfo struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Email     string     `json:"email"`
	Groups    []string   `json:"groups"`
	PublicKey wgconf.Key `json:"public_key"`
	Address   netip.Addr `json:"address"`
	Expires   time.Time  `json:"expires"`
	// Pending: the device waits for an admin's approval; the tunnel
	// carries nothing until then.
	Pending bool `json:"pending,omitempty"`
}

// InterfaceInfo is the client's [Interface] section without its key.
type InterfaceInfo struct {
	Addresses []netip.Prefix `json:"addresses"`
	DNS       []netip.Addr   `json:"dns,omitempty"`
	MTU       int            `json:"mtu,omitempty"`
}

// PeerInfo is the gateway as the client's [Peer].
type PeerInfo struct {
	PublicKey           wgconf.Key     `json:"public_key"`
	Endpoint            string         `json:"endpoint"`
	AllowedIPs          []netip.Prefix `json:"allowed_ips"`
	PersistentKeepalive int            `json:"persistent_keepalive,omitempty"` // seconds
}

// ClientConfig turns the response into a wg-quick configuration with the
// device's private key.
func (r *Response) ClientConfig(priv wgconf.Key) wgconf.ClientConfig {
	return wgconf.ClientConfig{
		Name: r.Device.Name, PrivateKey: priv, Address: r.Interface.Addresses, DNS: r.Interface.DNS, MTU: r.Interface.MTU,
		GatewayPublicKey: r.Peer.PublicKey, Endpoint: r.Peer.Endpoint, AllowedIPs: r.Peer.AllowedIPs,
		PersistentKeepalive: time.Duration(r.Peer.PersistentKeepalive) * time.Second,
	}
}

// Error is the JSON body of every refusal.
type Error struct {
	Code    string `json:"code"`
	Message string `json:"message"`
}

// Error codes, also the result label of edgegw_enroll_requests_total.
const (
	CodeBadRequest          = "bad_request"
	CodeInvalidToken        = "invalid_token"
	CodeTokenExpired        = "token_expired"
	CodeTokenReused         = "token_reused"
	CodePolicyDenied        = "policy_denied"
	CodeKeyInUse            = "key_in_use"
	CodeDeviceRevoked       = "device_revoked"
	CodePoolExhausted       = "pool_exhausted"
	CodeRegistryUnavailable = "registry_unavailable"
	CodeProviderUnavailable = "provider_unavailable"
	CodeTunnelUnavailable   = "tunnel_unavailable"
	CodeInternal            = "internal_error"
	CodeBusy                = "busy"         // the one-use set is full
	CodeRateLimited         = "rate_limited" // too many requests from one source
	CodeDeviceLimit         = "device_limit" // the user has max_devices_per_user devices
	resultEnrolled          = "enrolled"
)

// apiError is a refusal: what the user reads, and the cause for the log.
type apiError struct {
	status int
	Error
	cause error
}

func refuse(status int, code, msg string, cause error) *apiError {
	return &apiError{status: status, Error: Error{Code: code, Message: msg}, cause: cause}
}

func baseURL(r *http.Request) string {
	scheme := "https"
	if r.TLS == nil {
		scheme = "http"
	}
	return scheme + "://" + r.Host
}

func (h *Handler) serveDiscovery(st *state, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		writeError(w, refuse(http.StatusMethodNotAllowed, CodeBadRequest, "Use GET.", nil))
		return
	}
	base := baseURL(r)
	d := Discovery{EnrollEndpoint: base + PathAPI, BrowserEndpoint: base + PathBrowser,
		StartEndpoint: base + PathStart, PollEndpoint: base + PathPoll, Gateway: st.opts.GatewayName}
	for i, p := range st.providers {
		dp := DiscoveryProvider{Name: p.cfg.Name, Issuer: p.cfg.Issuer, ClientID: p.cfg.deviceClientID(), Scopes: p.cfg.Scopes}
		if i == 0 {
			d.Issuer, d.ClientID, d.Scopes, d.Provider = dp.Issuer, dp.ClientID, dp.Scopes, dp.Name
		}
		d.Providers = append(d.Providers, dp)
	}
	writeJSON(w, http.StatusOK, d)
}

func (h *Handler) serveAPI(st *state, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, refuse(http.StatusMethodNotAllowed, CodeBadRequest, "Use POST with a JSON body.", nil))
		return
	}
	if !st.opts.ClientTokens {
		h.fail(w, r, "device", nil, refuse(http.StatusForbidden, CodeClientTokens, "This gateway enrolls devices only through sign-ins it starts itself (enrollment.require_gateway_grant): run edgegw enroll from this release or later, without --browser.", errors.New("id_token from the client refused: require_gateway_grant")))
		return
	}
	req, pub, name, aerr := parseRequest(http.MaxBytesReader(w, r.Body, 64<<10))
	if aerr != nil {
		h.fail(w, r, "device", nil, aerr)
		return
	}
	p := st.providers[0]
	if req.Provider != "" {
		if p = st.byName[req.Provider]; p == nil {
			h.fail(w, r, "device", nil, refuse(http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("No identity provider is called %q on this gateway.", req.Provider), nil))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	d, err := h.discover(ctx, p)
	if err != nil {
		h.fail(w, r, "device", nil, refuse(http.StatusServiceUnavailable, CodeProviderUnavailable, "The gateway cannot reach the identity provider right now; try again shortly.", err))
		return
	}
	l, err := h.verify(ctx, st, p, d, d.device, req.IDToken, req.AccessToken, "")
	if err != nil {
		var te *tokenError
		code := CodeInvalidToken
		if errors.As(err, &te) {
			code = te.code
		}
		msg := "The sign-in token was not accepted; sign in again."
		if code == CodeTokenExpired {
			msg = "The sign-in is too old to enroll a device; sign in again."
		}
		h.fail(w, r, "device", nil, refuse(http.StatusUnauthorized, code, msg, err))
		return
	}
	// Only now that the token verified is it recorded: garbage and forged
	// tokens never reach the one-use set.
	if aerr := h.claim(l.use, l.Expiry.Add(time.Minute), "This sign-in was already used to enroll a device; sign in again."); aerr != nil {
		h.fail(w, r, "device", l, aerr)
		return
	}
	resp, aerr := h.enroll(ctx, st, r, l, name, pub)
	if aerr != nil {
		// A sign-in that enrolled nothing may be tried again.
		h.used.Remove(l.use)
		h.fail(w, r, "device", l, aerr)
		return
	}
	h.metrics.observe("device", resultEnrolled, time.Since(start))
	writeJSON(w, http.StatusOK, resp)
}

// parseRequest reads and checks an enrollment request from a client.
func parseRequest(body io.Reader) (Request, wgconf.Key, string, *apiError) {
	var req Request
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(&req); err != nil {
		return req, wgconf.Key{}, "", refuse(http.StatusBadRequest, CodeBadRequest, "The request is not the expected JSON: "+err.Error(), err)
	}
	if dec.More() {
		return req, wgconf.Key{}, "", refuse(http.StatusBadRequest, CodeBadRequest, "The request has data after its JSON object.", nil)
	}
	pub, name, aerr := checkDevice(req.PublicKey, req.Name)
	if aerr == nil && req.IDToken == "" {
		aerr = refuse(http.StatusUnauthorized, CodeInvalidToken, "No id_token: sign in with the identity provider first (edgegw enroll does this).", nil)
	}
	return req, pub, name, aerr
}

// checkDevice validates the public key and the name a client sent.
func checkDevice(key, name string) (wgconf.Key, string, *apiError) {
	pub, err := wgconf.ParseKey(key)
	if err != nil {
		return pub, "", refuse(http.StatusBadRequest, CodeBadRequest, "public_key: "+err.Error(), err)
	}
	probe := [32]byte{1}
	if _, err := curve25519.X25519(probe[:], pub[:]); err != nil {
		return pub, "", refuse(http.StatusBadRequest, CodeBadRequest, "public_key is a low-order point with which no WireGuard handshake can succeed; generate a new key pair.", err)
	}
	name = strings.TrimSpace(name)
	switch {
	case name == "":
		return pub, "", refuse(http.StatusBadRequest, CodeBadRequest, "name: missing: give the device a name such as alice-laptop.", nil)
	case !utf8.ValidString(name) || utf8.RuneCountInString(name) > 64:
		return pub, "", refuse(http.StatusBadRequest, CodeBadRequest, "name: expected at most 64 characters of UTF-8.", nil)
	case strings.ContainsFunc(name, func(r rune) bool { return unicode.IsControl(r) }):
		return pub, "", refuse(http.StatusBadRequest, CodeBadRequest, "name: control characters are not allowed.", nil)
	}
	return pub, name, nil
}

// enroll decides and registers: policy, then the tunnel's settings (so a
// gateway without them registers nothing), then the registry.
func (h *Handler) enroll(ctx context.Context, st *state, r *http.Request, l *login, name string, pub wgconf.Key) (*Response, *apiError) {
	if aerr := h.decide(st, r, l); aerr != nil {
		return nil, aerr
	}
	tun, err := st.opts.Tunnel(ctx)
	if err != nil {
		return nil, refuse(http.StatusServiceUnavailable, CodeTunnelUnavailable, "The gateway's WireGuard tunnel is not ready; nothing was registered. Try again shortly.", err)
	}
	subject := SubjectOf(l.Issuer, l.Subject)
	if st.opts.MaxDevicesPerUser > 0 {
		h.limitMu.Lock()
		defer h.limitMu.Unlock()
		if aerr := h.checkDeviceLimit(ctx, st, subject, pub); aerr != nil {
			return nil, aerr
		}
	}
	dev, err := st.opts.Registry.Enroll(ctx, identity.Enrollment{
		Name: name, Email: l.Email, Subject: subject, Groups: l.Groups,
		PublicKey: pub, Expires: h.now().Add(st.opts.KeyExpiry), Pending: st.opts.AdminApproval,
	})
	if err != nil {
		return nil, registryError(err)
	}
	h.notify(st, r, l.Provider, dev)
	h.log.Info("device enrolled", "device", dev.ID, "name", dev.Name, "email", dev.Email, "provider", l.Provider,
		"address", dev.Address, "public_key", wgconf.Key(dev.PublicKey).String(), "expires", dev.Expires, "pending", dev.Pending)
	if st.opts.Changed != nil {
		st.opts.Changed(ctx, dev)
	}
	return buildResponse(r, dev, tun), nil
}

// checkDeviceLimit refuses a new key to a user who already has
// MaxDevicesPerUser usable devices; a key the user already has renews.
func (h *Handler) checkDeviceLimit(ctx context.Context, st *state, subject string, pub wgconf.Key) *apiError {
	devs, err := st.opts.Registry.List(ctx)
	if err != nil {
		return registryError(err)
	}
	now, n := h.now(), 0
	for _, d := range devs {
		if d.Subject != subject || d.Revoked || !d.Expires.After(now) {
			continue
		}
		if d.PublicKey == pub {
			return nil // a renewal: the count does not grow
		}
		n++
	}
	if n >= st.opts.MaxDevicesPerUser {
		return refuse(http.StatusForbidden, CodeDeviceLimit, fmt.Sprintf("You already have %d devices on this gateway, the most allowed; nothing was registered. Revoke one you no longer use (or ask your administrator) and enroll again.", n),
			fmt.Errorf("user has %d usable devices, limit %d", n, st.opts.MaxDevicesPerUser))
	}
	return nil
}

// decide evaluates the enrollment policies for a login coming from the
// request's source address.
func (h *Handler) decide(st *state, r *http.Request, l *login) *apiError {
	var src netip.Addr
	if ap, err := netip.ParseAddrPort(r.RemoteAddr); err == nil {
		src = ap.Addr().Unmap()
	}
	nw := policy.Network{Addr: src}
	if c := st.opts.Countries; c != nil && src.IsValid() {
		nw.Country = c.Country(src)
	}
	dec := st.policies.Evaluate(policy.Input{
		Identity: &policy.Identity{Email: l.Email, Groups: l.Groups, Claims: l.Claims},
		Network:  nw,
	})
	if dec.Allowed {
		return nil
	}
	who := l.Email
	if who == "" {
		who = "without a verified email address"
	}
	cause := fmt.Errorf("denied by policy %q (action %q)", dec.Policy, dec.Action)
	if dec.Policy == "" {
		cause = errors.New("no enrollment policy matched")
	}
	return refuse(http.StatusForbidden, CodePolicyDenied, fmt.Sprintf("Your account (%s) may not enroll devices on this gateway. Ask your administrator if you need access.", who), cause)
}

// registryError maps the registry's errors to what the user reads.
func registryError(err error) *apiError {
	switch {
	case errors.Is(err, identity.ErrKeyInUse):
		return refuse(http.StatusConflict, CodeKeyInUse, "This WireGuard public key is already registered to another user. Generate a new key pair (edgegw enroll makes a new one each run) and enroll again.", err)
	case errors.Is(err, identity.ErrRevoked):
		return refuse(http.StatusConflict, CodeDeviceRevoked, "This key belongs to a device that was revoked. Generate a new key pair and enroll again.", err)
	case errors.Is(err, identity.ErrPoolExhausted):
		return refuse(http.StatusServiceUnavailable, CodePoolExhausted, "The gateway has no free tunnel address for another device; nothing was registered. Ask your administrator to revoke unused devices or enlarge the WireGuard address range.", err)
	case errors.Is(err, identity.ErrUnavailable), errors.Is(err, context.DeadlineExceeded):
		return refuse(http.StatusServiceUnavailable, CodeRegistryUnavailable, "The gateway's device registry is unavailable; nothing was registered. Try again in a minute.", err)
	default:
		return refuse(http.StatusInternalServerError, CodeInternal, "The gateway could not register the device; nothing was registered. The administrator can find the cause in the gateway's log.", err)
	}
}

func buildResponse(r *http.Request, dev identity.Device, tun Tunnel) *Response {
	bits := 32
	if dev.Address.Is6() {
		bits = 128
	}
	ep := tun.Endpoint
	if ep == "" {
		host := r.Host
		if h, _, err := net.SplitHostPort(r.Host); err == nil {
			host = h
		}
		ep = net.JoinHostPort(strings.Trim(host, "[]"), strconv.Itoa(tun.ListenPort))
	}
	return &Response{
		Device: DeviceInfo{
			ID: dev.ID, Name: dev.Name, Email: dev.Email, Groups: dev.Groups,
			PublicKey: dev.PublicKey, Address: dev.Address, Expires: dev.Expires, Pending: dev.Pending,
		},
		Interface: InterfaceInfo{Addresses: []netip.Prefix{netip.PrefixFrom(dev.Address, bits)}, DNS: tun.DNS, MTU: tun.MTU},
		Peer: PeerInfo{
			PublicKey: tun.PublicKey, Endpoint: ep, AllowedIPs: tun.AllowedIPs,
			PersistentKeepalive: int(tun.PersistentKeepalive / time.Second),
		},
	}
}

// claim records a verified one-use value (an ID token, a sign-in, a
// ticket) until exp: a replay is refused with reused as its message, and a
// full set with 503 rather than forgetting older values.
func (h *Handler) claim(k replay.Key, exp time.Time, reused string) *apiError {
	switch err := h.used.Add(k, h.now(), exp); {
	case errors.Is(err, replay.ErrReplayed):
		return refuse(http.StatusUnauthorized, CodeTokenReused, reused, errors.New("replayed one-use value"))
	case err != nil:
		return refuse(http.StatusServiceUnavailable, CodeBusy, "The gateway is handling too many sign-ins right now; try again in a few minutes.", err)
	}
	return nil
}

// fail answers with e, logs the cause for the admin and counts it.
func (h *Handler) fail(w http.ResponseWriter, r *http.Request, via string, l *login, e *apiError) {
	attrs := []any{"via", via, "code", e.Code, "remote", r.RemoteAddr}
	if l != nil {
		attrs = append(attrs, "email", l.Email, "provider", l.Provider, "subject", l.Subject)
	}
	if e.cause != nil {
		attrs = append(attrs, "err", e.cause)
	}
	if e.status >= 500 {
		h.log.Error("enrollment failed", attrs...)
	} else {
		h.log.Warn("enrollment refused", attrs...)
	}
	h.metrics.observe(via, e.Code, 0)
	writeError(w, e)
}

func writeError(w http.ResponseWriter, e *apiError) {
	if e.Code == CodeRegistryUnavailable || e.Code == CodeProviderUnavailable || e.Code == CodeTunnelUnavailable || e.Code == CodeBusy {
		w.Header().Set("Retry-After", "30")
	}
	writeJSON(w, e.status, struct {
		Error Error `json:"error"`
	}{e.Error})
}

func writeJSON(w http.ResponseWriter, status int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(status)
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}
