package admin

import (
	"encoding/base64"
	"net"
	"net/http"
	"net/mail"
	"net/url"

	qrcode "github.com/skip2/go-qrcode"
)

// PathEnrollLink answers the link (and its QR code) a user enrolls a
// device with.
const PathEnrollLink = "/api/v1/enroll/link"

// EnrollLink answers GET /api/v1/enroll/link?user=EMAIL. The link is the
// same for every user: the user's own sign-in at the identity provider
// decides whose device enrolls; User only names who it is for.
type EnrollLink struct {
	User string `json:"user,omitempty"`
	// URL is the enrollment page on the Access listener: at
	// tunnels.wireguard.enrollment.url when set, else on the host name the
	// console was reached by (the admin listener checks it against
	// admin.hosts).
	URL string `json:"url"`
	// Command enrolls from a shell: `edgegw enroll URL`.
	Command string `json:"command"`
	// QR is URL as a QR code, a data: URL of a PNG, for a phone's camera.
	QR string `json:"qr"`
}

// enrollLink serves GET /api/v1/enroll/link.
func (s *Server) enrollLink(w http.ResponseWriter, r *http.Request) {
	port, ok := s.opts.EnrollPort()
	if !ok {
		writeError(w, http.StatusNotFound, "not_found", "Enrollment is off (tunnels.wireguard.enrollment.enabled).")
		return
	}
	user := r.URL.Query().Get("user")
	if user != "" {
		a, err := mail.ParseAddress(user)
		if err != nil || a.Address != user {
			writeError(w, http.StatusBadRequest, "bad_request", "user: expected an e-mail address, got "+user)
			return
		}
	}
	host := r.Host
	if h, _, err := net.SplitHostPort(r.Host); err == nil {
		host = h
	}
	if port != "443" {
		host = net.JoinHostPort(host, port)
	} else if ip := net.ParseIP(host); ip != nil && ip.To4() == nil {
		host = "[" + host + "]"
	}
	if s.opts.EnrollURL != nil {
		// The configured public address (validated: https, a host, no
		// path) wins over the host the admin reached the console by.
		if pu, err := url.Parse(s.opts.EnrollURL()); err == nil && pu.Host != "" {
			host = pu.Host
		}
	}
	u := (&url.URL{Scheme: "https", Host: host, Path: "/enroll"}).String()
	png, err := qrcode.Encode(u, qrcode.Medium, 256)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", "QR code: "+err.Error())
		return
	}
	writeJSON(w, http.StatusOK, EnrollLink{User: user, URL: u, Command: "edgegw enroll " + (&url.URL{Scheme: "https", Host: host}).String(),
		QR: "data:image/png;base64," + base64.StdEncoding.EncodeToString(png)})
}
