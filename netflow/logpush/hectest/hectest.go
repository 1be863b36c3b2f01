// Package hectest is a Splunk HTTP Event Collector for tests: an HTTPS
// server on loopback that follows the HEC protocol closely enough to test
// a shipper against it, and keeps what it receives.
//
// It serves
//
//	POST /services/collector, /services/collector/event[/1.0]   concatenated JSON events
//	POST /services/collector/raw[/1.0]                          raw lines, metadata in the query
//	POST /services/collector/ack                                {"acks":[ids]} → {"acks":{"id":bool}}
//	GET  /services/collector/health[/1.0]                       {"text":"HEC is healthy","code":17}
//	POST /ndjson                                                any other Logpush-style HTTPS body
//
// Requests are checked in Splunk's order: the Authorization header
// ("Splunk <token>": missing → 401 code 2, malformed → 401 code 3, unknown
// → 403 code 4, disabled → 403 code 1), Content-Encoding (gzip or none,
// else 415), the channel (X-Splunk-Request-Channel or ?channel=; required
// with acks: missing → 400 code 10, not a GUID → 400 code 11), then the
// body (empty → 400 code 5, bad JSON → 400 code 6 with
// "invalid-event-number", no event → 12, blank event → 13, an index not in
// Config.Indexes → 7, nested fields → 15). A request with a bad event
// stores nothing. Success is {"text":"Success","code":0}, with "ackId"
// when acks are on; acks turn true Config.AckDelay after the batch arrived.
//
// Faults are scripted per request with [Server.Fault] (answered in order,
// one per ingest request) or for every request with [Server.SetDown].
package hectest

import (
	"bytes"
	"crypto/tls"
	"encoding/json"
	"encoding/pem"
	"io"
	"log"
	"net/http"
	"net/http/httptest"
	"net/url"
	"slices"
	"strconv"
	"strings"
	"sync"
	"time"

	"github.com/klauspost/compress/gzip"
)

// Config sets up a Server.
type Config struct {
	Tokens         []string      // accepted tokens; empty: any non-empty token
	DisabledTokens []string      // answered 403 code 1
	Indexes        []string      // allowed index names; empty: any
	Ack            bool          // indexer acknowledgement on (a channel is then required)
	AckDelay       time.Duration // how long a batch stays unacknowledged
	// CountOnly counts events without keeping or fully decoding them, for
	// benchmarks: concatenated events are only checked to be a sequence of
	// well-nested JSON objects.
	CountOnly bool
}

// Event is one received event.
type Event struct {
	Time       float64         `json:"time,omitempty"`
	Host       string          `json:"host,omitempty"`
	Source     string          `json:"source,omitempty"`
	Sourcetype string          `json:"sourcetype,omitempty"`
	Index      string          `json:"index,omitempty"`
	Fields     json.RawMessage `json:"fields,omitempty"`
	Event      json.RawMessage `json:"event"`
	Channel    string          `json:"-"`
	Endpoint   string          `json:"-"` // "event", "raw" or "ndjson"
}

// Fault is a scripted answer to one ingest request.
type Fault struct {
	Status     int           // answer with this HTTP status and the HEC body for Code
	Code       int           // HEC code of the body (see the Splunk table)
	RetryAfter string        // Retry-After header value
	Reset      bool          // close the connection without an answer
	Ingest     bool          // with Reset: store the events first (the answer is lost)
	Delay      time.Duration // wait this long first; alone, then answer normally
}

// Busy is HEC's 503 "Server is busy" (code 9).
func Busy() Fault { return Fault{Status: 503, Code: 9} }

// Internal is HEC's 500 "Internal server error" (code 8).
func Internal() Fault { return Fault{Status: 500, Code: 8} }

// TooMany is a 429 with a Retry-After header.
func TooMany(retryAfter string) Fault { return Fault{Status: 429, Code: -1, RetryAfter: retryAfter} }

// Reset drops the connection without answering.
func Reset() Fault { return Fault{Reset: true} }

// Slow answers normally after d.
func Slow(d time.Duration) Fault { return Fault{Delay: d} }

// Server is a running fake HEC.
type Server struct {
	cfg Config
	srv *httptest.Server

	mu       sync.Mutex
	events   []Event
	count    int
	faults   []Fault
	down     bool
	requests map[int]int // by HTTP status; 0 for connection resets
	nextAck  int64
	acks     map[int64]time.Time // ack id → when it turns true
	headers  http.Header         // of the last ingest request
}

