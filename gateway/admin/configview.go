package admin

import (
	"bytes"
	"fmt"
	"net/http"
	"net/url"
	"regexp"
	"strings"

	"go.yaml.in/yaml/v3"
)

// PathConfig shows the running configuration, secrets redacted.
const PathConfig = "/api/v1/config"

// ConfigView answers GET /api/v1/config.
type ConfigView struct {
	// File is where the running configuration was read from.
	File string `json:"file"`
	// YAML is the running configuration as edgegw holds it (defaults
	// filled in), with every secret replaced by Redacted.
	YAML string `json:"yaml"`
	// Editable: the file may be edited and applied through the API
	// (/api/v1/config/source, …/check, …/apply).
	Editable bool `json:"editable"`
}

// Redacted replaces a secret in the configuration shown.
const Redacted = "REDACTED"

// secretKey matches configuration keys whose value is a secret itself
// (not a file naming one: those end in _file and are shown).
var secretKey = regexp.MustCompile(`(?i)(password|passwd|secret|token|psk|private_key|api_key)$`)

// secretParam matches URL query parameters that carry secrets (Logpush's
// header_* values, tokens, passwords).
var secretParam = regexp.MustCompile(`(?i)^(header_.*|.*(token|secret|password|passwd|key|sig|signature))$`)

// redactYAML returns the YAML document with secrets replaced: the value
// of every key secretKey matches, the password of every URL, and the
// secret query parameters of every URL.
func redactYAML(data []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("read the configuration to redact it: %w", err)
	}
	redactNode(&doc, "")
	var buf bytes.Buffer
	enc := yaml.NewEncoder(&buf)
	enc.SetIndent(2)
	if err := enc.Encode(&doc); err != nil {
		return nil, fmt.Errorf("write the redacted configuration: %w", err)
	}
	enc.Close()
	return buf.Bytes(), nil
}

// redactNode redacts n in place; key is the mapping key n is the value
// of ("" elsewhere).
func redactNode(n *yaml.Node, key string) {
	switch n.Kind {
	case yaml.DocumentNode, yaml.SequenceNode:
		for _, c := range n.Content {
			redactNode(c, key)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			redactNode(n.Content[i+1], n.Content[i].Value)
		}
	case yaml.AliasNode:
		// Aliases point at nodes redacted where they are defined.
	case yaml.ScalarNode:
		if key != "" && secretKey.MatchString(key) && !strings.HasSuffix(strings.ToLower(key), "_file") && n.Value != "" {
			n.Value, n.Tag, n.Style = Redacted, "!!str", 0
			return
		}
		if v, ok := redactURL(n.Value); ok {
			n.Value = v
		}
	}
}

// redactURL hides a URL's password and secret query parameters; false
// when s is not such a URL or has nothing to hide.
func redactURL(s string) (string, bool) {
	if !strings.Contains(s, "://") {
		return "", false
	}
	u, err := url.Parse(s)
	if err != nil || u.Scheme == "" {
		return "", false
	}
	changed := false
	if _, has := u.User.Password(); has {
		u.User = url.UserPassword(u.User.Username(), Redacted)
		changed = true
	}
	q := u.Query()
	for k := range q {
		if secretParam.MatchString(k) {
			q.Set(k, Redacted)
			changed = true
		}
	}
	if !changed {
		return "", false
	}
	u.RawQuery = q.Encode()
	return u.String(), true
}

// showConfig serves GET /api/v1/config: the running configuration,
// redacted. Viewers may read it: nothing secret is left in it.
func (s *Server) showConfig(w http.ResponseWriter, r *http.Request) {
	file, cfg := s.opts.RunningConfig()
	raw, err := yaml.Marshal(cfg)
	if err == nil {
		raw, err = redactYAML(raw)
	}
	if err != nil {
		s.log.Error("admin: show the configuration", "err", err)
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	editable := false
	if s.opts.Config != nil {
		_, _, serr := s.opts.Config.Source()
		editable = serr == nil
	}
	writeJSON(w, http.StatusOK, ConfigView{File: file, YAML: string(raw), Editable: editable})
}
