package scim

import (
	"fmt"
	"net/http"
)

// Error is a SCIM error response (RFC 7644 section 3.12): the HTTP status,
// the scimType for 400s and a detail for people.
type Error struct {
	Status int
	Type   string // invalidFilter, invalidSyntax, invalidPath, noTarget, invalidValue, mutability, uniqueness, tooMany
	Detail string
}

func (e *Error) Error() string {
	if e.Type != "" {
		return fmt.Sprintf("scim %d %s: %s", e.Status, e.Type, e.Detail)
	}
	return fmt.Sprintf("scim %d: %s", e.Status, e.Detail)
}

// body is the error as the RFC's JSON message.
func (e *Error) body() map[string]any {
	m := map[string]any{
		"schemas": []string{msgError},
		"status":  fmt.Sprint(e.Status),
		"detail":  e.Detail,
	}
	if e.Type != "" {
		m["scimType"] = e.Type
	}
	return m
}

func badRequest(typ, format string, a ...any) *Error {
	return &Error{Status: http.StatusBadRequest, Type: typ, Detail: fmt.Sprintf(format, a...)}
}

func notFound(format string, a ...any) *Error {
	return &Error{Status: http.StatusNotFound, Detail: fmt.Sprintf(format, a...)}
}
