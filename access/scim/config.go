package scim

import (
	"fmt"
	"os"
	"strings"
)

// Config is the `scim:` section: SCIM provisioning from an identity
// provider, served at https://GATEWAY/scim/v2 on the Access listener.
type Config struct {
	// TokenFile holds the bearer token the provider sends (Entra ID's
	// "Secret Token", Okta's "API token"). It is read again on every
	// reload, so rotating it is: write the file, send SIGHUP.
	TokenFile string `yaml:"token_file" file:"secret"`
}

// Validate checks the section.
func (c *Config) Validate(report func(field, msg string)) {
	if c.TokenFile == "" {
		report("token_file", "missing: the file with the bearer token the identity provider sends (at least 32 random characters)")
	}
}

// MinTokenLen is the shortest token ReadToken accepts: a provider's
// token guards the power to revoke every device.
const MinTokenLen = 32

// ReadToken reads the bearer token from path: the file's first line,
// without surrounding space.
func ReadToken(path string) ([]byte, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("scim: read token: %w", err)
	}
	tok, _, _ := strings.Cut(string(b), "\n")
	tok = strings.TrimSpace(tok)
	if len(tok) < MinTokenLen {
		return nil, fmt.Errorf("scim: the token in %s is %d characters long: use at least %d random characters", path, len(tok), MinTokenLen)
	}
	if strings.ContainsFunc(tok, func(r rune) bool { return r <= ' ' || r > '~' }) {
		return nil, fmt.Errorf("scim: the token in %s has spaces or characters outside printable ASCII", path)
	}
	return []byte(tok), nil
}
