package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"strings"
	"sync"
	"time"

	"github.com/coreos/go-oidc/v3/oidc"
	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/internal/replay"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// The gateway-started device grant. A device code that a client obtained
// from the provider by itself can be obtained by anyone, a phisher
// included: he starts a grant, sends the user the code, and whatever ID
// token comes out of the user's approval enrolls the phisher's key as the
// user. So the gateway starts the grant itself (PathStart), keeps the
// device code, polls the provider itself (PathPoll) and enrolls only the
// key named when the grant began. The verification URI it hands out is its
// own approval page (PathApprove), which names this gateway and the
// requesting device before linking on to the provider, so the user sees
// what the approval is for; a code this gateway did not start shows as
// such there. With Options.ClientTokens off, PathAPI (which takes an ID
// token from the client) refuses every request.

// Paths of the gateway-started grant.
const (
	PathStart   = "/api/v1/enroll/start"
	PathPoll    = "/api/v1/enroll/poll"
	PathApprove = "/enroll/approve"
	// maxGrants bounds the grants in progress; past it a start is refused
	// (503) rather than an older grant forgotten.
	maxGrants = 10_000
)

// Codes of the gateway-started grant.
const (
	CodeGrantUnknown   = "grant_unknown" // a handle this gateway did not start
	CodeGrantExpired   = "grant_expired" // the user did not approve in time
	CodeGrantDenied    = "grant_denied"  // the user denied it at the provider
	CodeClientTokens   = "gateway_grant_required"
	statusPending      = "authorization_pending"
	grantDeviceCodeURN = "urn:ietf:params:oauth:grant-type:device_code"
)

// StartRequest is the body of POST PathStart: the device that asks, named
// now so the approval page can show it.
type StartRequest struct {
	Provider  string `json:"provider,omitempty"`
	PublicKey string `json:"public_key"`
	Name      string `json:"name"`
}

// StartResponse is what the client shows the user, RFC 8628's fields plus
// the handle it polls with and the gateway's name.
type StartResponse struct {
	Handle                  string `json:"handle"`
	UserCode                string `json:"user_code"`
	VerificationURI         string `json:"verification_uri"`
	VerificationURIComplete string `json:"verification_uri_complete"`
	Interval                int    `json:"interval"`   // seconds between polls
	ExpiresIn               int    `json:"expires_in"` // seconds
	Gateway                 string `json:"gateway"`
	Provider                string `json:"provider"`
}

// PollRequest is the body of POST PathPoll; the key and the name must be
// those the grant started with.
type PollRequest struct {
	Handle    string `json:"handle"`
	PublicKey string `json:"public_key"`
	Name      string `json:"name"`
}

// Pending is the 202 answer to a poll while the user has not approved yet.
type Pending struct {
	Status   string `json:"status"`   // authorization_pending
	Interval int    `json:"interval"` // seconds to wait before the next poll
}

// grant is one device authorization the gateway started.
type grant struct {
	handle   string
	provider string
	auth     *oauth2.DeviceAuthResponse // the provider's answer; DeviceCode stays here
	cfg      *oauth2.Config
	name     string
	pub      wgconf.Key
	remote   string // who started it, shown on the approval page
	started  time.Time
	expires  time.Time
	interval time.Duration
	next     time.Time // no provider poll before this
	polling  bool      // a poll is with the provider now
}

// grants are the grants in progress, by handle and by user code.
type grants struct {
	mu       sync.Mutex
	byHandle map[string]*grant
	byCode   map[string]*grant
}

func newGrants() *grants {
	return &grants{byHandle: map[string]*grant{}, byCode: map[string]*grant{}}
}

// normCode spells a user code as the approval page looks it up: users
// type codes in any case, with or without the dash.
func normCode(c string) string {
	return strings.ToUpper(strings.NewReplacer("-", "", " ", "").Replace(c))
}

