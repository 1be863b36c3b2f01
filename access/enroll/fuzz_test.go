package enroll

import (
	"bytes"
	"encoding/base64"
	"strings"
	"testing"
	"unicode/utf8"
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
