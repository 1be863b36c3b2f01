package hectest

import (
	"bytes"
	"compress/gzip"
	"encoding/json"
	"io"
	"net/http"
	"strings"
	"testing"
	"time"
)

const (
	tok = "tok-1"
	ch  = "9a1c7b5e-3f2d-4c8e-b1a0-6d5f4e3c2b1a"
)

func post(t *testing.T, s *Server, path string, hdr map[string]string, body string) (int, map[string]any) {
	t.Helper()
	req, _ := http.NewRequest(http.MethodPost, s.URL()+path, strings.NewReader(body))
	for k, v := range hdr {
		req.Header.Set(k, v)
	}
	c := &http.Client{Transport: &http.Transport{TLSClientConfig: s.TLSConfig()}}
	defer c.CloseIdleConnections()
	resp, err := c.Do(req)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	var out map[string]any
	b, _ := io.ReadAll(resp.Body)
	json.Unmarshal(b, &out)
	return resp.StatusCode, out
}

func gz(s string) string {
	var b bytes.Buffer
	w := gzip.NewWriter(&b)
	w.Write([]byte(s))
	w.Close()
	return b.String()
}

func TestStatusCodes(t *testing.T) {
	s := New(Config{Tokens: []string{tok}, DisabledTokens: []string{"off"}, Indexes: []string{"main"}})
	defer s.Close()
	auth := map[string]string{"Authorization": "Splunk " + tok}
	ev := "/services/collector/event"
	tests := []struct {
		name   string
		path   string
		hdr    map[string]string
		body   string
		status int
		code   float64
	}{
		{"success", ev, auth, `{"event":{"a":1}}{"event":"x","time":1.5}`, 200, 0},
		{"whitespace between events", ev, auth, "{\"event\":1}\n {\"event\":2}", 200, 0},
		{"no token", ev, nil, `{"event":1}`, 401, 2},
		{"bad scheme", ev, map[string]string{"Authorization": "Bearer " + tok}, `{"event":1}`, 401, 3},
		{"unknown token", ev, map[string]string{"Authorization": "Splunk nope"}, `{"event":1}`, 403, 4},
		{"disabled token", ev, map[string]string{"Authorization": "Splunk off"}, `{"event":1}`, 403, 1},
		{"query token", ev + "?token=x", nil, `{"event":1}`, 400, 16},
		{"no data", ev, auth, ``, 400, 5},
		{"bad json", ev, auth, `{"event":1}{oops`, 400, 6},
		{"json array", ev, auth, `[{"event":1}]`, 400, 6},
		{"no event", ev, auth, `{"host":"h"}`, 400, 12},
		{"blank event", ev, auth, `{"event":""}`, 400, 13},
		{"bad index", ev, auth, `{"event":1,"index":"other"}`, 400, 7},
		{"nested fields", ev, auth, `{"event":1,"fields":{"a":{"b":1}}}`, 400, 15},
		{"bad channel", ev, map[string]string{"Authorization": "Splunk " + tok, "X-Splunk-Request-Channel": "abc"}, `{"event":1}`, 400, 11},
		{"ack disabled", "/services/collector/ack?channel=" + ch, auth, `{"acks":[0]}`, 400, 14},
		{"raw", "/services/collector/raw?sourcetype=s", auth, "line one\nline two\n", 200, 0},
	}
	for _, tt := range tests {
		status, body := post(t, s, tt.path, tt.hdr, tt.body)
		if status != tt.status || body["code"] != tt.code {
			t.Errorf("%s: got %d %v, want %d code %v", tt.name, status, body, tt.status, tt.code)
		}
		if wantStatus, text := StatusOf(int(tt.code)); body["text"] != text || wantStatus != tt.status {
			t.Errorf("%s: text %v, want %q", tt.name, body["text"], text)
		}
	}
	if n := s.Count(); n != 6 {
		t.Errorf("stored %d events, want 6", n)
	}
	if status, _ := post(t, s, ev, map[string]string{"Authorization": "Splunk " + tok, "Content-Encoding": "br"}, `x`); status != 415 {
		t.Errorf("unknown encoding: %d", status)
	}
	if status, _ := post(t, s, ev, map[string]string{"Authorization": "Splunk " + tok, "Content-Encoding": "gzip"}, gz(`{"event":"z"}`)); status != 200 {
		t.Errorf("gzip: %d", status)
	}
}

func TestAcks(t *testing.T) {
	// Long enough that the first ack query comes before it even on a
	// loaded machine; the loop below waits for it.
	s := New(Config{Ack: true, AckDelay: time.Second})
	defer s.Close()
	auth := map[string]string{"Authorization": "Splunk any"}
	if status, body := post(t, s, "/services/collector/event", auth, `{"event":1}`); status != 400 || body["code"] != 10.0 {
		t.Fatalf("no channel with acks: %d %v", status, body)
	}
	status, body := post(t, s, "/services/collector/event?channel="+ch, auth, `{"event":1}`)
	if status != 200 || body["ackId"] != 0.0 {
		t.Fatalf("ingest: %d %v", status, body)
	}
	_, body = post(t, s, "/services/collector/ack?channel="+ch, auth, `{"acks":[0,5]}`)
	if got := body["acks"].(map[string]any); got["0"] != false || got["5"] != false {
		t.Errorf("acks before the delay: %v", got)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		_, body = post(t, s, "/services/collector/ack?channel="+ch, auth, `{"acks":[0,5]}`)
		if got := body["acks"].(map[string]any); got["0"] == true && got["5"] == false {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("ack 0 never true: %v", body)
		}
		time.Sleep(10 * time.Millisecond)
	}
}

func TestFaultsAndCountObjects(t *testing.T) {
	s := New(Config{})
	defer s.Close()
	s.Fault(Busy(), TooMany("3"))
	auth := map[string]string{"Authorization": "Splunk a"}
	if status, body := post(t, s, "/services/collector/event", auth, `{"event":1}`); status != 503 || body["code"] != 9.0 {
		t.Errorf("busy: %d %v", status, body)
	}
	if status, _ := post(t, s, "/services/collector/event", auth, `{"event":1}`); status != 429 {
		t.Errorf("429: %d", status)
	}
	for in, want := range map[string]int{`{"event":{"a":"}{"}}{"event":[1,{}]}`: 2, " \n": 0, `{"a":"\"}"}`: 1, `{"a":"x\\"}{"b":"\\\"}"}`: 2} {
		if n, err := countObjects([]byte(in)); n != want || err != nil {
			t.Errorf("countObjects(%s) = %d, %v", in, n, err)
		}
	}
	for _, bad := range []string{`{`, `[1]`, `{"a":"}`, `x`, `{"a":"\\\"}`} {
		if _, err := countObjects([]byte(bad)); err == nil {
			t.Errorf("countObjects(%s) accepted", bad)
		}
	}
}