func (g *grants) expireLocked(now time.Time) {
	for h, gr := range g.byHandle {
		if now.After(gr.expires) {
			delete(g.byHandle, h)
			delete(g.byCode, normCode(gr.auth.UserCode))
		}
	}
}

func (g *grants) add(gr *grant, now time.Time) error {
	g.mu.Lock()
	defer g.mu.Unlock()
	if len(g.byHandle) >= maxGrants {
		g.expireLocked(now)
		if len(g.byHandle) >= maxGrants {
			return errors.New("too many device grants in progress")
		}
	}
	g.byHandle[gr.handle] = gr
	g.byCode[normCode(gr.auth.UserCode)] = gr
	return nil
}

func (g *grants) byUserCode(code string, now time.Time) *grant {
	g.mu.Lock()
	defer g.mu.Unlock()
	gr := g.byCode[normCode(code)]
	if gr == nil || now.After(gr.expires) {
		return nil
	}
	return gr
}

func (g *grants) remove(gr *grant) {
	g.mu.Lock()
	defer g.mu.Unlock()
	if g.byHandle[gr.handle] == gr {
		delete(g.byHandle, gr.handle)
		delete(g.byCode, normCode(gr.auth.UserCode))
	}
}

// Len is the number of grants in progress.
func (g *grants) Len() int {
	g.mu.Lock()
	defer g.mu.Unlock()
	return len(g.byHandle)
}

func grantUse(handle string) replay.Key { return replay.KeyOf("grant", handle) }

func decodeStrict(body io.Reader, v any) *apiError {
	dec := json.NewDecoder(body)
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return refuse(http.StatusBadRequest, CodeBadRequest, "The request is not the expected JSON: "+err.Error(), err)
	}
	if dec.More() {
		return refuse(http.StatusBadRequest, CodeBadRequest, "The request has data after its JSON object.", nil)
	}
	return nil
}

// parseGrantRequest decodes a start or poll body into v (whose key and
// name fields key and name point into) and checks the device.
func parseGrantRequest(body io.Reader, v any, key, name *string) (wgconf.Key, string, *apiError) {
	if aerr := decodeStrict(body, v); aerr != nil {
		return wgconf.Key{}, "", aerr
	}
	return checkDevice(*key, *name)
}

