package wireguard

import (
	"crypto/ecdh"
	"crypto/hmac"
	"crypto/subtle"
	"encoding/binary"
	"hash"

	"golang.org/x/crypto/blake2s"
	"golang.org/x/crypto/chacha20poly1305"
	"golang.zx2c4.com/wireguard/device"
)

// responder reads, from a handshake initiation, who sent it: the first
// step of the responder's side of Noise_IKpsk2 (the whitepaper, 5.4.2),
// which decrypts the initiator's static public key. It authenticates
// nothing: wireguard-go repeats the whole handshake afterwards, and an
// initiation that does not complete there gets no answer. edgegw needs
// only the key, to create an on-demand peer before wireguard-go looks for
// it. An initiation whose static key is unknown fails there, since no
// peer has that key.
//
// Under load it also hands out and checks WireGuard's cookies (mac2),
// with wireguard-go's own CookieChecker but a secret of its own.
type responder struct {
	priv    *ecdh.PrivateKey
	hash0   [blake2s.Size]byte // HASH(HASH(HASH(construction) || identifier) || S_pub)
	mac1Key [blake2s.Size]byte // HASH(label_mac1 || S_pub)
	cookies device.CookieChecker
}

var (
	// initialChainKey is HASH(construction) and initialHash is
	// HASH(initialChainKey || identifier), as in the whitepaper.
	initialChainKey = blake2s.Sum256([]byte("Noise_IKpsk2_25519_ChaChaPoly_BLAKE2s"))
	initialHash     = blake2s.Sum256(append(initialChainKey[:], "WireGuard v1 zx2c4 Jason@zx2c4.com"...))
)

// Offsets in a handshake initiation: type and reserved (4), sender index
// (4), unencrypted ephemeral (32), encrypted static (32 + 16), encrypted
// timestamp (12 + 16), mac1 (16), mac2 (16).
const (
	offEphemeral = 8
	offStatic    = offEphemeral + 32
	offMAC1      = offStatic + 48 + 28
)

func newResponder(priv Key) (*responder, error) {
	k, err := ecdh.X25519().NewPrivateKey(priv[:])
	if err != nil {
		return nil, err
	}
	pub := k.PublicKey().Bytes()
	r := &responder{priv: k}
	r.hash0 = blake2s.Sum256(append(initialHash[:], pub...))
	r.mac1Key = blake2s.Sum256(append([]byte("mac1----"), pub...))
	r.cookies.Init(device.NoisePublicKey(pub))
	return r, nil
}

// validMAC2 reports whether msg, a 148-byte initiation, carries a mac2
// made with the cookie this responder gives src (the sender's address
// and port, as conn.Endpoint.DstToBytes has them). Cookies last two
// minutes; a valid mac2 proves that the sender receives at src.
func (r *responder) validMAC2(msg, src []byte) bool {
	return r.cookies.CheckMAC2(msg, src)
}

// cookieReply returns the cookie reply (the whitepaper, 5.4.7) to
// initiation msg from src: the cookie for src, encrypted with a key
// derived from this responder's public key and msg's mac1 as additional
// data, so that only the sender of msg can read it. At 64 bytes it is
// smaller than the 148-byte initiation, so spoofed initiations cannot use
// the gateway to amplify.
func (r *responder) cookieReply(msg, src []byte) ([]byte, error) {
	reply, err := r.cookies.CreateReply(msg, binary.LittleEndian.Uint32(msg[4:]), src)
	if err != nil {
		return nil, err
	}
	b := make([]byte, sizeCookieReply)
	binary.LittleEndian.PutUint32(b, msgCookieReply)
	binary.LittleEndian.PutUint32(b[4:], reply.Receiver)
	copy(b[8:], reply.Nonce[:])
	copy(b[8+len(reply.Nonce):], reply.Cookie[:])
	return b, nil
}

// validMAC1 reports whether msg, a 148-byte initiation, carries a mac1 made
// for this responder's public key: only then is the Diffie-Hellman of
// initiator worth computing. Anyone who knows the gateway's public key can
// make one, so it filters junk, not attackers.
func (r *responder) validMAC1(msg []byte) bool {
	h, _ := blake2s.New128(r.mac1Key[:])
	h.Write(msg[:offMAC1])
	var sum [16]byte
	return subtle.ConstantTimeCompare(h.Sum(sum[:0]), msg[offMAC1:offMAC1+16]) == 1
}

// initiator returns the static public key that the sender of msg, a
// well-formed handshake initiation with a valid mac1, claims. It costs one
// X25519 multiplication (crypto/ecdh directly: x/crypto's ScalarMult would
// compute a public key it throws away as well).
func (r *responder) initiator(msg []byte) (Key, bool) {
	if len(msg) != sizeInitiation || binary.LittleEndian.Uint32(msg) != msgInitiation {
		return Key{}, false
	}
	eph := msg[offEphemeral : offEphemeral+32]
	epub, err := ecdh.X25519().NewPublicKey(eph)
	if err != nil {
		return Key{}, false
	}
	ss, err := r.priv.ECDH(epub) // fails for low-order points (all-zero result)
	if err != nil {
		return Key{}, false
	}
	h := blake2s.Sum256(append(r.hash0[:], eph...))
	var ck [blake2s.Size]byte
	kdf(initialChainKey[:], eph, &ck)
	var key [blake2s.Size]byte
	kdf(ck[:], ss, &ck, &key)
	aead, err := chacha20poly1305.New(key[:])
	if err != nil {
		return Key{}, false
	}
	var nonce [chacha20poly1305.NonceSize]byte
	var k Key
	if _, err := aead.Open(k[:0], nonce[:], msg[offStatic:offStatic+48], h[:]); err != nil {
		return Key{}, false
	}
	return k, true
}

// kdf is the whitepaper's KDF_n for n = len(out): HKDF with HMAC-BLAKE2s,
// key as the chaining key and input as the input keying material.
func kdf(key, input []byte, out ...*[blake2s.Size]byte) {
	var prk [blake2s.Size]byte
	hmacBlake2s(&prk, key, input)
	var prev []byte
	for i, o := range out {
		hmacBlake2s(o, prk[:], prev, []byte{byte(i + 1)})
		prev = o[:]
	}
}

func hmacBlake2s(sum *[blake2s.Size]byte, key []byte, in ...[]byte) {
	mac := hmac.New(func() hash.Hash { h, _ := blake2s.New256(nil); return h }, key)
	for _, b := range in {
		mac.Write(b)
	}
	mac.Sum(sum[:0])
}
