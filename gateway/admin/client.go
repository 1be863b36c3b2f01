package admin

import (
	"bytes"
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net"
	"net/http"
	"os"
	"strings"
	"time"
)

// ClientOptions say how the CLI reaches a running gateway: the local
// socket (the default), or a remote URL with a token.
type ClientOptions struct {
	// Socket is the admin socket; DefaultSocket when empty and URL is
	// empty.
	Socket string
	// URL is a remote admin listener (https://gw.example:9100). It needs
	// TokenFile.
	URL string
	// TokenFile holds a bearer token (edgegw admin token create).
	TokenFile string
	// CAFile holds the CA certificates (PEM) that sign the listener's
	// certificate, when the system's do not.
	CAFile string
}

// Client calls the admin API.
type Client struct {
	base  string
	where string // for error messages
	token string
	http  *http.Client
}

// NewClient makes a client; it reads the token and CA files now.
func NewClient(o ClientOptions) (*Client, error) {
	if o.URL == "" {
		sock := o.Socket
		if sock == "" {
			sock = DefaultSocket
		}
		if o.TokenFile != "" || o.CAFile != "" {
			return nil, errors.New("a token file or CA file is for a remote admin listener (--admin URL); the local socket needs none")
		}
		d := &net.Dialer{Timeout: 5 * time.Second}
		return &Client{
			base:  "http://localhost",
			where: "the admin socket " + sock,
			http: &http.Client{Transport: &http.Transport{
				DialContext: func(ctx context.Context, _, _ string) (net.Conn, error) {
					return d.DialContext(ctx, "unix", sock)
				},
			}},
		}, nil
	}
	if o.Socket != "" {
		return nil, errors.New("give either the admin socket or a remote admin URL, not both")
	}
	base := strings.TrimSuffix(o.URL, "/")
	if !strings.Contains(base, "://") {
		base = "https://" + base
	}
	if o.TokenFile == "" {
		return nil, fmt.Errorf("a remote admin listener (%s) needs a token: --token-file FILE (edgegw admin token create NAME on the gateway)", base)
	}
	b, err := os.ReadFile(o.TokenFile)
	if err != nil {
		return nil, fmt.Errorf("token file: %w", err)
	}
	token := strings.TrimSpace(string(b))
	if !strings.HasPrefix(token, TokenPrefix) {
		return nil, fmt.Errorf("token file %s does not hold an edgegw admin token (%s…)", o.TokenFile, TokenPrefix)
	}
	tcfg := &tls.Config{MinVersion: tls.VersionTLS12}
	if o.CAFile != "" {
		pem, err := os.ReadFile(o.CAFile)
		if err != nil {
			return nil, fmt.Errorf("CA file: %w", err)
		}
		pool := x509.NewCertPool()
		if !pool.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("CA file %s: no PEM certificates", o.CAFile)
		}
		tcfg.RootCAs = pool
	}
	return &Client{
		base:  base,
		where: "the admin API at " + base,
		token: token,
		http:  &http.Client{Transport: &http.Transport{TLSClientConfig: tcfg, Proxy: http.ProxyFromEnvironment}},
	}, nil
}

// Do sends a request (in, when not nil, as JSON) and returns the body of a
// 2xx answer. Any other answer is an error with the API's message.
func (c *Client) Do(ctx context.Context, method, path string, in any) ([]byte, error) {
	var body io.Reader
	if in != nil {
		b, err := json.Marshal(in)
		if err != nil {
			return nil, err
		}
		body = bytes.NewReader(b)
	}
	req, err := http.NewRequestWithContext(ctx, method, c.base+path, body)
	if err != nil {
		return nil, err
	}
	if in != nil {
		req.Header.Set("Content-Type", "application/json")
	}
	if c.token != "" {
		req.Header.Set("Authorization", "Bearer "+c.token)
	}
	resp, err := c.http.Do(req)
	if err != nil {
		return nil, fmt.Errorf("cannot reach %s (is edgegw running? run as root for the socket): %w", c.where, err)
	}
	defer resp.Body.Close()
	b, err := io.ReadAll(io.LimitReader(resp.Body, 64<<20))
	if err != nil {
		return nil, fmt.Errorf("%s: %w", c.where, err)
	}
	if resp.StatusCode >= 200 && resp.StatusCode < 300 {
		return b, nil
	}
	var e struct {
		Error APIError `json:"error"`
	}
	if json.Unmarshal(b, &e) == nil && e.Error.Message != "" {
		return b, &StatusError{Status: resp.StatusCode, Code: e.Error.Code, Message: e.Error.Message}
	}
	return b, &StatusError{Status: resp.StatusCode, Message: fmt.Sprintf("%s answered %s", c.where, resp.Status)}
}

// StatusError is a refusal from the admin API.
type StatusError struct {
	Status  int
	Code    string
	Message string
}

func (e *StatusError) Error() string { return e.Message }