// serveGrantStart starts a device authorization with the provider for the
// device named in the request.
func (h *Handler) serveGrantStart(st *state, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, refuse(http.StatusMethodNotAllowed, CodeBadRequest, "Use POST with a JSON body.", nil))
		return
	}
	var req StartRequest
	pub, name, aerr := parseGrantRequest(http.MaxBytesReader(w, r.Body, 64<<10), &req, &req.PublicKey, &req.Name)
	if aerr != nil {
		h.fail(w, r, "grant", nil, aerr)
		return
	}
	p := st.providers[0]
	if req.Provider != "" {
		if p = st.byName[req.Provider]; p == nil {
			h.fail(w, r, "grant", nil, refuse(http.StatusBadRequest, CodeBadRequest, fmt.Sprintf("No identity provider is called %q on this gateway.", req.Provider), nil))
			return
		}
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	d, err := h.discover(ctx, p)
	if err == nil && d.oidc.Endpoint().DeviceAuthURL == "" {
		err = fmt.Errorf("provider %q offers no device authorization endpoint", p.cfg.Name)
	}
	if err != nil {
		h.fail(w, r, "grant", nil, refuse(http.StatusServiceUnavailable, CodeProviderUnavailable, "The gateway cannot start a sign-in with the identity provider right now; try again shortly, or enroll in a browser at /enroll.", err))
		return
	}
	ep := d.oidc.Endpoint()
	ep.AuthStyle = oauth2.AuthStyleInParams // a public client: its id in the form, no secret
	scopes := p.cfg.Scopes
	if len(scopes) == 0 {
		scopes = []string{oidc.ScopeOpenID, "email", "profile"}
	}
	cfg := &oauth2.Config{ClientID: p.cfg.deviceClientID(), Endpoint: ep, Scopes: scopes}
	da, err := cfg.DeviceAuth(oidc.ClientContext(ctx, h.client))
	if err != nil {
		h.fail(w, r, "grant", nil, refuse(http.StatusServiceUnavailable, CodeProviderUnavailable, "The identity provider did not start the sign-in; try again shortly.", err))
		return
	}
	now := h.now()
	exp := da.Expiry
	if exp.IsZero() || exp.Sub(now) > time.Hour {
		exp = now.Add(10 * time.Minute) // a provider that names no expiry, or an absurd one
	}
	interval := time.Duration(da.Interval) * time.Second
	if interval < time.Second {
		interval = 5 * time.Second // RFC 8628 §3.2's default
	}
	gr := &grant{
		handle: randomString(32), provider: p.cfg.Name, auth: da, cfg: cfg, name: name, pub: pub,
		remote: r.RemoteAddr, started: now, expires: exp, interval: interval, next: now.Add(interval),
	}
	if err := h.grants.add(gr, now); err != nil {
		h.fail(w, r, "grant", nil, refuse(http.StatusServiceUnavailable, CodeBusy, "The gateway is handling too many sign-ins right now; try again in a few minutes.", err))
		return
	}
	approve := baseURL(r) + PathApprove + "?code=" + url.QueryEscape(da.UserCode)
	h.log.Info("device grant started", "provider", p.cfg.Name, "name", name, "public_key", pub.String(), "remote", r.RemoteAddr, "expires", exp)
	h.metrics.observe("grant", "started", 0)
	writeJSON(w, http.StatusOK, StartResponse{
		Handle: gr.handle, UserCode: da.UserCode, VerificationURI: approve, VerificationURIComplete: approve,
		Interval: int(interval / time.Second), ExpiresIn: int(exp.Sub(now).Seconds()), Gateway: st.opts.GatewayName, Provider: p.cfg.Name,
	})
}

