package alert

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"time"
)

// DefaultPagerDutyURL is PagerDuty's Events API v2 endpoint.
const DefaultPagerDutyURL = "https://events.pagerduty.com/v2/enqueue"

// PagerDuty sends events to a PagerDuty service through the Events API v2:
// a firing is a trigger and its resolve a resolve, both with the alert's
// ID as dedup_key, so PagerDuty keeps one incident per alert.
type PagerDuty struct {
	RoutingKey string // the service's integration key (32 characters)
	URL        string // the events endpoint; "": DefaultPagerDutyURL
	Source     string // payload.source, e.g. the appliance's name; "": "edgegw"
}

// String names the endpoint, not the key.
func (p *PagerDuty) String() string {
	u, err := url.Parse(p.url())
	if err != nil {
		return "pagerduty"
	}
	return "pagerduty " + u.Scheme + "://" + u.Host
}

func (p *PagerDuty) url() string {
	if p.URL == "" {
		return DefaultPagerDutyURL
	}
	return p.URL
}

func (p *PagerDuty) validate() error {
	if len(p.RoutingKey) != 32 {
		return fmt.Errorf("alert pagerduty: the routing key must be 32 characters, got %d", len(p.RoutingKey))
	}
	u, err := url.Parse(p.url())
	if err != nil || (u.Scheme != "https" && u.Scheme != "http") || u.Host == "" {
		return fmt.Errorf("alert pagerduty: events URL %q must be an http or https URL", p.URL)
	}
	return nil
}

// pdEvent is an Events API v2 event.
type pdEvent struct {
	RoutingKey  string     `json:"routing_key"`
	EventAction string     `json:"event_action"` // trigger | resolve
	DedupKey    string     `json:"dedup_key"`
	Payload     *pdPayload `json:"payload,omitempty"` // trigger only
}

type pdPayload struct {
	Summary       string `json:"summary"`
	Source        string `json:"source"`
	Severity      string `json:"severity"`
	Timestamp     string `json:"timestamp"`
	Component     string `json:"component"`
	Group         string `json:"group"`
	Class         string `json:"class"`
	CustomDetails Event  `json:"custom_details"`
}

func (p *PagerDuty) post(ctx context.Context, c *http.Client, ev Event) (retry bool, err error) {
	e := pdEvent{RoutingKey: p.RoutingKey, EventAction: "resolve", DedupKey: ev.ID}
	if ev.State == Firing {
		src := p.Source
		if src == "" {
			src = "edgegw"
		}
		summary := newPayload(ev).Text
		if len(summary) > 1024 {
			summary = summary[:1024]
		}
		e.EventAction = "trigger"
		e.Payload = &pdPayload{Summary: summary, Source: src, Severity: "critical", Timestamp: ev.Time.UTC().Format(time.RFC3339),
			Component: ev.Prefix, Group: ev.Rule, Class: AlertType, CustomDetails: ev}
	}
	body, err := json.Marshal(e)
	if err != nil {
		return false, fmt.Errorf("encode alert: %w", err)
	}
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, p.url(), bytes.NewReader(body))
	if err != nil {
		return false, fmt.Errorf("alert pagerduty: %w", err)
	}
	req.Header.Set("Content-Type", "application/json")
	resp, err := c.Do(req)
	if err != nil {
		return true, fmt.Errorf("alert pagerduty: %w", err)
	}
	defer resp.Body.Close()
	msg, _ := io.ReadAll(io.LimitReader(resp.Body, 4<<10))
	if resp.StatusCode/100 == 2 {
		return false, nil
	}
	// 400 is a malformed event: retrying sends the same one. 429 and 5xx
	// pass.
	return resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500,
		fmt.Errorf("alert %s answered %s: %s", p, resp.Status, bytes.TrimSpace(msg))
}
