package store

import (
	"encoding/json"
	"fmt"
	"net/http"
	"net/netip"
	"net/url"
	"strconv"
	"strings"
	"time"
)

// Handler serves GET /api/v1/flows. Parameters (all optional):
//
//	from, to      RFC 3339 times or Unix seconds; default the last hour
//	group_by      comma-separated dimensions (exporter, source, src, dst,
//	              src_port, dst_port, protocol, tcp_flags, verdict, tunnel)
//	prefix_len4, prefix_len6  cut src/dst groups to these prefix lengths
//	top           the N largest groups
//	order_by      bits (default) or packets
//	step          a series per group at this step (Go duration, minutes)
//	exporter, src, dst           prefixes or addresses, comma-separated
//	src_port, dst_port, protocol, tcp_flags   numbers (protocol also tcp,
//	              udp, icmp, icmpv6), comma-separated
//	source, verdict, tunnel      names, comma-separated
//
// It answers a Result as JSON, or 400 with {"error": "..."}. Who may call
// it is the admin server's business.
func (s *Store) Handler() http.Handler {
	return http.HandlerFunc(func(w http.ResponseWriter, r *http.Request) {
		if r.Method != http.MethodGet && r.Method != http.MethodHead {
			w.Header().Set("Allow", "GET, HEAD")
			writeJSON(w, http.StatusMethodNotAllowed, map[string]string{"error": "method not allowed"})
			return
		}
		q, err := ParseQuery(r.URL.Query(), s.opts.Now())
		if err == nil {
			var res Result
			if res, err = s.Query(q); err == nil {
				writeJSON(w, http.StatusOK, res)
				return
			}
		}
		writeJSON(w, http.StatusBadRequest, map[string]string{"error": err.Error()})
	})
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	json.NewEncoder(w).Encode(v)
}

// ParseQuery reads /api/v1/flows parameters (see Handler); now is the
// default end of the range.
func ParseQuery(v url.Values, now time.Time) (Query, error) {
	q := Query{To: now, From: now.Add(-time.Hour)}
	var err error
	if s := v.Get("from"); s != "" {
		if q.From, err = parseTime(s); err != nil {
			return q, fmt.Errorf("from: %w", err)
		}
	}
	if s := v.Get("to"); s != "" {
		if q.To, err = parseTime(s); err != nil {
			return q, fmt.Errorf("to: %w", err)
		}
	}
	for _, d := range list(v, "group_by") {
		q.GroupBy = append(q.GroupBy, Dimension(d))
	}
	ints := map[string]*int{"prefix_len4": &q.PrefixLen4, "prefix_len6": &q.PrefixLen6, "top": &q.Top}
	for name, p := range ints {
		if s := v.Get(name); s != "" {
			if *p, err = strconv.Atoi(s); err != nil {
				return q, fmt.Errorf("%s %q: not a number", name, s)
			}
		}
	}
	q.OrderBy = Metric(v.Get("order_by"))
	if s := v.Get("step"); s != "" {
		if q.Step, err = time.ParseDuration(s); err != nil {
			return q, fmt.Errorf("step: %w", err)
		}
	}
	f := &q.Filter
	for name, p := range map[string]*[]netip.Prefix{"exporter": &f.Exporter, "src": &f.Src, "dst": &f.Dst} {
		for _, s := range list(v, name) {
			pr, err := parsePrefix(s)
			if err != nil {
				return q, fmt.Errorf("%s: %w", name, err)
			}
			*p = append(*p, pr)
		}
	}
	for name, p := range map[string]*[]uint16{"src_port": &f.SrcPort, "dst_port": &f.DstPort} {
		for _, s := range list(v, name) {
			n, err := strconv.ParseUint(s, 10, 16)
			if err != nil {
				return q, fmt.Errorf("%s %q: not a port", name, s)
			}
			*p = append(*p, uint16(n))
		}
	}
	protocols := map[string]uint8{"icmp": 1, "tcp": 6, "udp": 17, "gre": 47, "esp": 50, "icmpv6": 58, "sctp": 132}
	for _, s := range list(v, "protocol") {
		n, ok := protocols[strings.ToLower(s)]
		if !ok {
			x, err := strconv.ParseUint(s, 10, 8)
			if err != nil {
				return q, fmt.Errorf("protocol %q: a number from 0 to 255 or one of tcp, udp, icmp, icmpv6, gre, esp, sctp", s)
			}
			n = uint8(x)
		}
		f.Protocol = append(f.Protocol, n)
	}
	for _, s := range list(v, "tcp_flags") {
		x, err := strconv.ParseUint(s, 0, 8)
		if err != nil {
			return q, fmt.Errorf("tcp_flags %q: a number from 0 to 255", s)
		}
		f.TCPFlags = append(f.TCPFlags, uint8(x))
	}
	f.Source, f.Verdict, f.Tunnel = list(v, "source"), list(v, "verdict"), list(v, "tunnel")
	return q, nil
}

// list splits every value of a parameter at commas.
func list(v url.Values, name string) []string {
	var out []string
	for _, s := range v[name] {
		for _, e := range strings.Split(s, ",") {
			if e = strings.TrimSpace(e); e != "" {
				out = append(out, e)
			}
		}
	}
	return out
}

func parseTime(s string) (time.Time, error) {
	if n, err := strconv.ParseInt(s, 10, 64); err == nil {
		return time.Unix(n, 0), nil
	}
	t, err := time.Parse(time.RFC3339, s)
	if err != nil {
		return t, fmt.Errorf("%q is neither RFC 3339 nor Unix seconds", s)
	}
	return t, nil
}

func parsePrefix(s string) (netip.Prefix, error) {
	if strings.Contains(s, "/") {
		p, err := netip.ParsePrefix(s)
		if err != nil {
			return p, fmt.Errorf("%q: %w", s, err)
		}
		return p.Masked(), nil
	}
	a, err := netip.ParseAddr(s)
	if err != nil {
		return netip.Prefix{}, fmt.Errorf("%q: %w", s, err)
	}
	a = a.Unmap()
	return netip.PrefixFrom(a, a.BitLen()), nil
}
