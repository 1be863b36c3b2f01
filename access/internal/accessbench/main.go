// Command accessbench is the rig behind the Access benchmark: it runs, each
// in its own process, an upstream, an OpenID provider (built on
// github.com/zitadel/oidc/v3) and edgegw's Access proxy, all on loopback,
// and logs a browser-like client in through a proxy so that wrk can replay
// the session cookie. bench.sh beside it drives the comparison with
// oauth2-proxy.
//
//	accessbench upstream -listen 127.0.0.1:18080
//	accessbench idp -listen 127.0.0.1:18081 -redirect https://wiki.test:18443/cdn-cgi/access/callback ...
//	accessbench edgegw -listen 127.0.0.1:18443 -upstream http://127.0.0.1:18080 -issuer http://127.0.0.1:18081 -state DIR
//	accessbench login -start https://wiki.test:18443/ -dial 127.0.0.1:18443 -cookie EDGEGW_Authorization
package main

import (
	"context"
	"crypto/tls"
	"errors"
	"flag"
	"fmt"
	"io"
	"log"
	"log/slog"
	"net"
	"net/http"
	"net/http/cookiejar"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"time"

	"github.com/zitadel/oidc/v3/example/server/exampleop"
	"github.com/zitadel/oidc/v3/example/server/storage"
	zoidc "github.com/zitadel/oidc/v3/pkg/oidc"
	"github.com/zitadel/oidc/v3/pkg/op"

	"github.com/edgegw/edgegw/access"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/access/policy"
)

// The provider's one user and the clients' secret.
const (
	password     = "verysecure"
	clientSecret = "secret"
)

func main() {
	if len(os.Args) < 2 {
		log.Fatal("usage: accessbench upstream|idp|edgegw|login [flags]")
	}
	ctx, stop := signal.NotifyContext(context.Background(), os.Interrupt, syscall.SIGTERM)
	defer stop()
	var err error
	switch cmd, args := os.Args[1], os.Args[2:]; cmd {
	case "upstream":
		err = runUpstream(ctx, args)
	case "idp":
		err = runIdP(ctx, args)
	case "edgegw":
		err = runEdgegw(ctx, args)
	case "login":
		err = runLogin(args)
	default:
		err = fmt.Errorf("unknown command %q", cmd)
	}
	if err != nil {
		log.Fatal(err)
	}
}

func serve(ctx context.Context, addr string, h http.Handler) error {
	srv := &http.Server{Addr: addr, Handler: h, ReadHeaderTimeout: 10 * time.Second}
	go func() {
		<-ctx.Done()
		srv.Close()
	}()
	if err := srv.ListenAndServe(); !errors.Is(err, http.ErrServerClosed) {
		return err
	}
	return nil
}

func runUpstream(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("upstream", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18080", "address")
	fs.Parse(args)
	body := []byte("hello from the upstream\n")
	return serve(ctx, *listen, http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain")
		w.Write(body)
	}))
}

// emailStorage puts email and groups into ID tokens too, as many
// providers do, so that proxies which read only the ID token see them.
type emailStorage struct{ *storage.Storage }

func (s emailStorage) SetUserinfoFromRequest(ctx context.Context, ui *zoidc.UserInfo, req op.IDTokenRequest, scopes []string) error {
	if err := s.Storage.SetUserinfoFromRequest(ctx, ui, req, append(scopes, zoidc.ScopeEmail)); err != nil {
		return err
	}
	ui.AppendClaims("groups", []string{"engineering"})
	return nil
}