// codeText is Splunk's HEC status table: code → (HTTP status, text).
var codeText = map[int]struct {
	status int
	text   string
}{
	0: {200, "Success"}, 1: {403, "Token disabled"}, 2: {401, "Token is required"},
	3: {401, "Invalid authorization"}, 4: {403, "Invalid token"}, 5: {400, "No data"},
	6: {400, "Invalid data format"}, 7: {400, "Incorrect index"}, 8: {500, "Internal server error"},
	9: {503, "Server is busy"}, 10: {400, "Data channel is missing"}, 11: {400, "Invalid data channel"},
	12: {400, "Event field is required"}, 13: {400, "Event field cannot be blank"},
	14: {400, "ACK is disabled"}, 15: {400, "Error in handling indexed fields"},
	16: {400, "Query string authorization is not enabled"}, 17: {200, "HEC is healthy"},
	18: {503, "HEC is unhealthy, queues are full"}, 19: {503, "HEC is unhealthy, ack service unavailable"},
	20: {503, "HEC is unhealthy, queues are full, ack service unavailable"},
	21: {400, "Invalid token"}, 22: {400, "Token disabled"},
}

// StatusOf returns the HTTP status and text of a HEC code.
func StatusOf(code int) (int, string) {
	c := codeText[code]
	return c.status, c.text
}

// New starts a server on 127.0.0.1 with a self-signed certificate. Close
// it when done.
func New(cfg Config) *Server {
	s := &Server{cfg: cfg, requests: map[int]int{}, acks: map[int64]time.Time{}}
	s.srv = httptest.NewUnstartedServer(http.HandlerFunc(s.serve))
	s.srv.Config.ErrorLog = log.New(io.Discard, "", 0) // TLS errors of cancelled clients
	s.srv.StartTLS()
	return s
}

// Close stops the server.
func (s *Server) Close() { s.srv.Close() }

// Addr is the server's host:port.
func (s *Server) Addr() string { return strings.TrimPrefix(s.srv.URL, "https://") }

// URL is https://host:port.
func (s *Server) URL() string { return s.srv.URL }

// SplunkURL returns a splunk:// destination for path (e.g.
// "/services/collector/event") with the given query, plus
// insecure-skip-verify=true unless the query sets it.
func (s *Server) SplunkURL(path string, q url.Values) string {
	q2 := url.Values{}
	for k, v := range q {
		q2[k] = v
	}
	if q2.Get("insecure-skip-verify") == "" {
		q2.Set("insecure-skip-verify", "true")
	}
	return "splunk://" + s.Addr() + path + "?" + q2.Encode()
}

// CAPEM returns the server certificate in PEM, for a ca_file.
func (s *Server) CAPEM() []byte {
	return pem.EncodeToMemory(&pem.Block{Type: "CERTIFICATE", Bytes: s.srv.Certificate().Raw})
}

// TLSConfig returns a client TLS configuration trusting the server.
func (s *Server) TLSConfig() *tls.Config {
	return s.srv.Client().Transport.(*http.Transport).TLSClientConfig
}

// Fault queues scripted answers for the next ingest requests.
func (s *Server) Fault(f ...Fault) {
	s.mu.Lock()
	s.faults = append(s.faults, f...)
	s.mu.Unlock()
}

// SetDown makes every request fail with a dropped connection (true) or
// serves normally again (false).
func (s *Server) SetDown(down bool) {
	s.mu.Lock()
	s.down = down
	s.mu.Unlock()
}

// Events returns a copy of the stored events in arrival order.
func (s *Server) Events() []Event {
	s.mu.Lock()
	defer s.mu.Unlock()
	return slices.Clone(s.events)
}

// Count returns how many events were accepted (also in CountOnly mode).
func (s *Server) Count() int {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.count
}

// Requests returns how many requests got each HTTP status (0: reset).
func (s *Server) Requests() map[int]int {
	s.mu.Lock()
	defer s.mu.Unlock()
	out := make(map[int]int, len(s.requests))
	for k, v := range s.requests {
		out[k] = v
	}
	return out
}