// servePoll asks the provider once whether the user approved the grant
// named by the handle and, once approved, verifies the ID token the
// gateway itself received and enrolls the key the grant started with.
func (h *Handler) servePoll(st *state, w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	if r.Method != http.MethodPost {
		w.Header().Set("Allow", "POST")
		writeError(w, refuse(http.StatusMethodNotAllowed, CodeBadRequest, "Use POST with a JSON body.", nil))
		return
	}
	var req PollRequest
	pub, name, aerr := parseGrantRequest(http.MaxBytesReader(w, r.Body, 64<<10), &req, &req.PublicKey, &req.Name)
	if aerr == nil && req.Handle == "" {
		aerr = refuse(http.StatusBadRequest, CodeBadRequest, "handle: missing: poll with the handle the start answered.", nil)
	}
	if aerr != nil {
		h.fail(w, r, "grant", nil, aerr)
		return
	}
	now := h.now()
	gr, pending, aerr := h.takePoll(req.Handle, pub, name, now)
	if aerr != nil {
		h.fail(w, r, "grant", nil, aerr)
		return
	}
	if pending != nil {
		writeJSON(w, http.StatusAccepted, pending)
		return
	}
	ctx, cancel := context.WithTimeout(r.Context(), 30*time.Second)
	defer cancel()
	raw, access, perr := h.pollProvider(ctx, gr)
	if perr != nil {
		h.endPoll(gr, perr)
		switch perr.code {
		case statusPending, "slow_down":
			writeJSON(w, http.StatusAccepted, Pending{Status: statusPending, Interval: int(gr.interval / time.Second)})
		case "access_denied":
			h.fail(w, r, "grant", nil, refuse(http.StatusForbidden, CodeGrantDenied, "The sign-in was denied at the identity provider; nothing was registered.", perr))
		case "expired_token":
			h.fail(w, r, "grant", nil, refuse(http.StatusGone, CodeGrantExpired, "The sign-in code expired before it was approved; run edgegw enroll again.", perr))
		default:
			h.fail(w, r, "grant", nil, refuse(http.StatusServiceUnavailable, CodeProviderUnavailable, "The gateway could not ask the identity provider about the sign-in; it will be asked again at the next poll.", perr))
		}
		return
	}
	// The provider handed out the token: the device code is spent, so the
	// grant ends here whatever follows, and its handle stays refused.
	h.grants.remove(gr)
	// Recorded so a replay reads "already used"; should the one-use set
	// be full, the replay still fails, as an unknown handle.
	h.used.Add(grantUse(gr.handle), now, gr.expires.Add(time.Minute))
	p := st.byName[gr.provider]
	if p == nil {
		h.fail(w, r, "grant", nil, refuse(http.StatusConflict, CodeGrantUnknown, "The identity provider this sign-in began with was removed from the gateway; run edgegw enroll again.", nil))
		return
	}
	d, err := h.discover(ctx, p)
	if err != nil {
		h.fail(w, r, "grant", nil, refuse(http.StatusServiceUnavailable, CodeProviderUnavailable, "The gateway cannot reach the identity provider right now; run edgegw enroll again shortly.", err))
		return
	}
	l, err := h.verify(ctx, st, p, d, d.device, raw, access, "")
	if err != nil {
		h.fail(w, r, "grant", nil, refuse(http.StatusUnauthorized, CodeInvalidToken, "The identity provider's answer was not accepted; run edgegw enroll again.", err))
		return
	}
	if aerr := h.claim(l.use, l.Expiry.Add(time.Minute), "This sign-in was already used to enroll a device; run edgegw enroll again."); aerr != nil {
		h.fail(w, r, "grant", l, aerr)
		return
	}
	resp, aerr := h.enroll(ctx, st, r, l, gr.name, gr.pub)
	if aerr != nil {
		h.fail(w, r, "grant", l, aerr)
		return
	}
	h.metrics.observe("grant", resultEnrolled, time.Since(start))
	writeJSON(w, http.StatusOK, resp)
}

// takePoll finds the grant and reserves the next provider poll for this
// request; a poll before the grant's interval, or while another is with
// the provider, gets a pending answer without asking the provider.
func (h *Handler) takePoll(handle string, pub wgconf.Key, name string, now time.Time) (*grant, *Pending, *apiError) {
	g := h.grants
	g.mu.Lock()
	defer g.mu.Unlock()
	gr := g.byHandle[handle]
	if gr == nil {
		if h.used.Seen(grantUse(handle), now) {
			return nil, nil, refuse(http.StatusUnauthorized, CodeTokenReused, "This sign-in was already used; run edgegw enroll again.", errors.New("replayed grant handle"))
		}
		return nil, nil, refuse(http.StatusNotFound, CodeGrantUnknown, "This gateway did not start this sign-in (or it ended); run edgegw enroll against this gateway.", errors.New("unknown grant handle"))
	}
	if now.After(gr.expires) {
		delete(g.byHandle, gr.handle)
		delete(g.byCode, normCode(gr.auth.UserCode))
		return nil, nil, refuse(http.StatusGone, CodeGrantExpired, "The sign-in code expired before it was approved; run edgegw enroll again.", nil)
	}
	if gr.pub != pub || gr.name != name {
		return nil, nil, refuse(http.StatusForbidden, CodeGrantUnknown, "This sign-in was started for another device; run edgegw enroll again.", errors.New("poll with another key or name than the grant started with"))
	}
	if gr.polling || now.Before(gr.next) {
		return nil, &Pending{Status: statusPending, Interval: int(gr.interval / time.Second)}, nil
	}
	gr.polling = true
	return gr, nil, nil
}

