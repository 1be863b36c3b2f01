package posture

import (
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net/http"

	"golang.org/x/crypto/curve25519"

	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"
)

// A report is authenticated by the device's WireGuard key, the credential
// enrollment gave it, never by the address it comes from: the client
// computes X25519(device private key, gateway public key), the gateway
// X25519(gateway private key, device public key); both get the same secret,
// which only the holders of either private key can compute. The MAC over
// the report's bytes is HMAC-SHA256 under a key derived from that secret
// and both public keys. This is the static-static part of WireGuard's own
// handshake: whoever can report for a device could also run its tunnel.
// Replays are refused by the report's time (newer than the last accepted
// report of the device, and near the gateway's clock).

// Header names of a report request.
const (
	HeaderDeviceKey = "Edgegw-Device-Key"  // the device's WireGuard public key, base64
	HeaderMAC       = "Edgegw-Posture-Mac" // base64 HMAC-SHA256 over the body
)

// macLabel separates this use of the X25519 secret from any other.
const macLabel = "edgegw posture report v1"

// ErrUnauthenticated wraps every reason a report's MAC is refused.
var ErrUnauthenticated = errors.New("posture report not authenticated")

// macKey derives the MAC key from the two keys' shared secret.
func macKey(priv, peerPub wgconf.Key, devicePub, gatewayPub wgconf.Key) ([]byte, error) {
	shared, err := curve25519.X25519(priv[:], peerPub[:])
	if err != nil {
		// A low-order public key: the secret would be all zeros, which
		// anyone can compute.
		return nil, fmt.Errorf("%w: %v", ErrUnauthenticated, err)
	}
	m := hmac.New(sha256.New, shared)
	m.Write([]byte(macLabel))
	m.Write(devicePub[:])
	m.Write(gatewayPub[:])
	return m.Sum(nil), nil
}

func mac(key, body []byte) []byte {
	m := hmac.New(sha256.New, key)
	m.Write(body)
	return m.Sum(nil)
}

// Sign sets the headers that authenticate body as the report of the
// device whose private key is devicePriv, for the gateway gatewayPub.
func Sign(h http.Header, body []byte, devicePriv, gatewayPub wgconf.Key) error {
	pub := devicePriv.PublicKey()
	k, err := macKey(devicePriv, gatewayPub, pub, gatewayPub)
	if err != nil {
		return err
	}
	h.Set(HeaderDeviceKey, pub.String())
	h.Set(HeaderMAC, base64.StdEncoding.EncodeToString(mac(k, body)))
	return nil
}

// DeviceKey reads the device's public key from the request's headers.
func DeviceKey(h http.Header) (wgconf.Key, error) {
	k, err := wgconf.ParseKey(h.Get(HeaderDeviceKey))
	if err != nil {
		return wgconf.Key{}, fmt.Errorf("%w: %s: %v", ErrUnauthenticated, HeaderDeviceKey, err)
	}
	return k, nil
}

// Verify checks that body was signed by the holder of devicePub's private
// key for the gateway whose private key is gatewayPriv.
func Verify(h http.Header, body []byte, devicePub, gatewayPriv wgconf.Key) error {
	got, err := base64.StdEncoding.DecodeString(h.Get(HeaderMAC))
	if err != nil || len(got) != sha256.Size {
		return fmt.Errorf("%w: %s is not base64 of %d bytes", ErrUnauthenticated, HeaderMAC, sha256.Size)
	}
	if devicePub.LowOrder() {
		return fmt.Errorf("%w: the device key is a low-order point", ErrUnauthenticated)
	}
	k, err := macKey(gatewayPriv, devicePub, devicePub, gatewayPriv.PublicKey())
	if err != nil {
		return err
	}
	if !hmac.Equal(got, mac(k, body)) {
		return fmt.Errorf("%w: the MAC does not match the device's key", ErrUnauthenticated)
	}
	return nil
}
