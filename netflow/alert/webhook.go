package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
)

// Webhook is a URL that receives each event as JSON, in the shape of
// Cloudflare's generic webhook payload (name, text, data, ts, alert_type,
// alert_correlation_id, alert_event) with the event itself in data.
type Webhook struct {
	URL string
	// Secret, if set, is sent in the cf-webhook-auth header, as Cloudflare
	// sends its webhook secret.
	Secret string
}

// String is the webhook's scheme and host: its path and query may hold a
// token.
func (w *Webhook) String() string {
	u, err := url.Parse(w.URL)
	if err != nil {
		return "webhook"
	}
	return "webhook " + u.Scheme + "://" + u.Host
}

func (w *Webhook) validate() error {
	u, err := url.Parse(w.URL)
	if err != nil {
		return fmt.Errorf("alert webhook %q: %w", w.URL, err)
	}
	if (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("alert webhook %q: must be an http or https URL", w.URL)
	}
	return nil
}

// payload is the JSON a webhook receives.
type payload struct {
	Name          string `json:"name"`
	Text          string `json:"text"`
	Data          Event  `json:"data"`
	TS            int64  `json:"ts"`
	AlertType     string `json:"alert_type"`
	CorrelationID string `json:"alert_correlation_id"`
	AlertEvent    string `json:"alert_event"`
	PolicyName    string `json:"policy_name"`
}

// AlertType is the payload's alert_type, MNM's for volumetric rules.
const AlertType = "fbm_volumetric_attack"

func newPayload(ev Event) payload {
	p := payload{Name: "Flow alert: " + ev.Rule, Data: ev, TS: ev.Time.Unix(), AlertType: AlertType,
		CorrelationID: ev.ID, PolicyName: ev.Rule, AlertEvent: EventStart}
	p.Text = fmt.Sprintf("%s: traffic to %s at %.0f bits/s, %.0f packets/s over %.0f s (thresholds: %d bits/s, %d packets/s)",
		ev.Rule, ev.Prefix, ev.BitsPerSecond, ev.PacketsPerSecond, ev.DurationSeconds, ev.ThresholdBitsPerSecond, ev.ThresholdPacketsPerSecond)
	if ev.State == Resolved {
		p.AlertEvent = EventEnd
		p.Text = fmt.Sprintf("%s resolved: traffic to %s is back to %.0f bits/s, %.0f packets/s", ev.Rule, ev.Prefix, ev.BitsPerSecond, ev.PacketsPerSecond)
	}
	return p
}

// post sends ev once; retry says whether a failure may pass on a retry.
func (w *Webhook) post(ctx context.Context, c *http.Client, ev Event) (retry bool, err error) {
	body, err := json.Marshal(newPayload(ev))
	if err != nil {
		return false, fmt.Errorf("encode alert: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, w.URL, bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("alert webhook: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	if w.Secret != "" {
		req.Header.Set("cf-webhook-auth", w.Secret)
	}
	resp, err := c.Do(req)
	if err != nil {
		return true, fmt.Errorf("alert webhook: %w", err)
	}
	defer resp.Body.Close()
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	if resp.StatusCode/100 == 2 {
		return false, nil
	}
	return resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500,
		fmt.Errorf("alert %s answered %s", w, resp.Status)
}
