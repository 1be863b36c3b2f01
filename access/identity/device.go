package identity

import (
	"crypto/rand"
	"errors"
	"fmt"
	"net/netip"
	"slices"
	"strings"
	"time"
	"unicode"
	"unicode/utf8"

	"github.com/edgegw/edgegw/firewall/rules"
)

// Device is one enrolled WireGuard device and the user behind it. A Device
// value is a copy: changing it changes nothing in the registry.
// SubjectOf is a user's key in the registry (Device.Subject): the OIDC
// issuer and the provider's subject, since sub is unique only per issuer.
func SubjectOf(issuer, sub string) string { return issuer + "#" + sub }

type Device struct {
	ID        string   // "dev_" + 26 base32 chars, random
	Name      string   // user-chosen label, e.g. "alice-laptop"
	Email     string   // the user's email at enrollment
	Subject   string   // OIDC iss + sub, unique per user
	Groups    []string // the user's groups at the last sign-in
	PublicKey [32]byte // WireGuard public key
	Address   netip.Addr
	// Address comes from the WireGuard address range and stays with the
	// device across re-enrollment; it is reused only after revocation.

	Created, LastSeen, Expires time.Time
	Revoked                    bool
	RevokedAt                  time.Time
	// Pending devices wait for an admin's approval (enrollment.approval:
	// admin): they hold an address but are in no snapshot, so no tunnel,
	// identity set or policy sees them.
	Pending bool
	// Quarantined devices failed their posture checks (posture:) or
	// stopped reporting: they keep their tunnel, but the firewall lets
	// them reach only what remediation needs, until a passing report.
	Quarantined bool
	// Posture is what the device's last current posture report says, as
	// the device.posture.* fields of firewall rules and DNS policies see
	// it: all unknown before a report and once the report went stale.
	Posture rules.Posture
}

// Enrollment is what the enrollment endpoint knows after a sign-in: who the
// user is and which public key their device generated.
type Enrollment struct {
	Name, Email, Subject string
	Groups               []string
	PublicKey            [32]byte
	Expires              time.Time
	Pending              bool // a new device waits for approval; a renewal keeps its state
}

// Errors callers match with errors.Is. Messages wrap them with the device id,
// key or pool involved.
var (
	// ErrNotFound: no device with that id.
	ErrNotFound = errors.New("device not found")
	// ErrKeyInUse: the public key is registered to a different subject.
	ErrKeyInUse = errors.New("public key already registered to another user")
	// ErrPoolExhausted: every address of the WireGuard range is taken.
	ErrPoolExhausted = errors.New("no free address in the WireGuard address range")
	// ErrRevoked: the device was revoked; it must enroll again with a new key.
	ErrRevoked = errors.New("device revoked")
	// ErrUnavailable wraps a database that cannot be reached or failed; the
	// operation changed nothing.
	ErrUnavailable = errors.New("device registry unavailable")
	// ErrInvalid: the enrollment itself is malformed (no subject, a zero
	// key, an expiry in the past...).
	ErrInvalid = errors.New("invalid enrollment")
)

// idAlphabet is Crockford's base32 in lower case: no i, l, o or u, so an
// id read aloud or typed from a screen is hard to get wrong.
const idAlphabet = "0123456789abcdefghjkmnpqrstvwxyz"

// NewDeviceID returns "dev_" and 26 random base32 characters (130 bits).
func NewDeviceID() string {
	var b [26]byte
	var r [26]byte
	if _, err := rand.Read(r[:]); err != nil {
		// crypto/rand.Read never fails on Linux (getrandom); a failure
		// here means the process cannot make keys either.
		panic(fmt.Sprintf("identity: read random bytes: %v", err))
	}
	for i := range b {
		b[i] = idAlphabet[r[i]&31]
	}
	return "dev_" + string(b[:])
}

// ValidDeviceID reports whether s has the shape of a device id, so the CLI
// and the admin API can reject typos before asking the database.
func ValidDeviceID(s string) bool {
	rest, ok := strings.CutPrefix(s, "dev_")
	if !ok || len(rest) != 26 {
		return false
	}
	for i := 0; i < len(rest); i++ {
		if strings.IndexByte(idAlphabet, rest[i]) < 0 {
			return false
		}
	}
	return true
}

// Limits on what an enrollment may carry; they bound what an IdP's claims
// can make the registry store.
const (
	maxNameLen    = 64
	maxEmailLen   = 320
	maxSubjectLen = 1024
	maxGroups     = 256
	maxGroupLen   = 256
)

// normalize checks e and returns it with the defaults applied: an empty
// name becomes "device", groups are sorted and deduplicated (they are a
// set), times are UTC at microsecond precision, as the database keeps them.
func (e Enrollment) normalize(now time.Time) (Enrollment, error) {
	bad := func(format string, a ...any) (Enrollment, error) {
		return Enrollment{}, fmt.Errorf("%w: %s", ErrInvalid, fmt.Sprintf(format, a...))
	}
	if e.Name == "" {
		e.Name = "device"
	}
	if err := checkText("name", e.Name, maxNameLen); err != nil {
		return bad("%v", err)
	}
	if err := checkText("email", e.Email, maxEmailLen); err != nil {
		return bad("%v", err)
	}
	if e.Subject == "" {
		return bad("no subject: the enrollment must name the signed-in user")
	}
	if err := checkText("subject", e.Subject, maxSubjectLen); err != nil {
		return bad("%v", err)
	}
	if e.PublicKey == ([32]byte{}) {
		return bad("the public key is all zeros")
	}
	groups, err := normalizeGroups(e.Groups)
	if err != nil {
		return Enrollment{}, err
	}
	e.Groups = groups
	if !e.Expires.IsZero() {
		e.Expires = dbTime(e.Expires)
		if !e.Expires.After(now) {
			return bad("expiry %s is not in the future", e.Expires.Format(time.RFC3339))
		}
	}
	return e, nil
}

// normalizeGroups checks a group list and returns it as a set: sorted,
// without duplicates.
func normalizeGroups(in []string) ([]string, error) {
	if len(in) > maxGroups {
		return nil, fmt.Errorf("%w: %d groups (at most %d)", ErrInvalid, len(in), maxGroups)
	}
	groups := slices.Clone(in)
	for _, g := range groups {
		if g == "" {
			return nil, fmt.Errorf("%w: an empty group name", ErrInvalid)
		}
		if err := checkText("group", g, maxGroupLen); err != nil {
			return nil, fmt.Errorf("%w: %w", ErrInvalid, err)
		}
	}
	slices.Sort(groups)
	return slices.Compact(groups), nil
}

func checkText(what, s string, limit int) error {
	if len(s) > limit {
		return fmt.Errorf("%s is %d bytes long (at most %d)", what, len(s), limit)
	}
	if !utf8.ValidString(s) {
		return fmt.Errorf("%s %q is not UTF-8", what, s)
	}
	for _, r := range s {
		if unicode.IsControl(r) {
			return fmt.Errorf("%s %q contains a control character", what, s)
		}
	}
	return nil
}

// dbTime is t as the database keeps it: UTC, whole microseconds.
func dbTime(t time.Time) time.Time {
	if t.IsZero() {
		return time.Time{}
	}
	return t.UTC().Truncate(time.Microsecond)
}
