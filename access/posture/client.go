package posture

import (
	"bufio"
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"os"
	"strings"

	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// Client sends a device's reports to its gateway.
type Client struct {
	// Gateway is the gateway's base URL, https://host[:port]; over the
	// tunnel, its WireGuard address.
	Gateway    string
	HTTPClient *http.Client
	// PrivateKey is the device's WireGuard private key and
	// GatewayPublicKey the gateway's, as in the device's wg-quick file.
	PrivateKey       wgconf.Key
	GatewayPublicKey wgconf.Key
}

// RefusedError is the gateway's refusal of a report.
type RefusedError struct {
	Status int
	Code   string
	Msg    string
}

func (e *RefusedError) Error() string {
	return fmt.Sprintf("the gateway refused the report (%d %s): %s", e.Status, e.Code, e.Msg)
}

// Send signs and sends r and returns the gateway's verdict.
func (c *Client) Send(ctx context.Context, r Report) (Response, error) {
	body, err := json.Marshal(r)
	if err != nil {
		return Response{}, fmt.Errorf("posture: encode the report: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, strings.TrimSuffix(c.Gateway, "/")+Path, bytes.NewReader(body))
	if err != nil {
		return Response{}, fmt.Errorf("posture: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if err := Sign(req.Header, body, c.PrivateKey, c.GatewayPublicKey); err != nil {
		return Response{}, fmt.Errorf("posture: sign the report: %w", err)
	}
	hc := c.HTTPClient
	if hc == nil {
		hc = http.DefaultClient
	}
	resp, err := hc.Do(req)
	if err != nil {
		return Response{}, fmt.Errorf("posture: send the report: %w", err)
	}
	defer resp.Body.Close()
	raw, err := io.ReadAll(io.LimitReader(resp.Body, 64<<10))
	if err != nil {
		return Response{}, fmt.Errorf("posture: read the answer: %w", err)
	}
	if resp.StatusCode != http.StatusOK {
		var ae apiError
		if json.Unmarshal(raw, &ae) != nil || ae.Code == "" {
			ae = apiError{Code: "http", Error: strings.TrimSpace(string(raw))}
		}
		return Response{}, &RefusedError{Status: resp.StatusCode, Code: ae.Code, Msg: ae.Error}
	}
	var out Response
	if err := json.Unmarshal(raw, &out); err != nil {
		return Response{}, fmt.Errorf("posture: the gateway's answer is not JSON: %w", err)
	}
	return out, nil
}

// ReadQuickKeys reads the device's private key ([Interface] PrivateKey)
// and the gateway's public key ([Peer] PublicKey) from a wg-quick file,
// such as the one `edgegw enroll` writes.
func ReadQuickKeys(path string) (priv, gatewayPub wgconf.Key, err error) {
	f, err := os.Open(path)
	if err != nil {
		return priv, gatewayPub, fmt.Errorf("posture: %w", err)
	}
	defer f.Close()
	sc := bufio.NewScanner(io.LimitReader(f, 1<<20))
	section := ""
	peers := 0
	for sc.Scan() {
		line, _, _ := strings.Cut(sc.Text(), "#")
		line = strings.TrimSpace(line)
		if strings.HasPrefix(line, "[") {
			section = strings.ToLower(line)
			if section == "[peer]" {
				peers++
			}
			continue
		}
		k, v, ok := strings.Cut(line, "=")
		if !ok {
			continue
		}
		k, v = strings.ToLower(strings.TrimSpace(k)), strings.TrimSpace(v)
		switch {
		case section == "[interface]" && k == "privatekey":
			if priv, err = wgconf.ParseKey(v); err != nil {
				return priv, gatewayPub, fmt.Errorf("posture: %s: PrivateKey: %w", path, err)
			}
		case section == "[peer]" && k == "publickey" && peers == 1:
			if gatewayPub, err = wgconf.ParseKey(v); err != nil {
				return priv, gatewayPub, fmt.Errorf("posture: %s: PublicKey: %w", path, err)
			}
		}
	}
	if err := sc.Err(); err != nil {
		return priv, gatewayPub, fmt.Errorf("posture: %s: %w", path, err)
	}
	if priv.IsZero() || gatewayPub.IsZero() || peers != 1 {
		return priv, gatewayPub, fmt.Errorf("posture: %s: expected an [Interface] PrivateKey and one [Peer] PublicKey (the gateway)", path)
	}
	return priv, gatewayPub, nil
}
