package admin

import (
	"context"
	"crypto/rand"
	"encoding/hex"
	"encoding/json"
	"time"
)

// Actor is who made an admin request.
type Actor struct {
	// Type is "user" for a person or tool (the local root user on the
	// socket, or a token's holder) and "system" for edgegw itself acting
	// on a signal.
	Type string
	// ID names the actor: "uid:0" on the socket, the token's name, or the
	// signal ("SIGHUP").
	ID string
	// Context is how it authenticated: "unix_socket", "api_token" or
	// "signal".
	Context string
	// Role is what it may do.
	Role Role
	// IP is the client's address on a TCP listener; empty on the socket.
	IP string
	// Interface is the way in: "CLI" (the socket), "API" (TCP) or
	// "signal".
	Interface string
}

// Signal is the actor of an action edgegw takes on a signal (a SIGHUP
// reload).
func Signal(name string) Actor {
	return Actor{Type: "system", ID: name, Context: "signal", Role: RoleAdmin, Interface: "signal"}
}

// Event is one audited admin action. The gateway turns it into a log line
// and a record of the audit_logs datasets.
type Event struct {
	// ID is unique per event (32 hex digits).
	ID   string
	When time.Time
	// Action is what was done: "create", "revoke", "reload".
	Action string
	// Result is whether it succeeded; Error says why not.
	Result bool
	Error  string
	Actor  Actor
	// ResourceType is "device", "admin_token" or "configuration";
	// ResourceID the device id, the token's name or the config file.
	ResourceType string
	ResourceID   string
	// Description is one human sentence for the log and ActionDescription.
	Description string
	// NewValue and OldValue are the resource after and before the action,
	// as the API shows it (JSON objects); nil when not applicable.
	NewValue json.RawMessage
	OldValue json.RawMessage
	// Metadata is anything else (the HTTP status, the request path).
	Metadata map[string]any
}

// ResultString is Result as audit_logs_v2 writes it.
func (e Event) ResultString() string {
	if e.Result {
		return "success"
	}
	return "failure"
}

func newEventID() string {
	var b [16]byte
	rand.Read(b[:]) // never fails (crypto/rand)
	return hex.EncodeToString(b[:])
}

type actorKey struct{}

// ActorFrom returns the actor of an admin request, set by the admin
// server before any handler runs.
func ActorFrom(ctx context.Context) (Actor, bool) {
	a, ok := ctx.Value(actorKey{}).(Actor)
	return a, ok
}

func withActor(ctx context.Context, a Actor) context.Context {
	return context.WithValue(ctx, actorKey{}, a)
}

func mustJSON(v any) json.RawMessage {
	b, err := json.Marshal(v)
	if err != nil {
		return nil
	}
	return b
}
