package main

import (
	"bufio"
	"bytes"
	"context"
	"encoding/pem"
	"errors"
	"io"
	"net/http"
	"net/http/cookiejar"
	"net/http/httptest"
	"net/netip"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/policy"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// enrollGateway is an enrollment endpoint in front of a real OpenID
// provider with the device grant, on a TLS listener whose certificate is
// written to caFile.
func enrollGateway(t *testing.T) (gw *httptest.Server, op *enrolltest.OP, reg *enrolltest.Registry, caFile string) {
	t.Helper()
	return enrollGatewayWith(t, false)
}

// enrollGatewayWith is enrollGateway; clientTokens also takes ID tokens
// the client got itself (require_gateway_grant: false), which `edgegw
// enroll --browser` needs.
func enrollGatewayWith(t *testing.T, clientTokens bool) (gw *httptest.Server, op *enrolltest.OP, reg *enrolltest.Registry, caFile string) {
	t.Helper()
	op = enrolltest.Start(t, enrolltest.Options{})
	op.AddDeviceClient("edgegw-cli")
	reg = enrolltest.NewRegistry(netip.MustParseAddr("100.96.0.2"), 4)
	gwKey, _ := wireguard.GeneratePrivateKey()
	p := enroll.Provider{DeviceClientID: "edgegw-cli"}
	p.Name, p.Issuer, p.ClientID = "corp", op.Issuer, "edgegw-web"
	h, err := enroll.New(enroll.Options{
		Providers:    []enroll.Provider{p},
		Policies:     []policy.Policy{{Name: "staff", Action: policy.Allow, Include: []policy.Selector{{Group: "staff"}}}},
		Registry:     reg,
		ClientTokens: clientTokens,
		Tunnel: func(context.Context) (enroll.Tunnel, error) {
			return enroll.Tunnel{PublicKey: gwKey.PublicKey(), Endpoint: "gw.example.com:51820", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("100.96.0.0/12")}}, nil
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	gw = httptest.NewTLSServer(h)
	t.Cleanup(gw.Close)
	caFile = filepath.Join(t.TempDir(), "ca.pem")
	if err := os.WriteFile(caFile, pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: gw.Certificate().Raw}), 0o644); err != nil {
		t.Fatal(err)
	}
	return gw, op, reg, caFile
}

var userCodeRE = regexp.MustCompile(`^    ([A-Z0-9-]{6,})$`)

// TestCmdEnroll runs `edgegw enroll` against the gateway, approving the
// user code it prints at the provider as the user would.
func TestCmdEnroll(t *testing.T) {
	gw, op, reg, caFile := enrollGateway(t)
	out := filepath.Join(t.TempDir(), "wg-corp.conf")
	pr, pw := io.Pipe()
	var stdout bytes.Buffer
	done := make(chan error, 1)
	go func() {
		err := cmdEnroll([]string{gw.URL, "--name", "alice-laptop", "--out", out, "--ca-file", caFile}, &stdout, pw)
		pw.CloseWithError(errors.New("enroll returned"))
		done <- err
	}()
	ctx, cancel := context.WithTimeout(t.Context(), 30*time.Second)
	defer cancel()
	var prompt strings.Builder
	sc := bufio.NewScanner(pr)
	approved := false
	for sc.Scan() {
		prompt.WriteString(sc.Text() + "\n")
		if m := userCodeRE.FindStringSubmatch(sc.Text()); m != nil && !approved {
			if err := op.Approve(ctx, m[1], op.Username(), true); err != nil {
				t.Fatal(err)
			}
			approved = true
		}
	}
	if err := <-done; err != nil {
		t.Fatalf("enroll: %v\nstderr:\n%s", err, prompt.String())
	}
	// The user is sent to the gateway's own approval page first, which
	// names the gateway and the device, then on to the provider.
	if !approved || !strings.Contains(prompt.String(), gw.URL+"/enroll/approve") {
		t.Fatalf("no verification URL and code shown:\n%s", prompt.String())
	}
	devs, _ := reg.List(t.Context())
	if len(devs) != 1 || devs[0].Name != "alice-laptop" {
		t.Fatalf("registry: %+v", devs)
	}
	fi, err := os.Stat(out)
	if err != nil || fi.Mode().Perm() != 0o600 {
		t.Fatalf("config %v %v", fi, err)
	}
	conf, _ := os.ReadFile(out)
	m := regexp.MustCompile(`PrivateKey = (\S+)`).FindSubmatch(conf)
	if m == nil {
		t.Fatalf("config:\n%s", conf)
	}
	priv, err := wireguard.ParseKey(string(m[1]))
	if err != nil || priv.PublicKey() != wireguard.Key(devs[0].PublicKey) {
		t.Fatalf("the file's key is not the registered one: %v", err)
	}
	if !strings.Contains(string(conf), "Endpoint = gw.example.com:51820\n") || !strings.Contains(string(conf), "Address = 100.96.0.2/32\n") {
		t.Fatalf("config:\n%s", conf)
	}
	if !strings.Contains(stdout.String(), devs[0].ID) || !strings.Contains(stdout.String(), "wg-quick up "+out) {
		t.Fatalf("stdout: %s", stdout.String())
	}

	// A second run does not overwrite the file, and says so before any
	// sign-in.
	err = cmdEnroll([]string{gw.URL, "--out", out, "--ca-file", caFile}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "--force") {
		t.Fatalf("second enroll: %v", err)
	}
	// Without the CA, the gateway's certificate is refused.
	err = cmdEnroll([]string{gw.URL, "--out", out + ".2"}, io.Discard, io.Discard)
	if err == nil || !strings.Contains(err.Error(), "certificate") {
		t.Fatalf("enroll without the CA: %v", err)
	}
}

func TestCmdEnrollUsage(t *testing.T) {
	for _, args := range [][]string{
		{},
		{"https://a", "https://b"},
		{"https://gw", "--ca-file", "x.pem", "--insecure"},
		{"https://gw", "--no-such-flag"},
	} {
		if err := cmdEnroll(args, io.Discard, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("enroll %q: %v, want a usage error", args, err)
		}
	}
	for _, args := range [][]string{{}, {"list", "x"}, {"show"}, {"revoke"}, {"approve"}, {"delete", "x"}} {
		if err := cmdDevice(args, io.Discard, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("device %q: %v, want a usage error", args, err)
		}
	}
}

// TestCmdEnrollBrowser runs `edgegw enroll --browser`: the user opens the
// printed URL on the same machine and the redirect comes back to it. The
// client gets the ID token itself, so only a gateway with
// require_gateway_grant off takes it.
func TestCmdEnrollBrowser(t *testing.T) {
	gw, op, reg, caFile := enrollGatewayWith(t, true)
	out := filepath.Join(t.TempDir(), "wg-corp.conf")
	pr, pw := io.Pipe()
	done := make(chan error, 1)
	go func() {
		err := cmdEnroll([]string{gw.URL, "--browser", "--name", "desk", "--out", out, "--ca-file", caFile}, io.Discard, pw)
		pw.CloseWithError(errors.New("enroll returned"))
		done <- err
	}()
	sc := bufio.NewScanner(pr)
	for sc.Scan() {
		u, ok := strings.CutPrefix(sc.Text(), "    ")
		if !ok || !strings.HasPrefix(u, op.Issuer) {
			continue
		}
		jar, _ := cookiejar.New(nil)
		b := &http.Client{Jar: jar, Timeout: 10 * time.Second}
		r, err := b.Get(u)
		if err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
		form := url.Values{"id": {r.Request.URL.Query().Get("authRequestID")}, "username": {op.Username()}, "password": {enrolltest.Password}}
		if r, err = b.PostForm(op.Issuer+"/login/username", form); err != nil {
			t.Fatal(err)
		}
		r.Body.Close()
	}
	if err := <-done; err != nil {
		t.Fatal(err)
	}
	devs, _ := reg.List(t.Context())
	if len(devs) != 1 || devs[0].Name != "desk" {
		t.Fatalf("registry: %+v", devs)
	}
	if _, err := os.Stat(out); err != nil {
		t.Fatal(err)
	}
}
