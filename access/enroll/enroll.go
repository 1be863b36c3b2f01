// Package enroll signs users in and registers their WireGuard devices,
// WARP style: a device's public key joins the device registry under the
// user's identity, and the user gets a wg-quick configuration for it.
//
// The gateway side is Handler, mounted on the Access HTTPS listener:
//
//   - GET  /.well-known/edgegw-enroll  discovery: issuer, client id, endpoints
//   - POST /api/v1/enroll              an OIDC ID token from the device
//     authorization grant (RFC 8628) plus a public key and a name: the
//     enrollment policies decide (access/policy semantics), the registry
//     stores the device, the answer holds what a wg-quick file needs
//   - GET  /enroll …                   the browser path: sign in with the code
//     flow and PKCE, then get a configuration file, the key pair made in the
//     browser (WebCrypto X25519) or, labelled as such, by the gateway for
//     that one page (and never stored), with a QR code for phones
//
// Admin serves the admin API's device endpoints (list, show, revoke), and
// Client is the `edgegw enroll` side: it makes the key pair locally (the
// private key never leaves the machine), signs in at the issuer named by
// discovery with the device grant (or, with --browser or a provider without
// it, the code flow with PKCE and a loopback redirect, RFC 8252), registers
// the public key and writes the file. Package enrolltest has a real OpenID
// provider and an in-memory registry for tests.
//
// Under attack: the endpoints that cost the provider or the registry work
// are limited per source address (a token bucket, 429 past it); ID tokens,
// sign-ins and tickets are one-use, recorded only once verified, keyed on
// the token's claims rather than its spelling, in a set bounded to 100,000
// that refuses new sign-ins (503) rather than forget; tokens naming unknown
// JWKS key ids make the gateway refetch the provider's keys at most every
// 10 s.
//
// Errors reach users as JSON {"error":{"code","message"}} with a message
// written for them; the admin gets the cause in the log and in
// edgegw_enroll_requests_total{result}. Nothing is half-written: the
// registry either stores the device or returns an error.
package enroll

