package hectest

import (
	"bytes"
	"encoding/json"
	"fmt"
	"net/url"
	"slices"
	"strings"
)

type hecError struct{ code, event int }

func (e *hecError) Error() string { return fmt.Sprintf("HEC code %d at event %d", e.code, e.event) }

// decodeEvents reads concatenated JSON event objects.
func (s *Server) decodeEvents(data []byte) ([]Event, int, error) {
	dec := json.NewDecoder(bytes.NewReader(data))
	var evs []Event
	n := 0
	for i := 0; dec.More(); i++ {
		var ev Event
		if err := dec.Decode(&ev); err != nil {
			return nil, 0, &hecError{code: 6, event: i}
		}
		switch t := bytes.TrimSpace(ev.Event); {
		case len(t) == 0 || string(t) == "null":
			return nil, 0, &hecError{code: 12, event: i}
		case string(t) == `""` || string(t) == "{}":
			return nil, 0, &hecError{code: 13, event: i}
		}
		if len(s.cfg.Indexes) > 0 && ev.Index != "" && !slices.Contains(s.cfg.Indexes, ev.Index) {
			return nil, 0, &hecError{code: 7, event: i}
		}
		if len(ev.Fields) > 0 {
			var flat map[string]any
			if json.Unmarshal(ev.Fields, &flat) != nil {
				return nil, 0, &hecError{code: 15, event: i}
			}
			for _, v := range flat {
				switch v.(type) {
				case map[string]any:
					return nil, 0, &hecError{code: 15, event: i}
				}
			}
		}
		n++
		if !s.cfg.CountOnly {
			evs = append(evs, ev)
		}
	}
	return evs, n, nil
}

// decodeLines reads raw or ndjson lines; each non-empty line is one event
// (kept as JSON if it is JSON, else as a JSON string).
func (s *Server) decodeLines(data []byte, q url.Values) ([]Event, int, error) {
	if ix := q.Get("index"); ix != "" && len(s.cfg.Indexes) > 0 && !slices.Contains(s.cfg.Indexes, ix) {
		return nil, 0, &hecError{code: 7}
	}
	var evs []Event
	n := 0
	for line := range bytes.SplitSeq(data, []byte{'\n'}) {
		if len(bytes.TrimSpace(line)) == 0 {
			continue
		}
		n++
		if s.cfg.CountOnly {
			continue
		}
		raw := json.RawMessage(slices.Clone(line))
		if !json.Valid(raw) {
			raw, _ = json.Marshal(string(line))
		}
		evs = append(evs, Event{Host: q.Get("host"), Source: q.Get("source"), Sourcetype: q.Get("sourcetype"), Index: q.Get("index"), Event: raw})
	}
	return evs, n, nil
}

func isGUID(s string) bool {
	if len(s) != 36 {
		return false
	}
	for i, c := range s {
		if i == 8 || i == 13 || i == 18 || i == 23 {
			if c != '-' {
				return false
			}
		} else if !strings.ContainsRune("0123456789abcdefABCDEF", c) {
			return false
		}
	}
	return true
}

// countObjects counts the top-level objects of concatenated JSON, checking
// nesting and strings but not the grammar inside objects.
func countObjects(data []byte) (int, error) {
	n, depth := 0, 0
	for i := 0; i < len(data); i++ {
		c := data[i]
		if depth == 0 {
			switch c {
			case ' ', '\t', '\r', '\n':
				continue
			case '{':
				depth = 1
				continue
			}
			return 0, &hecError{code: 6, event: n}
		}
		switch c {
		case '"':
			// Jump to the closing quote: the next one not escaped by an
			// odd run of backslashes.
			for {
				k := bytes.IndexByte(data[i+1:], '"')
				if k < 0 {
					return 0, &hecError{code: 6, event: n}
				}
				i += 1 + k
				bs := 0
				for data[i-1-bs] == '\\' {
					bs++
				}
				if bs%2 == 0 {
					break
				}
			}
		case '{', '[':
			depth++
		case '}', ']':
			depth--
			if depth == 0 {
				if c != '}' {
					return 0, &hecError{code: 6, event: n}
				}
				n++
			}
		}
	}
	if depth != 0 {
		return 0, &hecError{code: 6, event: n}
	}
	return n, nil
}
