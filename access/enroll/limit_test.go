package enroll

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// TestDeviceLimit: with max_devices_per_user 2 a third key is refused with
// device_limit and nothing is registered; renewing a key the user has is
// allowed; revoking one frees a place; another user is counted apart.
func TestDeviceLimit(t *testing.T) {
	t.Parallel()
	e := newEnv(t, enrolltest.Options{}, func(o *Options) {
		o.MaxDevicesPerUser = 2
		o.Policies = []policy.Policy{{Name: "all", Action: policy.Allow, Include: []policy.Selector{{EmailDomain: "zitadel.ch"}}}}
	})
	ctx := t.Context()
	c := e.client()
	d, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	toks := e.signIn(t, e.op.Username(), 5)
	k1, k2, k3 := newKey(t), newKey(t), newKey(t)
	r1, err := c.Register(ctx, d, "", toks[0], k1, "one")
	if err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, d, "", toks[1], k2, "two"); err != nil {
		t.Fatal(err)
	}
	_, err = c.Register(ctx, d, "", toks[2], k3, "three")
	var re *RemoteError
	if !errors.As(err, &re) || re.Code != CodeDeviceLimit || re.Status != http.StatusForbidden || !strings.Contains(re.Message, "You already have 2 devices") {
		t.Fatalf("third device: %v", err)
	}
	if devs, _ := e.reg.List(ctx); len(devs) != 2 {
		t.Fatalf("%d devices registered", len(devs))
	}
	// The refused sign-in may be used again once there is room; first a
	// renewal of a key the user has, which needs none.
	if r, err := c.Register(ctx, d, "", toks[2], k1, "one renewed"); err != nil || r.Device.ID != r1.Device.ID {
		t.Fatalf("renewal: %v %v", r, err)
	}
	if _, err := e.reg.Revoke(ctx, r1.Device.ID); err != nil {
		t.Fatal(err)
	}
	if _, err := c.Register(ctx, d, "", toks[3], k3, "three"); err != nil {
		t.Fatalf("after a revocation: %v", err)
	}
	// The second user has a count of their own.
	other := e.signIn(t, enrolltest.SecondUser, 1)[0]
	if _, err := c.Register(ctx, d, "", other, newKey(t), "contractor"); err != nil {
		t.Fatalf("second user: %v", err)
	}
	if !strings.Contains(e.logs.String(), "limit 2") {
		t.Fatalf("the log lacks the cause:\n%s", e.logs.String())
	}
}

// TestEnrollNotification: every enrollment is POSTed to the webhook as
// JSON; a receiver failing with 503 gets retries until it accepts, and
// one that keeps refusing with 400 is not retried and is counted.
func TestEnrollNotification(t *testing.T) {
	old := notifyBackoff
	notifyBackoff = 10 * time.Millisecond
	t.Cleanup(func() { notifyBackoff = old })

	var attempts atomic.Int32
	got := make(chan Notification, 4)
	fail := atomic.Int32{} // 503 answers still to give
	fail.Store(2)
	var reject atomic.Bool // answer 400 to everything
	hook := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		attempts.Add(1)
		if reject.Load() {
			http.Error(w, "no", http.StatusBadRequest)
			return
		}
		if r.Method != http.MethodPost || r.Header.Get("Content-Type") != "application/json" {
			http.Error(w, "bad request", http.StatusBadRequest)
			return
		}
		if fail.Add(-1) >= 0 {
			http.Error(w, "busy", http.StatusServiceUnavailable)
			return
		}
		b, _ := io.ReadAll(r.Body)
		var n Notification
		if err := json.Unmarshal(b, &n); err != nil {
			http.Error(w, err.Error(), http.StatusBadRequest)
			return
		}
		got <- n
	}))
	t.Cleanup(hook.Close)
	e := newEnv(t, enrolltest.Options{}, func(o *Options) { o.NotifyURL = hook.URL; o.HTTPClient = &http.Client{Timeout: 5 * time.Second} })
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- e.h.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	c := e.client()
	d, err := c.Discover(ctx)
	if err != nil {
		t.Fatal(err)
	}
	tok := e.signIn(t, e.op.Username(), 1)[0]
	pub := newKey(t)
	r, err := c.Register(ctx, d, "", tok, pub, "alice laptop")
	if err != nil {
		t.Fatal(err)
	}
	var n Notification
	select {
	case n = <-got:
	case <-time.After(20 * time.Second):
		t.Fatalf("no notification after %d attempts", attempts.Load())
	}
	if n.Event != EventEnrolled || n.Gateway != "gw-one.test" || n.Provider != "test-op" || n.Device.ID != r.Device.ID ||
		n.Device.Name != "alice laptop" || n.Device.Email != "test-user@zitadel.ch" || n.Device.PublicKey != pub || n.Remote == "" {
		t.Fatalf("notification %+v", n)
	}
	if a := attempts.Load(); a != 3 {
		t.Fatalf("%d attempts, want 2 refused and 1 delivered", a)
	}
	testkit.Eventually(t, 5*time.Second, "delivered counted", func() error {
		return wantCount(e.h, "delivered", 1)
	})

	// A receiver that refuses for good (4xx) is not retried.
	attempts.Store(0)
	reject.Store(true)
	tok = e.signIn(t, e.op.Username(), 1)[0]
	if _, err := c.Register(ctx, d, "", tok, newKey(t), "second"); err != nil {
		t.Fatal(err)
	}
	testkit.Eventually(t, 10*time.Second, "failure counted", func() error {
		return wantCount(e.h, "failed", 1)
	})
	if a := attempts.Load(); a != 1 {
		t.Fatalf("a 400 was retried: %d attempts", a)
	}
	if !strings.Contains(e.logs.String(), "enrollment notification not delivered") {
		t.Fatalf("no log of the failure:\n%s", e.logs.String())
	}
}

func wantCount(h *Handler, result string, want float64) error {
	if got := testutil.ToFloat64(h.metrics.notify.WithLabelValues(result)); got != want {
		return fmt.Errorf("edgegw_enroll_notifications_total{result=%q} = %v, want %v", result, got, want)
	}
	return nil
}