// LastHeaders returns the headers of the last ingest request.
func (s *Server) LastHeaders() http.Header {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.headers.Clone()
}

func (s *Server) reply(w http.ResponseWriter, code int, extra map[string]any) {
	c := codeText[code]
	body := map[string]any{"text": c.text, "code": code}
	for k, v := range extra {
		body[k] = v
	}
	s.answer(w, c.status, body)
}

func (s *Server) answer(w http.ResponseWriter, status int, body any) {
	s.mu.Lock()
	s.requests[status]++
	s.mu.Unlock()
	w.Header().Set("Content-Type", "application/json; charset=UTF-8")
	w.WriteHeader(status)
	json.NewEncoder(w).Encode(body)
}

func (s *Server) reset() {
	s.mu.Lock()
	s.requests[0]++
	s.mu.Unlock()
	panic(http.ErrAbortHandler) // net/http closes the connection
}

func (s *Server) serve(w http.ResponseWriter, r *http.Request) {
	s.mu.Lock()
	down := s.down
	s.mu.Unlock()
	if down {
		s.reset()
	}
	p := r.URL.Path
	switch {
	case p == "/services/collector/health" || p == "/services/collector/health/1.0":
		s.reply(w, 17, nil)
	case p == "/services/collector/ack":
		s.serveAck(w, r)
	case p == "/services/collector" || p == "/services/collector/event" || p == "/services/collector/event/1.0":
		s.serveIngest(w, r, "event")
	case p == "/services/collector/raw" || p == "/services/collector/raw/1.0":
		s.serveIngest(w, r, "raw")
	case p == "/ndjson":
		s.serveIngest(w, r, "ndjson")
	default:
		s.answer(w, 404, map[string]any{"text": "The requested URL was not found on this server.", "code": 404})
	}
}

// auth checks the Authorization header; ok false means answered.
func (s *Server) auth(w http.ResponseWriter, r *http.Request) bool {
	h := r.Header.Get("Authorization")
	if h == "" {
		if r.URL.Query().Has("token") {
			s.reply(w, 16, nil)
		} else {
			s.reply(w, 2, nil)
		}
		return false
	}
	tok, ok := strings.CutPrefix(h, "Splunk ")
	if !ok || tok == "" {
		s.reply(w, 3, nil)
		return false
	}
	if slices.Contains(s.cfg.DisabledTokens, tok) {
		s.reply(w, 1, nil)
		return false
	}
	if len(s.cfg.Tokens) > 0 && !slices.Contains(s.cfg.Tokens, tok) {
		s.reply(w, 4, nil)
		return false
	}
	return true
}

// channel checks the request channel; ok false means answered.
func (s *Server) channel(w http.ResponseWriter, r *http.Request) (string, bool) {
	ch := r.Header.Get("X-Splunk-Request-Channel")
	if ch == "" {
		ch = r.URL.Query().Get("channel")
	}
	if ch == "" {
		if s.cfg.Ack {
			s.reply(w, 10, nil)
			return "", false
		}
		return "", true
	}
	if !isGUID(ch) {
		s.reply(w, 11, nil)
		return "", false
	}
	return ch, true
}

// bufPool holds request buffers: a benchmark's receiver should not spend
// its time growing and clearing fresh megabyte buffers.
var (
	bufPool = sync.Pool{New: func() any { return new(bytes.Buffer) }}
	zrPool  sync.Pool // *gzip.Reader
)

func getBuf() *bytes.Buffer {
	b := bufPool.Get().(*bytes.Buffer)
	b.Reset()
	return b
}

