package access

import (
	"crypto/rand"
	"crypto/rsa"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/url"
	"sync"
	"testing"
	"time"

	jose "github.com/go-jose/go-jose/v4"
	"github.com/prometheus/client_golang/prometheus/testutil"

	"github.com/edgegw/edgegw/access/internal/oidckeys"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// blockingSink stands for a Logpush destination that stopped taking
// records: AccessRecord blocks until release is closed.
type blockingSink struct {
	release chan struct{}
	mu      sync.Mutex
	n       int
}

func (b *blockingSink) AccessRecord(Record) {
	<-b.release
	b.mu.Lock()
	b.n++
	b.mu.Unlock()
}

func (b *blockingSink) count() int {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.n
}

// TestRecordsNeverBlock: with the sink stuck, requests still complete;
// records past the queue are dropped and counted, and the queued ones
// arrive once the sink moves again.
func TestRecordsNeverBlock(t *testing.T) {
	dir := t.TempDir()
	f := newFakeIdP(t)
	up := newUpstream(t)
	sink := &blockingSink{release: make(chan struct{})}
	e := startEnv(t, defaultConfig(t, up.URL, dir), idpConfig(t, f, dir), dir, up, func(o *Options) { o.Sink = sink })
	const n = recordQueueLen + 1000
	done := make(chan struct{})
	go func() {
		defer close(done)
		for range n {
			// A wrong service token secret: refused and recorded.
			r := httptest.NewRequest(http.MethodGet, "https://wiki.test/", nil)
			r.Header.Set(HeaderClientID, "6f2c1a0e.access")
			r.Header.Set(HeaderClientSecret, "wrong-secret-wrong-secret")
			w := httptest.NewRecorder()
			e.srv.ServeHTTP(w, r)
			if w.Code != http.StatusUnauthorized {
				t.Errorf("status %d", w.Code)
				return
			}
		}
	}()
	select {
	case <-done:
	case <-time.After(30 * time.Second):
		close(sink.release)
		t.Fatal("requests blocked on a stuck record sink")
	}
	dropped := int(testutil.ToFloat64(e.srv.metrics.recsDropped))
	// The queue holds recordQueueLen; the delivering goroutine may hold
	// one more inside the stuck sink.
	if dropped != n-recordQueueLen && dropped != n-recordQueueLen-1 {
		t.Fatalf("dropped %d of %d records", dropped, n)
	}
	close(sink.release)
	testkit.Eventually(t, 10*time.Second, "the sink gets every queued record", func() error {
		if got := sink.count(); got != n-dropped {
			return fmt.Errorf("sink got %d records, want %d", got, n-dropped)
		}
		return nil
	})
}

// TestLoginReplaySetFlood: callbacks with genuine login cookies and codes
// the provider never issued record nothing in the set of used nonces, and
// a real login still works.
func TestLoginReplaySetFlood(t *testing.T) {
	e, _ := standardEnv(t)
	for range 200 {
		c := e.client(false)
		resp, _ := e.get(c, e.url("wiki.test", PathLogin))
		au, _ := url.Parse(resp.Header.Get("Location"))
		cb := e.url("wiki.test", PathCallback+"?"+url.Values{"state": {au.Query().Get("state")}, "code": {rand.Text()}}.Encode())
		if resp, body := e.get(c, cb); resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("forged callback: %d %s", resp.StatusCode, body)
		}
	}
	if n := e.srv.used.Len(); n != 0 {
		t.Fatalf("forged callbacks left %d nonces in the set", n)
	}
	e.login("wiki.test")
	if n := e.srv.used.Len(); n != 1 {
		t.Fatalf("%d nonces after one login", n)
	}
}

// TestUnknownKidNotRefetched: ID tokens naming key ids the provider never
// had make the proxy fetch the provider's JWKS a bounded number of times,
// not once per token.
func TestUnknownKidNotRefetched(t *testing.T) {
	e, f := standardEnv(t)
	other, err := rsa.GenerateKey(rand.Reader, 2048)
	if err != nil {
		t.Fatal(err)
	}
	f.set(func(f *fakeIdP) {
		f.mint = func(c map[string]any) string { return signJWT(t, other, "kid-"+rand.Text(), jose.RS256, c) }
	})
	start := time.Now()
	before := f.jwksFetches.Load()
	for range 50 {
		resp, body := e.get(e.client(true), e.url("wiki.test", "/"))
		if resp.StatusCode != http.StatusUnauthorized {
			t.Fatalf("login with an unknown kid: %d %s", resp.StatusCode, body)
		}
	}
	if got, limit := f.jwksFetches.Load()-before, 2+int64(time.Since(start)/oidckeys.DefaultMinRefetch); got > limit {
		t.Fatalf("%d JWKS fetches for 50 tokens with unknown key ids (limit %d)", got, limit)
	}
	f.set(func(f *fakeIdP) { f.mint = nil })
	e.login("wiki.test") // the provider's real key still works
}
