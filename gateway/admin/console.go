package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/http"
	"net/netip"
	"strings"

	"github.com/edgegw/edgegw/gateway/console"
)

// consoleTokens is the token store as the console sees it: a session's key
// is the hex SHA-256 of the token it logged in with.
type consoleTokens struct{ t *tokens }

func (c consoleTokens) Login(secret string) (console.Identity, bool) {
	tok, ok := c.t.authenticate(secret)
	if !ok {
		return console.Identity{}, false
	}
	h := sha256.Sum256([]byte(secret))
	return console.Identity{Name: tok.Name, Role: string(tok.Role), Key: hex.EncodeToString(h[:])}, true
}

func (c consoleTokens) Check(key string) (console.Identity, bool) {
	b, err := hex.DecodeString(key)
	if err != nil || len(b) != sha256.Size {
		return console.Identity{}, false
	}
	tok, ok := c.t.check([sha256.Size]byte(b))
	if !ok {
		return console.Identity{}, false
	}
	return console.Identity{Name: tok.Name, Role: string(tok.Role), Key: key}, true
}

// consoleActor is the actor of an API request made from a console
// session: the token's holder, through the UI.
func consoleActor(id console.Identity, r *http.Request) Actor {
	return Actor{Type: "user", ID: id.Name, Context: "console_session", Role: Role(id.Role), IP: remoteAddr(r).String(), Interface: "UI"}
}

// auditConsole records a console login or logout. A refused one (a bad
// token, a login from another site, a logout without the CSRF token) is
// counted and logged (rate-limited) like a request with a bad token or a
// refused CSRF check, not audited: a flood of them must not flood the
// audit trail.
func (s *Server) auditConsole(e console.Event) {
	ip := ""
	if ap, err := netip.ParseAddrPort(e.Remote); err == nil {
		ip = ap.Addr().Unmap().String()
	}
	if !e.Result {
		result := resultUnauthenticated
		if e.Action != "login" {
			result = resultForbidden
		}
		s.refused(result, "admin: refused a console "+e.Action, "remote", ip, "token", e.Actor.Name, "reason", e.Error)
		return
	}
	ev := Event{
		Action: e.Action, Result: e.Result, Error: e.Error,
		Actor:        Actor{Type: "user", ID: e.Actor.Name, Context: "api_token", Role: Role(e.Actor.Role), IP: ip, Interface: "UI"},
		ResourceType: "console_session", ResourceID: e.Actor.Name,
		Metadata: map[string]any{"method": http.MethodPost, "path": console.Prefix + e.Action},
	}
	provider, sso := strings.CutPrefix(e.Actor.Method, "oidc:")
	switch {
	case sso && e.Action == "login":
		ev.Actor.Context = "oidc"
		ev.Metadata = map[string]any{"method": http.MethodGet, "path": console.Prefix + "oidc/callback", "provider": provider}
		ev.Description = fmt.Sprintf("console sign-in of %q through %s (%s)", e.Actor.Name, provider, e.Actor.Role)
	case sso:
		ev.Actor.Context = "oidc"
		ev.Description = fmt.Sprintf("console logout of %q", e.Actor.Name)
	case e.Action == "login":
		ev.Description = fmt.Sprintf("console login with token %q (%s)", e.Actor.Name, e.Actor.Role)
	default:
		ev.Description = fmt.Sprintf("console logout of token %q", e.Actor.Name)
	}
	s.Audit(ev)
}
