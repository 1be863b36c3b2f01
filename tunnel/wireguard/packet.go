package wireguard

import "encoding/binary"

// WireGuard's message formats (the whitepaper, section 5.4). Every message
// starts with a little-endian 32-bit word: the type in the low byte and
// three reserved zero bytes.
const (
	msgInitiation  = 1
	msgResponse    = 2
	msgCookieReply = 3
	msgTransport   = 4

	sizeInitiation  = 148
	sizeResponse    = 92
	sizeCookieReply = 64
	// A transport message is a 16-byte header (type, receiver index,
	// counter) and at least the 16-byte Poly1305 tag: 32 bytes is an empty
	// keepalive.
	sizeTransportMin = 32
)

// wellFormed reports whether a UDP payload has the shape of a WireGuard
// message: a known type with its reserved bytes zero, the exact size of a
// handshake message, or at least an empty transport message. It looks at
// the length and the first four bytes only.
//
// Transport messages are deliberately not required to be a multiple of 16
// bytes long: senders pad the plaintext to 16 bytes only up to the MTU, so
// a full-sized packet from a peer whose MTU is not a multiple of 16 (such as
// the usual 1420) arrives unaligned, and wireguard-go accepts it.
func wellFormed(b []byte) bool {
	if len(b) < 4 {
		return false
	}
	switch binary.LittleEndian.Uint32(b) {
	case msgInitiation:
		return len(b) == sizeInitiation
	case msgResponse:
		return len(b) == sizeResponse
	case msgCookieReply:
		return len(b) == sizeCookieReply
	case msgTransport:
		return len(b) >= sizeTransportMin
	}
	return false
}
