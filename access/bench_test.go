package access

import (
	"io"
	"net/http"
	"net/http/httptest"
	"net/url"
	"testing"
)

// BenchmarkAuthenticated measures a logged-in request through edgegw
// against the same request straight to the upstream, both over loopback
// with keep-alive. Run with -benchtime and -cpu as needed.
func BenchmarkAuthenticated(b *testing.B) {
	dir := b.TempDir()
	up := httptest.NewServer(http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { io.WriteString(w, "ok") }))
	b.Cleanup(up.Close)
	f := newFakeIdP(b)
	e := startEnv(b, defaultConfig(b, up.URL, dir), idpConfig(b, f, dir), dir, up, func(o *Options) { o.Logger = nil })
	cookie := sessionFor(b, e, "wiki.test")

	run := func(b *testing.B, c *http.Client, target string) {
		b.ReportAllocs()
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				resp, err := c.Get(target)
				if err != nil {
					b.Error(err)
					return
				}
				io.Copy(io.Discard, resp.Body)
				resp.Body.Close()
				if resp.StatusCode != 200 {
					b.Errorf("status %d", resp.StatusCode)
					return
				}
			}
		})
	}
	b.Run("direct", func(b *testing.B) {
		c := &http.Client{Transport: &http.Transport{MaxIdleConnsPerHost: 64}}
		run(b, c, up.URL+"/")
	})
	b.Run("edgegw", func(b *testing.B) {
		c := e.client(false)
		c.Transport.(*http.Transport).MaxIdleConnsPerHost = 64
		u, _ := url.Parse(e.url("wiki.test", "/"))
		c.Jar.SetCookies(u, []*http.Cookie{{Name: CookieSession, Value: cookie}})
		run(b, c, u.String())
	})
}