// endPoll releases the grant after an unfinished provider poll and sets
// when the next may go out; slow_down adds 5 s as RFC 8628 §3.5 asks.
func (h *Handler) endPoll(gr *grant, perr *pollError) {
	h.grants.mu.Lock()
	defer h.grants.mu.Unlock()
	gr.polling = false
	switch perr.code {
	case "slow_down":
		gr.interval += 5 * time.Second
	case "access_denied", "expired_token":
		delete(h.grants.byHandle, gr.handle)
		delete(h.grants.byCode, normCode(gr.auth.UserCode))
	}
	gr.next = h.now().Add(gr.interval)
}

// pollError is a token endpoint answer other than tokens.
type pollError struct {
	code string // the OAuth error code, or "" for a transport failure
	err  error
}

func (e *pollError) Error() string { return e.err.Error() }
func (e *pollError) Unwrap() error { return e.err }

// pollProvider makes one device-code token request (RFC 8628 §3.4).
func (h *Handler) pollProvider(ctx context.Context, gr *grant) (idToken, access string, _ *pollError) {
	form := url.Values{"grant_type": {grantDeviceCodeURN}, "device_code": {gr.auth.DeviceCode}, "client_id": {gr.cfg.ClientID}}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, gr.cfg.Endpoint.TokenURL, strings.NewReader(form.Encode()))
	if err != nil {
		return "", "", &pollError{"", err}
	}
	req.Header.Set("Content-Type", "application/x-www-form-urlencoded")
	req.Header.Set("Accept", "application/json")
	resp, err := h.client.Do(req)
	if err != nil {
		return "", "", &pollError{"", fmt.Errorf("token endpoint: %w", err)}
	}
	defer resp.Body.Close()
	var body struct {
		Error       string `json:"error"`
		Description string `json:"error_description"`
		AccessToken string `json:"access_token"`
		IDToken     string `json:"id_token"`
	}
	if err := json.NewDecoder(io.LimitReader(resp.Body, 1<<20)).Decode(&body); err != nil {
		return "", "", &pollError{"", fmt.Errorf("token endpoint %s: %s: %w", gr.cfg.Endpoint.TokenURL, resp.Status, err)}
	}
	if body.Error != "" {
		return "", "", &pollError{body.Error, fmt.Errorf("token endpoint: %s: %s", body.Error, body.Description)}
	}
	if resp.StatusCode != http.StatusOK || body.IDToken == "" {
		return "", "", &pollError{"", fmt.Errorf("token endpoint: %s without an id_token (is the openid scope allowed for the device client?)", resp.Status)}
	}
	return body.IDToken, body.AccessToken, nil
}

// serveApprove is the page the client's verification URI opens: it names
// this gateway and the device that asks, then links to the provider.
func (h *Handler) serveApprove(st *state, w http.ResponseWriter, r *http.Request) {
	if r.Method != http.MethodGet && r.Method != http.MethodHead {
		w.Header().Set("Allow", "GET, HEAD")
		http.Error(w, "Use GET.", http.StatusMethodNotAllowed)
		return
	}
	code := r.URL.Query().Get("code")
	gr := h.grants.byUserCode(code, h.now())
	if gr == nil {
		h.metrics.observe("grant", CodeGrantUnknown, 0)
		h.page(w, http.StatusNotFound, "error", map[string]any{"Code": CodeGrantUnknown,
			"Message": fmt.Sprintf("The code %q was not started by the gateway %s, or it expired. If someone sent you this code or link, do not approve it: report it to your administrator.", code, st.opts.GatewayName)})
		return
	}
	link := gr.auth.VerificationURIComplete
	if link == "" {
		link = gr.auth.VerificationURI
	}
	h.page(w, http.StatusOK, "approve", map[string]any{
		"Gateway": st.opts.GatewayName, "Device": gr.name, "UserCode": gr.auth.UserCode, "PublicKey": gr.pub.String(),
		"Started": gr.started.UTC().Format("2006-01-02 15:04:05 MST"), "Link": link,
	})
}