func runIdP(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("idp", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18081", "address")
	var redirects multi
	fs.Var(&redirects, "client", "client_id=redirect_uri, repeatable")
	fs.Parse(args)
	issuer := "http://" + *listen
	clients := map[string]*storage.Client{}
	for _, c := range redirects {
		id, uri, ok := strings.Cut(c, "=")
		if !ok {
			return fmt.Errorf("-client %q: want id=redirect_uri", c)
		}
		clients[id] = storage.WebClient(id, clientSecret, uri)
	}
	st := emailStorage{storage.NewStorageWithClients(storage.NewUserStore(issuer), clients)}
	return serve(ctx, *listen, exampleop.SetupServer(issuer, st, nil, false))
}

type multi []string

func (m *multi) String() string     { return strings.Join(*m, ",") }
func (m *multi) Set(v string) error { *m = append(*m, v); return nil }

func runEdgegw(ctx context.Context, args []string) error {
	fs := flag.NewFlagSet("edgegw", flag.ExitOnError)
	listen := fs.String("listen", "127.0.0.1:18443", "address")
	upstream := fs.String("upstream", "http://127.0.0.1:18080", "upstream URL")
	issuer := fs.String("issuer", "http://127.0.0.1:18081", "OIDC issuer")
	state := fs.String("state", "", "state directory (the self-signed certificate lands in STATE/access)")
	fs.Parse(args)
	if *state == "" {
		return errors.New("-state is required")
	}
	secret := filepath.Join(*state, "client.secret")
	if err := os.WriteFile(secret, []byte(clientSecret), 0o600); err != nil {
		return err
	}
	cfg := access.Config{
		Listen: *listen,
		Apps: []access.App{{Name: "wiki", Domain: "wiki.test", Upstream: *upstream, Policies: []policy.Policy{{
			Name: "engineering", Action: policy.Allow,
			Include: []policy.Selector{{EmailDomain: "zitadel.ch"}},
			Require: []policy.Selector{{Group: "engineering"}},
		}}}},
	}
	idp := identity.Config{Providers: []identity.Provider{{Name: "bench", Issuer: *issuer, ClientID: "edgegw", ClientSecretFile: secret}}}
	logger := slog.New(slog.NewTextHandler(os.Stderr, &slog.HandlerOptions{Level: slog.LevelWarn}))
	srv, err := access.New(cfg, idp, access.Options{Logger: logger, StateDir: *state})
	if err != nil {
		return err
	}
	return srv.Run(ctx)
}

// runLogin logs in through a proxy like a browser and prints the session
// cookie as a Cookie header value.
func runLogin(args []string) error {
	fs := flag.NewFlagSet("login", flag.ExitOnError)
	start := fs.String("start", "https://wiki.test:18443/", "URL that starts the login")
	dial := fs.String("dial", "", "connect to this address for the start URL's host")
	cookie := fs.String("cookie", "EDGEGW_Authorization", "session cookie name (prefix)")
	fs.Parse(args)
	su, err := url.Parse(*start)
	if err != nil {
		return err
	}
	jar, _ := cookiejar.New(nil)
	tr := &http.Transport{
		TLSClientConfig: &tls.Config{InsecureSkipVerify: true}, // the rig's self-signed certificate, on loopback
		DialContext: func(ctx context.Context, network, addr string) (net.Conn, error) {
			if *dial != "" && addr == su.Host {
				addr = *dial
			}
			var d net.Dialer
			return d.DialContext(ctx, network, addr)
		},
	}
	c := &http.Client{Jar: jar, Transport: tr, Timeout: 30 * time.Second}
	resp, err := c.Get(*start)
	if err != nil {
		return err
	}
	io.Copy(io.Discard, resp.Body)
	resp.Body.Close()
	form := resp.Request.URL
	id := form.Query().Get("authRequestID")
	if id == "" {
		return fmt.Errorf("expected the provider's login form, got %s (%d)", form, resp.StatusCode)
	}
	user := "test-user@" + form.Hostname()
	resp, err = c.PostForm(form.String(), url.Values{"id": {id}, "username": {user}, "password": {password}})
	if err != nil {
		return err
	}
	b, _ := io.ReadAll(resp.Body)
	resp.Body.Close()
	if resp.StatusCode != 200 || resp.Request.URL.Host != su.Host {
		return fmt.Errorf("login ended at %s (%d): %.200s", resp.Request.URL, resp.StatusCode, b)
	}
	var parts []string
	for _, ck := range jar.Cookies(su) {
		if strings.HasPrefix(ck.Name, *cookie) {
			parts = append(parts, ck.Name+"="+ck.Value)
		}
	}
	if len(parts) == 0 {
		return fmt.Errorf("no %s cookie after login", *cookie)
	}
	fmt.Println(strings.Join(parts, "; "))
	return nil
}
