package enroll

import (
	"context"
	"fmt"
	"net/http"
	"net/http/httptest"
	"net/netip"
	"strconv"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/internal/replay"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// Enrollment latency in parts: the ID token check (go-oidc signature and
// claims, plus the userinfo round trip to the provider on loopback) and
// the rest (policy, the SQLite registry's write, the answer).
//
//	go test -run '^$' -bench . -benchtime 2000x ./access/enroll/

func benchRegistry(b *testing.B) *identity.Registry {
	reg, err := identity.Open(b.Context(), identity.Options{StateDir: b.TempDir(), Pool: netip.MustParsePrefix("100.96.0.0/12")})
	if err != nil {
		b.Fatal(err)
	}
	b.Cleanup(func() { reg.Close() })
	return reg
}

func benchKeys(b *testing.B) []wireguard.Key {
	keys := make([]wireguard.Key, b.N)
	for i := range keys {
		k, err := wireguard.GeneratePrivateKey()
		if err != nil {
			b.Fatal(err)
		}
		keys[i] = k.PublicKey()
	}
	return keys
}

func BenchmarkVerifyToken(b *testing.B) {
	e := newEnv(b, enrolltest.Options{}, nil)
	tok := e.signIn(b, e.op.Username(), 1)[0]
	st := e.h.state.Load()
	p := st.providers[0]
	ctx := context.Background()
	d, err := e.h.discover(ctx, p)
	if err != nil {
		b.Fatal(err)
	}
	b.ResetTimer()
	for range b.N {
		if _, err := e.h.verify(ctx, st, p, d, d.device, tok.IDToken, tok.AccessToken, ""); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkEnrollSQLite(b *testing.B) {
	reg := benchRegistry(b)
	e := newEnv(b, enrolltest.Options{}, func(o *Options) { o.Registry = reg; o.Changed = nil })
	st := e.h.state.Load()
	l := &login{Provider: "test-op", Issuer: e.op.Issuer, Subject: "bench", Email: "bench@zitadel.ch", Groups: []string{"staff"}}
	r := httptest.NewRequest(http.MethodPost, "https://gw.example.com"+PathAPI, nil)
	keys := benchKeys(b)
	b.ResetTimer()
	for i := range b.N {
		if _, aerr := e.h.enroll(b.Context(), st, r, l, "bench", keys[i]); aerr != nil {
			b.Fatal(aerr.cause)
		}
	}
}

func BenchmarkRevokeSQLite(b *testing.B) {
	reg := benchRegistry(b)
	keys := benchKeys(b)
	ids := make([]string, b.N)
	for i := range ids {
		d, err := reg.Enroll(b.Context(), identity.Enrollment{Name: "bench", Subject: "bench", PublicKey: keys[i]})
		if err != nil {
			b.Fatal(err)
		}
		ids[i] = d.ID
	}
	a := NewAdmin(reg, AdminOptions{})
	b.ResetTimer()
	for i := range b.N {
		w := httptest.NewRecorder()
		a.ServeHTTP(w, httptest.NewRequest(http.MethodPost, PathDevices+"/"+ids[i]+"/revoke", nil))
		if w.Code != 200 {
			b.Fatalf("revoke: %d %s", w.Code, w.Body)
		}
	}
}

// BenchmarkEnrollGuards is what the per-source limit and the one-use set
// add to each enrollment: a token from the source's bucket (in a table of
// 10,000 sources) and a use key recorded in a set holding 50,000 live
// sign-ins. Compare with BenchmarkVerifyToken + BenchmarkEnrollSQLite.
func BenchmarkEnrollGuards(b *testing.B) {
	t0 := time.Now()
	l := newLimiter(DefaultRate, DefaultBurst, maxSources)
	for i := range 10000 {
		l.allow(netip.AddrFrom4([4]byte{10, 1, byte(i >> 8), byte(i)}), t0)
	}
	used := replay.New(replay.DefaultMax)
	for i := range 50000 {
		used.Add(replay.KeyOf("warm", strconv.Itoa(i)), t0, t0.Add(time.Hour))
	}
	claims := map[string]any{"jti": "", "nonce": "", "at_hash": "x"}
	iat := t0
	b.ResetTimer()
	for i := range b.N {
		now := t0.Add(time.Duration(i) * time.Microsecond)
		if ok, _ := l.allow(netip.AddrFrom4([4]byte{192, 0, byte(i >> 8), byte(i)}), now); !ok {
			b.Fatal("limited")
		}
		claims["at_hash"] = strconv.Itoa(i)
		if err := used.Add(tokenUseKey("https://sso.example", "user", iat, claims), now, now.Add(10*time.Minute)); err != nil {
			b.Fatal(err)
		}
	}
}

// BenchmarkDeviceListPage is one page of the console's device list over a
// registry of 10,000 devices (SQLite): the first 50 of a search, and a
// page in the middle of the whole list. The goal is the console's API p99
// of 50 ms on loopback (BENCHMARKS.md).
func BenchmarkDeviceListPage(b *testing.B) {
	const n = 10_000
	reg := benchRegistry(b)
	var wg sync.WaitGroup
	errc := make(chan error, 4)
	for w := range 4 {
		wg.Add(1)
		go func() { // owned here: joined below
			defer wg.Done()
			for i := w; i < n; i += 4 {
				k, err := wireguard.GeneratePrivateKey()
				if err == nil {
					_, err = reg.Enroll(b.Context(), identity.Enrollment{Name: fmt.Sprintf("bench-%05d", i), Email: fmt.Sprintf("u%05d@corp.example", i),
						Subject: fmt.Sprint("s", i), Groups: []string{"staff"}, PublicKey: k.PublicKey(), Expires: time.Now().Add(time.Hour)})
				}
				if err != nil {
					errc <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errc)
	if err := <-errc; err != nil {
		b.Fatal(err)
	}
	a := NewAdmin(reg, AdminOptions{})
	for _, q := range []string{"q=u099&limit=50", "limit=50&offset=5000"} {
		b.Run(q, func(b *testing.B) {
			for b.Loop() {
				w := httptest.NewRecorder()
				a.ServeHTTP(w, httptest.NewRequest(http.MethodGet, PathDevices+"?"+q, nil))
				if w.Code != 200 || w.Header().Get("X-Total-Count") == "" {
					b.Fatalf("list: %d %s", w.Code, w.Body)
				}
			}
		})
	}
}