import (
	"context"
	"crypto/rand"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"os"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/internal/replay"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// Paths the Handler serves; Handles tells whether a path is one of them.
const (
	PathDiscovery      = "/.well-known/edgegw-enroll"
	PathAPI            = "/api/v1/enroll"
	PathBrowser        = "/enroll"
	PathBrowserLogin   = "/enroll/login"
	PathCallback       = "/enroll/callback"
	PathBrowserDevice  = "/enroll/device"     // POST JSON: register a key made in the browser
	PathBrowserServer  = "/enroll/server-key" // POST form: the gateway makes the key pair
	DefaultKeyExpiry   = 720 * time.Hour
	DefaultMaxTokenAge = 10 * time.Minute
)

// Handles reports whether path belongs to the enrollment handler, so the
// Access listener can send it there before its own host routing.
func Handles(path string) bool {
	return path == PathDiscovery || path == PathAPI || path == PathStart || path == PathPoll || path == PathBrowser || strings.HasPrefix(path, PathBrowser+"/")
}

// Registry is the part of the device registry enrollment uses
// (access/identity's registry implements it).
type Registry interface {
	Enroll(ctx context.Context, e identity.Enrollment) (identity.Device, error)
	Revoke(ctx context.Context, id string) (identity.Device, error)
	Approve(ctx context.Context, id string) (identity.Device, error)
	Get(ctx context.Context, id string) (identity.Device, error)
	List(ctx context.Context) ([]identity.Device, error)
}

// Tunnel is what a client configuration needs to know about the gateway's
// WireGuard device.
type Tunnel struct {
	PublicKey wgconf.Key
	// Endpoint is host:port clients dial. Empty: the host name the user
	// reached the enrollment endpoint at, with ListenPort.
	Endpoint            string
	ListenPort          int
	DNS                 []netip.Addr
	AllowedIPs          []netip.Prefix // what clients route through the tunnel
	MTU                 int            // 0: wg-quick's default
	PersistentKeepalive time.Duration  // 0: off
}

// Provider is an identity provider users may enroll with.
type Provider struct {
	identity.Provider
	// DeviceClientID is the public (secret-less) client that `edgegw
	// enroll` uses for the device authorization grant; ID tokens it brings
	// must name it in aud. Empty: the provider's ClientID, which then must
	// allow the device grant without a secret.
	DeviceClientID string
}

func (p Provider) deviceClientID() string {
	if p.DeviceClientID != "" {
		return p.DeviceClientID
	}
	return p.ClientID
}

// Options configure a Handler. Registry and Tunnel are required, and at
// least one provider.
type Options struct {
	Providers []Provider      // from identity.providers
	Policies  []policy.Policy // tunnels.wireguard.enrollment.policies
	KeyExpiry time.Duration   // tunnels.wireguard.enrollment.key_expiry; default 720h
	// MaxTokenAge refuses ID tokens issued longer ago than this, so a
	// token found in a log cannot enroll a device; default 10m.
	MaxTokenAge time.Duration
	Registry    Registry
	Tunnel      func(context.Context) (Tunnel, error)
	// Changed is called after a device was enrolled and before the
	// client gets its configuration, with the request's context, so the
	// WireGuard device can add the peer now (for example with the
	// registry's Refresh) rather than at its next sync.
	Changed func(context.Context, identity.Device)
	// Rate and Burst limit the enrollment requests one source address
	// may make (the API, and the browser path's sign-in and registration
	// steps): a token bucket of Burst refilled at Rate per second; past it
	// the answer is 429. Zero: DefaultRate and DefaultBurst; a negative
	// Rate turns the limit off.
	Rate  float64
	Burst int
	// GatewayName is what the approval page and `edgegw enroll` show the
	// user as the gateway asking; default the host name.
	GatewayName string
	// ClientTokens lets PathAPI enroll with an ID token the client got
	// from the provider by itself (the old flow). Off, only grants this
	// gateway started (PathStart) enroll, and a device code a phisher
	// started cannot be redeemed here.
	ClientTokens bool
	// MaxDevicesPerUser refuses a new device to a user who has this many
	// usable (neither revoked nor expired) devices; renewing one of them
	// (its key again) is allowed. 0: no limit.
	MaxDevicesPerUser int
	// NotifyURL receives a JSON Notification (POST) for every device
	// enrolled; Run delivers them. Empty: no notifications.
	NotifyURL string
	// NotifyMail, when set, also mails every enrollment to the admins
	// and the user (mail.go).
	NotifyMail *Mail
	// AdminApproval registers new devices pending: they get their
	// configuration but no tunnel until an admin approves them
	// (POST /api/v1/devices/{id}/approve).
	AdminApproval bool
	Logger        *slog.Logger
	HTTPClient    *http.Client // talks to the providers; default 30s timeout
	Now           func() time.Time
	// Countries tells the country of the request's source for the
	// policies' geo selectors (the GeoIP databases); nil: none matches.
	Countries interface{ Country(netip.Addr) string }
}

// Handler serves enrollment. It is safe for concurrent use; Update swaps
// its configuration in place.
type Handler struct {
	log     *slog.Logger
	now     func() time.Time
	client  *http.Client
	seal    *sealer
	used    *replay.Set // one-use ID tokens, sign-ins and tickets
	metrics *metrics
	state   atomic.Pointer[state]
	limit   atomic.Pointer[limiter] // nil: no limit
	grants  *grants                 // device grants this gateway started
	notes   chan Notification       // to Run, which delivers them
	// limitMu makes counting a user's devices and registering one a
	// single step on this gateway, so two enrollments at once cannot both
	// take the last place under MaxDevicesPerUser.
	limitMu sync.Mutex
}

// state is one configuration, immutable once built.
type state struct {
	opts      Options
	policies  *policy.Set
	claims    []string
	providers []*provider
	byName    map[string]*provider
}

// New checks opts and builds a Handler. Providers are contacted only when
// a user enrolls.
func New(opts Options) (*Handler, error) {
	key := make([]byte, 32)
	if _, err := rand.Read(key); err != nil {
		return nil, fmt.Errorf("enroll: sealing key: %w", err)
	}
	s, err := newSealer(key)
	if err != nil {
		return nil, err
	}
	h := &Handler{seal: s, used: replay.New(replay.DefaultMax), metrics: newMetrics(), grants: newGrants(), notes: make(chan Notification, notifyQueue)}
	if err := h.Update(opts); err != nil {
		return nil, err
	}
	st := h.state.Load()
	h.log = st.opts.Logger.With("component", "enroll")
	h.now = st.opts.Now
	h.client = st.opts.HTTPClient
	return h, nil
}

// Update replaces the configuration (a reload). A provider whose settings
// did not change keeps its discovery. On error the old configuration stays.
// Logger, HTTPClient and Now are taken from the Options given to New.
func (h *Handler) Update(opts Options) error {
	if opts.Registry == nil {
		return errors.New("enroll: no device registry")
	}
	if opts.Tunnel == nil {
		return errors.New("enroll: no WireGuard tunnel information")
	}
	if len(opts.Providers) == 0 {
		return errors.New("enroll: no identity provider: add one under identity.providers")
	}
	if opts.KeyExpiry == 0 {
		opts.KeyExpiry = DefaultKeyExpiry
	}
	if opts.MaxTokenAge == 0 {
		opts.MaxTokenAge = DefaultMaxTokenAge
	}
	if opts.Logger == nil {
		opts.Logger = slog.New(slog.DiscardHandler)
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	if opts.HTTPClient == nil {
		opts.HTTPClient = &http.Client{Timeout: 30 * time.Second}
	}
	if opts.Rate == 0 {
		opts.Rate = DefaultRate
	}
	if opts.GatewayName == "" {
		opts.GatewayName, _ = os.Hostname()
	}
	if opts.MaxDevicesPerUser < 0 {
		return errors.New("enroll: the device limit per user is negative")
	}
	if opts.Burst <= 0 {
		opts.Burst = DefaultBurst
	}
	set, err := policy.Compile(opts.Policies)
	if err != nil {
		return fmt.Errorf("enroll: policies: %w", err)
	}
	old := h.state.Load()
	st := &state{opts: opts, policies: set, claims: policy.Claims(opts.Policies), byName: map[string]*provider{}}
	for _, pc := range opts.Providers {
		if pc.Name == "" || st.byName[pc.Name] != nil {
			return fmt.Errorf("enroll: provider name %q is empty or repeated", pc.Name)
		}
		p, err := newProvider(pc)
		if err != nil {
			return err
		}
		if old != nil && old.byName[pc.Name] != nil && old.byName[pc.Name].same(p) {
			p = old.byName[pc.Name]
		}
		st.providers = append(st.providers, p)
		st.byName[pc.Name] = p
	}
	// The limiter outlives reloads that keep its settings, so a SIGHUP
	// does not hand every source a fresh burst.
	if old == nil || old.opts.Rate != opts.Rate || old.opts.Burst != opts.Burst {
		if opts.Rate < 0 {
			h.limit.Store(nil)
		} else {
			h.limit.Store(newLimiter(opts.Rate, opts.Burst, maxSources))
		}
	}
	h.state.Store(st)
	return nil
}

// ServeHTTP routes the enrollment paths; anything else is 404.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	st := h.state.Load()
	w.Header().Set("Cache-Control", "no-store")
	if !h.allow(w, r) {
		return
	}
	switch r.URL.Path {
	case PathDiscovery:
		h.serveDiscovery(st, w, r)
	case PathAPI:
		h.serveAPI(st, w, r)
	case PathStart:
		h.serveGrantStart(st, w, r)
	case PathPoll:
		h.servePoll(st, w, r)
	case PathApprove:
		h.serveApprove(st, w, r)
	case PathBrowser, PathBrowser + "/":
		h.serveStart(st, w, r)
	case PathBrowserLogin:
		h.serveLogin(st, w, r)
	case PathCallback:
		h.serveCallback(st, w, r)
	case PathBrowserDevice:
		h.serveBrowserDevice(st, w, r)
	case PathBrowserServer:
		h.serveServerKey(st, w, r)
	default:
		http.NotFound(w, r)
	}
}

// limited are the paths that cost the gateway work with the identity
// provider or the registry, and so are limited per source; and the
// approval page, so that guessing user codes there (to read which device
// waits) is slow.
var limited = map[string]bool{PathAPI: true, PathStart: true, PathApprove: true, PathBrowserLogin: true, PathCallback: true, PathBrowserDevice: true, PathBrowserServer: true}

// allow applies the per-source limit; past it, it answers 429 with a
// Retry-After and counts the refusal without logging it (a flood would
// flood the log too).
func (h *Handler) allow(w http.ResponseWriter, r *http.Request) bool {
	l := h.limit.Load()
	if l == nil || !limited[r.URL.Path] {
		return true
	}
	ap, err := netip.ParseAddrPort(r.RemoteAddr)
	if err != nil {
		return true // not an IP listener (tests with a pipe); nothing to key on
	}
	ok, retry := l.allow(ap.Addr(), h.now())
	if ok {
		return true
	}
	h.metrics.limited.Inc()
	h.metrics.requests.WithLabelValues(via(r.URL.Path), CodeRateLimited).Inc()
	w.Header().Set("Retry-After", strconv.Itoa(max(1, int(retry.Seconds()+0.999))))
	writeError(w, refuse(http.StatusTooManyRequests, CodeRateLimited, "Too many enrollment requests from your address; wait a minute and try again.", nil))
	return false
}

func via(path string) string {
	switch path {
	case PathAPI:
		return "device"
	case PathStart, PathPoll:
		return "grant"
	}
	return "browser"
}

// provider is one identity provider and its lazily made discovery.
type provider struct {
	cfg    Provider
	secret string

	mu      sync.Mutex
	disc    *discovered
	lastErr error // the last discovery failure, until discoveryRetry passed
	lastTry time.Time
}

func newProvider(pc Provider) (*provider, error) {
	p := &provider{cfg: pc}
	if pc.ClientSecretFile != "" {
		b, err := os.ReadFile(pc.ClientSecretFile)
		if err != nil {
			return nil, fmt.Errorf("enroll: provider %q client secret: %w", pc.Name, err)
		}
		p.secret = strings.TrimSpace(string(b))
	}
	if len(p.cfg.Scopes) == 0 {
		p.cfg.Scopes = []string{"openid", "email", "profile"}
	}
	if p.cfg.GroupsClaim == "" {
		p.cfg.GroupsClaim = "groups"
	}
	return p, nil
}

func (p *provider) same(o *provider) bool {
	return p.secret == o.secret && p.cfg.Issuer == o.cfg.Issuer && p.cfg.ClientID == o.cfg.ClientID &&
		p.cfg.DeviceClientID == o.cfg.DeviceClientID && p.cfg.GroupsClaim == o.cfg.GroupsClaim &&
		strings.Join(p.cfg.Scopes, " ") == strings.Join(o.cfg.Scopes, " ")
}

// SubjectOf is the registry's user key: the issuer and the provider's
// subject, since sub is unique only per issuer.
func SubjectOf(issuer, sub string) string { return identity.SubjectOf(issuer, sub) }
