package enroll

import (
	"bytes"
	"encoding/base64"
	"encoding/json"
	"errors"
	"net/http"
	"net/netip"
	"net/url"
	"slices"
	"strings"
	"testing"
	"time"
	"unicode/utf8"

	"github.com/edgegw/edgegw/tunnel/wireguard"
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// FuzzParseRequest feeds arbitrary bodies to the enrollment API's parser:
// it must never panic, and whatever it accepts has a valid key, a clean
// name and a token.
func FuzzParseRequest(f *testing.F) {
	f.Add([]byte(`{"id_token":"a.b.c","public_key":"hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q=","name":"laptop"}`))
	f.Add([]byte(`{"id_token":"a","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","name":"x"}`))
	f.Add([]byte(`{"name":"\u0000"}`))
	f.Add([]byte(`{} {}`))
	f.Add([]byte(`[`))
	f.Fuzz(func(t *testing.T, body []byte) {
		req, pub, name, aerr := parseRequest(bytes.NewReader(body))
		if aerr != nil {
			if aerr.Code == "" || aerr.Message == "" || aerr.status < 400 {
				t.Fatalf("refusal without code, message or status: %+v", aerr)
			}
			return
		}
		if pub.IsZero() || req.IDToken == "" || name == "" || !utf8.ValidString(name) || strings.TrimSpace(name) != name {
			t.Fatalf("accepted %q: key %v name %q", body, pub, name)
		}
	})
}

// sealedTicket was sealed with the key of 32 sevens, for FuzzOpenSealed.
const sealedTicket = "NMPhdkosYrrhG-mNpHNvCcKuQJM2f6lzl99lqdTSpX6h-kd93sSf13JpM90injKl9HDxSEe418RP5F7wi3XxPXgBprNXODuJuqxU2HgnwX6YKwSls4dQsgkHtdrF9yZSxceck12vTdnbIubz5nsYKSgiEUbcvv10Z3h19ZJuze1Uf-cCm_o_EnG5y0E2dW9eHlNOFm7aOOdpfPq5lvWU"

// FuzzOpenSealed feeds arbitrary text where the browser returns a sealed
// login state or ticket: nothing but what the gateway sealed opens, and
// only for the purpose it was sealed for.
func FuzzOpenSealed(f *testing.F) {
	s, err := newSealer(bytes.Repeat([]byte{7}, 32))
	if err != nil {
		f.Fatal(err)
	}
	want, _ := base64.RawURLEncoding.DecodeString(sealedTicket)
	f.Add(sealedTicket)
	f.Add("")
	f.Add("AAAA")
	f.Fuzz(func(t *testing.T, text string) {
		var tk ticket
		if s.open(sealTicket, text, &tk) == nil {
			got, _ := base64.RawURLEncoding.DecodeString(text)
			if !bytes.Equal(got, want) || tk.ID != "x" {
				t.Fatalf("opened a value the sealer did not make: %q", text)
			}
		}
		if s.open(sealLogin, text, &loginState{}) == nil {
			t.Fatalf("%q opened as a login state", text)
		}
	})
}

// FuzzTokenNonce reads the nonce of whatever the provider returned as an
// ID token: it must never panic.
func FuzzTokenNonce(f *testing.F) {
	f.Add("eyJhbGciOiJub25lIn0.eyJub25jZSI6ImFiYyJ9.")
	f.Add("a.b.c")
	f.Add("..")
	f.Fuzz(func(t *testing.T, raw string) {
		n, err := tokenNonce(raw)
		if err == nil && strings.Count(raw, ".") != 2 {
			t.Fatalf("nonce %q from %q", n, raw)
		}
	})
}

// FuzzBrowserDevice feeds arbitrary bodies to the parser of what the
// enrollment page posts: never a panic, and what it accepts has a ticket,
// a usable key and a clean name.
func FuzzBrowserDevice(f *testing.F) {
	f.Add([]byte(`{"ticket":"abc","name":"phone","public_key":"hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q="}`))
	f.Add([]byte(`{"ticket":"","name":"x","public_key":""}`))
	f.Add([]byte(`{"ticket":"a","name":" \u202e ","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","extra":1}`))
	f.Add([]byte(`{"ticket":"a"}{"ticket":"b"}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		ticket, pub, name, aerr := parseBrowserDevice(bytes.NewReader(body))
		if aerr != nil {
			if aerr.Code == "" || aerr.Message == "" || aerr.status < 400 {
				t.Fatalf("refusal without code, message or status: %+v", aerr)
			}
			return
		}
		if ticket == "" || pub.IsZero() || name == "" || !utf8.ValidString(name) || strings.TrimSpace(name) != name {
			t.Fatalf("accepted %q: ticket %q key %v name %q", body, ticket, pub, name)
		}
	})
}

// FuzzDiscovery reads arbitrary discovery documents as the enroll client
// does: never a panic; what it accepts names an issuer, a client and an
// enroll endpoint.
func FuzzDiscovery(f *testing.F) {
	f.Add([]byte(`{"issuer":"https://sso.example","client_id":"cli","enroll_endpoint":"https://gw.example/api/v1/enroll","providers":[{"name":"a"}]}`))
	f.Add([]byte(`{"issuer":""}`))
	f.Add([]byte(`{"scopes":[1,2]}`))
	f.Fuzz(func(t *testing.T, body []byte) {
		d, err := parseDiscovery(bytes.NewReader(body))
		if err == nil && (d.Issuer == "" || d.ClientID == "" || d.EnrollEndpoint == "") {
			t.Fatalf("accepted %q", body)
		}
	})
}

// FuzzRegistration reads arbitrary gateway answers to a registration as
// the enroll client does. An accepted answer is for the device's key and
// turns into a wg-quick file with nothing but the keys edgegw writes: no
// answer can inject a PostUp or another section.
func FuzzRegistration(f *testing.F) {
	pub, err1 := wireguard.ParseKey("hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q=")
	gw, err2 := wireguard.ParseKey("GmJrYq4+p8H5Wm2wKQ2qv7Cq7m2xJQ9k3GmJrYq4+p8=")
	if err := errors.Join(err1, err2); err != nil {
		f.Fatal(err)
	}
	ok := Response{
		Device:    DeviceInfo{ID: "dev_1", Name: "laptop", PublicKey: pub, Address: netip.MustParseAddr("100.96.0.2")},
		Interface: InterfaceInfo{Addresses: []netip.Prefix{netip.MustParsePrefix("100.96.0.2/32")}, DNS: []netip.Addr{netip.MustParseAddr("100.96.0.1")}, MTU: 1420},
		Peer:      PeerInfo{PublicKey: gw, Endpoint: "gw.example:51820", AllowedIPs: []netip.Prefix{netip.MustParsePrefix("10.0.0.0/8")}, PersistentKeepalive: 25},
	}
	good, _ := json.Marshal(ok)
	if r, err := parseRegistration(200, "200 OK", good, pub); err != nil || wireguard.WriteClientConfig(&bytes.Buffer{}, r.ClientConfig(pub)) != nil {
		f.Fatalf("the seed answer is refused: %v", err)
	}
	f.Add(200, good)
	f.Add(200, bytes.Replace(good, []byte(`gw.example:51820`), []byte(`gw.example:51820\nPostUp = touch /tmp/pwned`), 1))
	f.Add(200, bytes.Replace(good, []byte(`"laptop"`), []byte(`"laptop\n[Peer]"`), 1))
	f.Add(401, []byte(`{"error":{"code":"invalid_token","message":"no"}}`))
	f.Add(500, []byte(`<html>`))
	f.Add(200, []byte(`{}`))
	allowed := []string{"#", "[Interface]", "[Peer]", "PrivateKey = ", "Address = ", "DNS = ", "MTU = ", "PublicKey = ", "Endpoint = ", "AllowedIPs = ", "PersistentKeepalive = "}
	f.Fuzz(func(t *testing.T, status int, body []byte) {
		r, err := parseRegistration(status, "test", body, pub)
		if err != nil {
			var re *RemoteError
			if errors.As(err, &re) && (re.Code == "" || re.Status == http.StatusOK) {
				t.Fatalf("remote error without a code: %+v", re)
			}
			return
		}
		if status != http.StatusOK || r.Device.PublicKey != pub {
			t.Fatalf("accepted status %d for key %v", status, r.Device.PublicKey)
		}
		var conf bytes.Buffer
		if wireguard.WriteClientConfig(&conf, r.ClientConfig(pub)) != nil {
			return // refused when writing: nothing reaches the disk
		}
		for _, line := range strings.Split(conf.String(), "\n") {
			if line == "" {
				continue
			}
			if !slices.ContainsFunc(allowed, func(p string) bool { return strings.HasPrefix(line, p) }) {
				t.Fatalf("the answer %q put the line %q into the client's file", body, line)
			}
		}
	})
}

// FuzzEnrollClaims reads arbitrary claim sets as the enrollment does and
// names the token for the one-use set: never a panic, the email only when
// not marked unverified, and the use key taken from the claims alone.
func FuzzEnrollClaims(f *testing.F) {
	f.Add([]byte(`{"email":"Bob@Zitadel.CH","email_verified":true,"groups":["staff"],"jti":"j1"}`))
	f.Add([]byte(`{"email":"x@y","email_verified":"false","nonce":"n","at_hash":"h"}`))
	f.Add([]byte(`{"groups":[[1],{"a":"b"},"ok"],"jti":7}`))
	f.Fuzz(func(t *testing.T, b []byte) {
		var claims map[string]any
		if json.Unmarshal(b, &claims) != nil {
			return
		}
		l := loginFromClaims(claims, "test-op", "groups", []string{"groups", "dept"})
		if l.Email != "" && (claims["email_verified"] == false || claims["email_verified"] == "false") {
			t.Fatalf("unverified email used: %s", b)
		}
		iat := time.Unix(1_700_000_000, 0)
		if tokenUseKey("iss", "sub", iat, claims) != tokenUseKey("iss", "sub", iat, claims) {
			t.Fatal("use key not deterministic")
		}
		if jti, _ := claims["jti"].(string); jti != "" && tokenUseKey("iss", "other-sub", iat, claims) != tokenUseKey("iss", "sub", iat, claims) {
			t.Fatal("a jti does not name the token by itself")
		}
	})
}

// FuzzParseListQuery feeds the device list's query string parser: it
// never panics, and what it accepts is within bounds.
func FuzzParseListQuery(f *testing.F) {
	for _, s := range []string{"", "q=alice&limit=50&offset=100", "status=revoked", "limit=0", "offset=-1", "limit=99999999999999999999", "q=%zz"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, raw string) {
		v, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		q, err := ParseListQuery(v)
		if err != nil {
			return
		}
		if q.Offset < 0 || q.Limit < 0 || q.Limit > MaxPage || len(q.Q) > 256 {
			t.Fatalf("%q accepted as %+v", raw, q)
		}
	})
}

// FuzzParseGrantRequest feeds arbitrary bodies to the parser of the
// gateway-started grant's start and poll requests: no panic, and what it
// accepts has a usable key and a clean name.
func FuzzParseGrantRequest(f *testing.F) {
	f.Add([]byte(`{"public_key":"hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q=","name":"laptop"}`))
	f.Add([]byte(`{"handle":"h","public_key":"hC4cM7hWkT4YpP9cWlH8G1SX0bE7PV0vq6Uu2nG1W3Q=","name":" x "}`))
	f.Add([]byte(`{"provider":"p","public_key":"AAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAAA=","name":"x"}`))
	f.Add([]byte(`{"handle":1}`))
	f.Add([]byte(`{} []`))
	f.Fuzz(func(t *testing.T, body []byte) {
		var sr StartRequest
		var pr PollRequest
		check := func(pub wgconf.Key, name string, aerr *apiError) {
			if aerr != nil {
				if aerr.Code == "" || aerr.Message == "" || aerr.status < 400 {
					t.Fatalf("refusal without code, message or status: %+v", aerr)
				}
				return
			}
			if pub.IsZero() || name == "" || !utf8.ValidString(name) || strings.TrimSpace(name) != name {
				t.Fatalf("accepted %q: key %v name %q", body, pub, name)
			}
		}
		check(parseGrantRequest(bytes.NewReader(body), &sr, &sr.PublicKey, &sr.Name))
		check(parseGrantRequest(bytes.NewReader(body), &pr, &pr.PublicKey, &pr.Name))
	})
}

// FuzzParseGrantAnswers feeds arbitrary gateway answers to the client's
// parsers of the grant start and of a pending poll: no panic, a start
// accepted only with the gateway's own approval page, a wait of 1 to 60 s.
func FuzzParseGrantAnswers(f *testing.F) {
	f.Add([]byte(`{"handle":"h","user_code":"ABCD-EFGH","verification_uri":"https://gw.test/enroll/approve?code=ABCD-EFGH","interval":5,"expires_in":300}`))
	f.Add([]byte(`{"handle":"h","user_code":"A","verification_uri":"https://evil.test/enroll/approve?code=A","interval":5,"expires_in":300}`))
	f.Add([]byte(`{"status":"authorization_pending","interval":5}`))
	f.Add([]byte(`{"status":"authorization_pending","interval":-7}`))
	f.Add([]byte(`null`))
	d := &Discovery{StartEndpoint: "https://gw.test" + PathStart}
	f.Fuzz(func(t *testing.T, b []byte) {
		if sr, err := parseStart(b, d); err == nil {
			if sr.Handle == "" || sr.UserCode == "" || !strings.HasPrefix(sr.VerificationURI, "https://gw.test"+PathApprove+"?") {
				t.Fatalf("accepted start %+v", sr)
			}
		}
		if wait, err := parsePending(b); err == nil && (wait < 1 || wait > 60) {
			t.Fatalf("wait %d", wait)
		}
	})
}
