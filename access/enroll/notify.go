package enroll

import (
	"bytes"
	"context"
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"net/netip"
	"time"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// Enrollment notifications. A device enrolled in a user's name is what a
// phished approval produces, so the user and the admins hear of each one
// at once: the gateway POSTs a JSON Notification to Options.NotifyURL (a
// chat or mail relay, a SIEM). Delivery runs beside the request, in Run,
// so a slow receiver never holds an enrollment; a failed POST is retried
// with backoff, and what cannot be delivered is counted and logged.

// EventEnrolled is the event of a new or renewed device.
const EventEnrolled = "device.enrolled"

const (
	notifyQueue    = 1024 // notifications waiting; past it they are dropped and counted
	notifyAttempts = 4    // one POST and three retries
)

// notifyBackoff is the wait before the second attempt; it doubles.
var notifyBackoff = time.Second

// Notification is the body of an enrollment webhook.
type Notification struct {
	Event    string             `json:"event"`
	Time     time.Time          `json:"time"`
	Gateway  string             `json:"gateway"`
	Provider string             `json:"provider"`
	Remote   string             `json:"remote"` // the address the enrollment came from
	Device   NotificationDevice `json:"device"`
}

// NotificationDevice is the enrolled device.
type NotificationDevice struct {
	ID        string     `json:"id"`
	Name      string     `json:"name"`
	Email     string     `json:"email"`
	Groups    []string   `json:"groups"`
	PublicKey wgconf.Key `json:"public_key"`
	Address   netip.Addr `json:"address"`
	Expires   time.Time  `json:"expires"`
	Pending   bool       `json:"pending"` // waits for an admin's approval
}

// notify queues a notification of dev; it never blocks.
func (h *Handler) notify(st *state, r *http.Request, provider string, dev identity.Device) {
	if st.opts.NotifyURL == "" && st.opts.NotifyMail == nil {
		return
	}
	n := Notification{
		Event: EventEnrolled, Time: h.now().UTC(), Gateway: st.opts.GatewayName, Provider: provider, Remote: r.RemoteAddr,
		Device: NotificationDevice{ID: dev.ID, Name: dev.Name, Email: dev.Email, Groups: dev.Groups, PublicKey: dev.PublicKey, Address: dev.Address, Expires: dev.Expires, Pending: dev.Pending},
	}
	select {
	case h.notes <- n:
	default:
		h.metrics.notify.WithLabelValues("dropped").Inc()
		h.log.Error("enrollment notification dropped: the queue is full (is the webhook receiver down?)", "device", dev.ID, "email", dev.Email)
	}
}

// Run delivers enrollment notifications until ctx ends. The gateway runs
// it beside the Handler; without it notifications queue, then drop.
func (h *Handler) Run(ctx context.Context) error {
	for {
		select {
		case <-ctx.Done():
			return nil
		case n := <-h.notes:
			h.deliver(ctx, n)
		}
	}
}

// deliver POSTs n to the URL configured now and mails it to the
// recipients configured now, each retrying failures that may pass
// (transport errors, 429 and 5xx, SMTP errors before the message is
// taken) with a doubling backoff.
func (h *Handler) deliver(ctx context.Context, n Notification) {
	opts := h.state.Load().opts
	if url := opts.NotifyURL; url != "" {
		body, _ := json.Marshal(n)
		h.retry(ctx, n, "url", url, func(ctx context.Context) (bool, error) { return h.post(ctx, url, body) })
	}
	if m := opts.NotifyMail; m != nil {
		h.retry(ctx, n, "mail", m.Server, func(ctx context.Context) (bool, error) { return m.send(ctx, n) })
	}
}

// retry runs attempt until it succeeds, says a retry is pointless, or
// notifyAttempts ran; it counts and logs the outcome.
func (h *Handler) retry(ctx context.Context, n Notification, kind, dest string, attempt func(context.Context) (bool, error)) {
	wait := notifyBackoff
	var last error
	for try := 1; try <= notifyAttempts; try++ {
		retry, err := attempt(ctx)
		if err == nil {
			h.metrics.notify.WithLabelValues("delivered").Inc()
			return
		}
		last = err
		if !retry || try == notifyAttempts {
			break
		}
		t := time.NewTimer(wait)
		select {
		case <-ctx.Done():
			t.Stop()
			h.metrics.notify.WithLabelValues("failed").Inc()
			return
		case <-t.C:
		}
		wait *= 2
	}
	h.metrics.notify.WithLabelValues("failed").Inc()
	h.log.Error("enrollment notification not delivered", "device", n.Device.ID, "email", n.Device.Email, kind, dest, "err", last)
}

// post makes one attempt; retry says whether another may succeed.
func (h *Handler) post(ctx context.Context, url string, body []byte) (retry bool, _ error) {
	ctx, cancel := context.WithTimeout(ctx, 10*time.Second)
	defer cancel()
	req, err := http.NewRequestWithContext(ctx, http.MethodPost, url, bytes.NewReader(body))
	if err != nil {
		return false, err
	}
	req.Header.Set("Content-Type", "application/json")
	req.Header.Set("User-Agent", "edgegw-enroll-notify")
	resp, err := h.client.Do(req)
	if err != nil {
		return true, fmt.Errorf("webhook: %w", err)
	}
	io.Copy(io.Discard, io.LimitReader(resp.Body, 64<<10))
	resp.Body.Close()
	switch {
	case resp.StatusCode >= 200 && resp.StatusCode < 300:
		return false, nil
	case resp.StatusCode == http.StatusTooManyRequests || resp.StatusCode >= 500:
		return true, fmt.Errorf("webhook answered %s", resp.Status)
	default:
		return false, fmt.Errorf("webhook answered %s", resp.Status)
	}
}