func (s *Server) serveIngest(w http.ResponseWriter, r *http.Request, endpoint string) {
	if r.Method != http.MethodPost {
		s.answer(w, 405, map[string]any{"text": "Method Not Allowed", "code": 405})
		return
	}
	s.mu.Lock()
	var f *Fault
	if len(s.faults) > 0 {
		f = &s.faults[0]
		s.faults = s.faults[1:]
	}
	s.headers = r.Header.Clone()
	s.mu.Unlock()
	wireBuf := getBuf()
	defer bufPool.Put(wireBuf)
	if _, err := wireBuf.ReadFrom(r.Body); err != nil { // so that a client giving up cancels r.Context()
		return
	}
	wire := wireBuf.Bytes()
	if f != nil && f.Delay > 0 {
		select {
		case <-time.After(f.Delay):
		case <-r.Context().Done():
			return
		}
	}
	if f != nil && f.Reset && !f.Ingest {
		s.reset()
	}
	if f != nil && f.Status != 0 {
		if f.RetryAfter != "" {
			w.Header().Set("Retry-After", f.RetryAfter)
		}
		if _, known := codeText[f.Code]; known {
			body := map[string]any{"text": codeText[f.Code].text, "code": f.Code}
			s.answer(w, f.Status, body)
		} else {
			s.answer(w, f.Status, map[string]any{"text": http.StatusText(f.Status)})
		}
		return
	}
	if endpoint != "ndjson" && !s.auth(w, r) {
		return
	}
	var body io.Reader = bytes.NewReader(wire)
	switch r.Header.Get("Content-Encoding") {
	case "gzip":
		zr, _ := zrPool.Get().(*gzip.Reader)
		if zr == nil {
			zr = new(gzip.Reader)
		}
		if err := zr.Reset(body); err != nil {
			s.reply(w, 6, map[string]any{"invalid-event-number": 0})
			return
		}
		defer zrPool.Put(zr)
		body = zr
	case "", "identity":
	default:
		s.answer(w, 415, map[string]any{"text": "Unsupported Media Type", "code": 415})
		return
	}
	ch := ""
	if endpoint != "ndjson" {
		var ok bool
		if ch, ok = s.channel(w, r); !ok {
			return
		}
	}
	var data []byte
	var err error
	if s.cfg.CountOnly {
		// Nothing keeps the bytes: decompress into a reused buffer.
		dataBuf := getBuf()
		defer bufPool.Put(dataBuf)
		_, err = dataBuf.ReadFrom(body)
		data = dataBuf.Bytes()
	} else {
		data, err = io.ReadAll(body)
	}
	if err != nil {
		s.reply(w, 6, map[string]any{"invalid-event-number": 0})
		return
	}
	if len(bytes.TrimSpace(data)) == 0 {
		s.reply(w, 5, nil)
		return
	}
	var evs []Event
	n := 0
	switch {
	case endpoint == "event" && s.cfg.CountOnly:
		n, err = countObjects(data)
	case endpoint == "event":
		evs, n, err = s.decodeEvents(data)
	default:
		evs, n, err = s.decodeLines(data, r.URL.Query())
	}
	if err != nil {
		var he *hecError
		if e, ok := err.(*hecError); ok {
			he = e
		} else {
			he = &hecError{code: 6}
		}
		s.reply(w, he.code, map[string]any{"invalid-event-number": he.event})
		return
	}
	for i := range evs {
		evs[i].Channel, evs[i].Endpoint = ch, endpoint
	}
	s.mu.Lock()
	s.count += n
	if !s.cfg.CountOnly {
		s.events = append(s.events, evs...)
	}
	id := s.nextAck
	if s.cfg.Ack && endpoint != "ndjson" {
		s.nextAck++
		s.acks[id] = time.Now().Add(s.cfg.AckDelay)
	}
	s.mu.Unlock()
	if f != nil && f.Reset {
		s.reset() // ingested, but the answer is lost
	}
	if endpoint == "ndjson" {
		s.answer(w, 200, map[string]any{"text": "Success"})
		return
	}
	var extra map[string]any
	if s.cfg.Ack {
		extra = map[string]any{"ackId": id}
	}
	s.reply(w, 0, extra)
}

func (s *Server) serveAck(w http.ResponseWriter, r *http.Request) {
	if !s.auth(w, r) {
		return
	}
	if !s.cfg.Ack {
		s.reply(w, 14, nil)
		return
	}
	if _, ok := s.channel(w, r); !ok {
		return
	}
	var req struct {
		Acks []int64 `json:"acks"`
	}
	if err := json.NewDecoder(r.Body).Decode(&req); err != nil {
		s.reply(w, 6, nil)
		return
	}
	out := map[string]bool{}
	now := time.Now()
	s.mu.Lock()
	for _, id := range req.Acks {
		at, ok := s.acks[id]
		out[strconv.FormatInt(id, 10)] = ok && !now.Before(at)
	}
	s.mu.Unlock()
	s.answer(w, 200, map[string]any{"acks": out})
}
