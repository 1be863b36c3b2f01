package dns

import (
	"encoding/base64"
	"io"
	"net"
	"net/http"
	"net/netip"
	"strconv"

	mdns "github.com/miekg/dns"
)

// DoHClients says who may use a DNS-over-HTTPS handler.
type DoHClients int

const (
	// DoHAnyClient answers every client that reaches the listener.
	DoHAnyClient DoHClients = iota
	// DoHIdentifiedOnly answers only identified clients: enrolled
	// devices and WireGuard peers whose tunnel address the IdentitySource
	// knows, connected through the interface that owns it (the route back
	// to the address leaves through it, so only the tunnel's peer could
	// complete the TCP and TLS handshakes). A listener reachable from the
	// Internet is so no open resolver. Others get 403 Forbidden.
	DoHIdentifiedOnly
)

// DoHHandler returns an http.Handler serving DNS over HTTPS (RFC 8484):
// GET with ?dns=<base64url> and POST of application/dns-message. The
// owner mounts it at /dns-query on a TLS listener (the Access listener,
// with DoHIdentifiedOnly). The client's identity comes from the request's
// RemoteAddr (for a remote user, the tunnel address of their device) when
// the connection came through the interface that owns it.
// Answers carry Cache-Control max-age of their smallest TTL.
func (s *Server) DoHHandler(who DoHClients) http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) { s.serveDoH(w, r, who) })
}

func (s *Server) serveDoH(w http.ResponseWriter, r *http.Request, who DoHClients) {
	src, _ := netip.ParseAddrPort(r.RemoteAddr)
	src = netip.AddrPortFrom(src.Addr().Unmap(), src.Port())
	var dst netip.AddrPort
	if la, ok := r.Context().Value(http.LocalAddrContextKey).(net.Addr); ok {
		dst = addrPort(la)
	}
	if who == DoHIdentifiedOnly {
		if _, ok := s.identify(&query{proto: "https", src: src, dst: dst}); !ok {
			http.Error(w, "DNS over HTTPS is for enrolled devices", http.StatusForbidden)
			return
		}
	}
	var buf []byte
	var err error
	switch r.Method {
	case http.MethodGet:
		buf, err = base64.RawURLEncoding.DecodeString(r.URL.Query().Get("dns"))
	case http.MethodPost:
		if r.Header.Get("Content-Type") != "application/dns-message" {
			http.Error(w, "content type must be application/dns-message", http.StatusUnsupportedMediaType)
			return
		}
		buf, err = io.ReadAll(io.LimitReader(r.Body, mdns.MaxMsgSize+1))
	default:
		w.Header().Set("Allow", "GET, POST")
		http.Error(w, "method not allowed", http.StatusMethodNotAllowed)
		return
	}
	req := new(mdns.Msg)
	if err != nil || len(buf) > mdns.MaxMsgSize || req.Unpack(buf) != nil {
		http.Error(w, "malformed DNS message", http.StatusBadRequest)
		return
	}
	q := &query{req: req, proto: "https", src: src, dst: dst, start: s.now()}
	defer s.finished(q)
	out := s.answer(q)
	if out == nil {
		http.Error(w, "malformed DNS message", http.StatusBadRequest)
		return
	}
	b, err := out.Pack()
	if err != nil {
		http.Error(w, "cannot encode answer", http.StatusInternalServerError)
		return
	}
	ttl := uint32(0)
	for i, rr := range append(append([]mdns.RR{}, out.Answer...), out.Ns...) {
		if i == 0 || rr.Header().Ttl < ttl {
			ttl = rr.Header().Ttl
		}
	}
	w.Header().Set("Content-Type", "application/dns-message")
	w.Header().Set("Cache-Control", "max-age="+strconv.FormatUint(uint64(ttl), 10))
	w.Write(b)
	s.logQuery(q, out)
}
