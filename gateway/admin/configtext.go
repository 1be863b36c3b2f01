package admin

import (
	"encoding/json"
	"fmt"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// The editor shows the configuration file as the operator wrote it
// (comments, order, lines), with secrets replaced in place, so that an
// error's line and column in what is shown are its line and column in
// the file. A file sent back with a secret still REDACTED gets the
// running file's secret from the same place.

// scalarFunc visits a scalar: its dotted path, the key it is the value
// of ("" in a sequence or at the top).
type scalarFunc func(n *yaml.Node, path, key string)

// walkScalars visits every scalar of a document.
func walkScalars(n *yaml.Node, path, key string, fn scalarFunc) {
	switch n.Kind {
	case yaml.DocumentNode:
		for _, c := range n.Content {
			walkScalars(c, path, key, fn)
		}
	case yaml.SequenceNode:
		// An item with a name is found by it, so that items moved or
		// inserted keep their own secrets.
		for i, c := range n.Content {
			walkScalars(c, path+"["+itemName(c, i)+"]", key, fn)
		}
	case yaml.MappingNode:
		for i := 0; i+1 < len(n.Content); i += 2 {
			k := n.Content[i].Value
			p := k
			if path != "" {
				p = path + "." + k
			}
			walkScalars(n.Content[i+1], p, k, fn)
		}
	case yaml.ScalarNode:
		fn(n, path, key)
	}
}

// itemName names a sequence item: "name=N" for a mapping with a
// one-line name, else its index.
func itemName(n *yaml.Node, i int) string {
	if n.Kind == yaml.MappingNode {
		for j := 0; j+1 < len(n.Content); j += 2 {
			if n.Content[j].Value == "name" && n.Content[j+1].Kind == yaml.ScalarNode && !strings.ContainsAny(n.Content[j+1].Value, "\n]") {
				return "name=" + n.Content[j+1].Value
			}
		}
	}
	return strconv.Itoa(i)
}

// redactedValue is what a scalar is shown as: false when it is shown as
// it is.
func redactedValue(key, v string) (string, bool) {
	if key != "" && secretKey.MatchString(key) && !strings.HasSuffix(strings.ToLower(key), "_file") && v != "" {
		return Redacted, true
	}
	return redactURL(v)
}

// shownAs is redactedValue of a scalar node; a boolean is never a secret
// (admin.metrics.token: true says whether a token is needed).
func shownAs(n *yaml.Node, key string) (string, bool) {
	if n.Tag == "!!bool" {
		return "", false
	}
	return redactedValue(key, n.Value)
}

// replacement is a scalar's token in the text and what replaces it.
type replacement struct {
	n    *yaml.Node
	with string
}

// token finds the extent of scalar n's token on its line (rune offsets
// into the line): plain, single- or double-quoted scalars on one line.
func token(line []rune, n *yaml.Node) (start, end int, err error) {
	start = n.Column - 1
	if n.Line <= 0 || start < 0 || start >= len(line) {
		return 0, 0, fmt.Errorf("line %d column %d: no such place", n.Line, n.Column)
	}
	switch n.Style {
	case 0, yaml.TaggedStyle:
		v := []rune(n.Value)
		if len(line)-start >= len(v) && string(line[start:start+len(v)]) == n.Value {
			return start, start + len(v), nil
		}
	case yaml.DoubleQuotedStyle:
		if line[start] == '"' {
			for i := start + 1; i < len(line); i++ {
				switch line[i] {
				case '\\':
					i++
				case '"':
					return start, i + 1, nil
				}
			}
		}
	case yaml.SingleQuotedStyle:
		if line[start] == '\'' {
			for i := start + 1; i < len(line); i++ {
				if line[i] == '\'' {
					if i+1 < len(line) && line[i+1] == '\'' {
						i++
						continue
					}
					return start, i + 1, nil
				}
			}
		}
	}
	return 0, 0, fmt.Errorf("line %d column %d: the value is not a one-line scalar", n.Line, n.Column)
}

// replaceTokens rewrites the scalars' tokens in text, line for line.
func replaceTokens(text []byte, reps []replacement) ([]byte, error) {
	if len(reps) == 0 {
		return text, nil
	}
	lines := strings.SplitAfter(string(text), "\n")
	// From the end of each line, so earlier columns stay where they are.
	slices.SortFunc(reps, func(a, b replacement) int {
		if a.n.Line != b.n.Line {
			return b.n.Line - a.n.Line
		}
		return b.n.Column - a.n.Column
	})
	for _, r := range reps {
		if r.n.Line > len(lines) {
			return nil, fmt.Errorf("line %d: past the end", r.n.Line)
		}
		line := []rune(lines[r.n.Line-1])
		s, e, err := token(line, r.n)
		if err != nil {
			return nil, err
		}
		lines[r.n.Line-1] = string(line[:s]) + r.with + string(line[e:])
	}
	return []byte(strings.Join(lines, "")), nil
}

// quoteScalar writes v as a YAML scalar: plain when that reads back as
// the same string, else double-quoted (a JSON string is one).
func quoteScalar(v string) string {
	var back string
	if yaml.Unmarshal([]byte("v: "+v), &struct {
		V *string `yaml:"v"`
	}{&back}) == nil && back == v && !strings.ContainsAny(v, "\n#'\"") && strings.TrimSpace(v) == v {
		return v
	}
	b, _ := json.Marshal(v)
	return string(b)
}

// redactSource returns the file's text with every secret replaced in
// place. A secret that is not a one-line scalar (a block scalar) cannot
// be replaced in place: then the whole file is re-written redacted, and
// lines may move.
func redactSource(data []byte) ([]byte, error) {
	var doc yaml.Node
	if err := yaml.Unmarshal(data, &doc); err != nil {
		return nil, fmt.Errorf("read the configuration to redact it: %w", err)
	}
	var reps []replacement
	walkScalars(&doc, "", "", func(n *yaml.Node, _, key string) {
		if v, ok := shownAs(n, key); ok {
			reps = append(reps, replacement{n, quoteScalar(v)})
		}
	})
	out, err := replaceTokens(data, reps)
	if err != nil {
		return redactYAML(data)
	}
	return out, nil
}

// unredact puts the running file's secrets back into a proposed file
// where it shows them REDACTED: a scalar the running file has at the same
// path, which redacts to what the proposal shows. A REDACTED with no such
// counterpart is a problem (never applied as the literal secret).
func unredact(shown, running []byte) ([]byte, []ConfigProblem) {
	if !strings.Contains(string(shown), Redacted) {
		return shown, nil
	}
	var doc, old yaml.Node
	if yaml.Unmarshal(shown, &doc) != nil {
		// The check reports the syntax error at its place.
		return shown, nil
	}
	// A path two secrets share (two items of one name) is ambiguous: "".
	secrets := map[string]*string{}
	if yaml.Unmarshal(running, &old) == nil {
		walkScalars(&old, "", "", func(n *yaml.Node, path, key string) {
			if v, ok := shownAs(n, key); ok {
				k := path + "\x00" + v
				if prev, seen := secrets[k]; seen && *prev != n.Value {
					secrets[k] = new(string)
					return
				}
				secrets[k] = &n.Value
			}
		})
	}
	var reps []replacement
	var probs []ConfigProblem
	walkScalars(&doc, "", "", func(n *yaml.Node, path, _ string) {
		if !strings.Contains(n.Value, Redacted) {
			return
		}
		v, ok := secrets[path+"\x00"+n.Value]
		if !ok || *v == "" {
			probs = append(probs, ConfigProblem{Line: n.Line, Column: n.Column, Field: path,
				Message: "shows a secret as " + Redacted + ", but the running configuration has no secret here to keep: type the secret itself"})
			return
		}
		reps = append(reps, replacement{n, quoteScalar(*v)})
	})
	if len(probs) > 0 {
		return shown, probs
	}
	out, err := replaceTokens(shown, reps)
	if err != nil {
		return shown, []ConfigProblem{{Message: "cannot put the running secrets back: " + err.Error() + "; type the secrets themselves"}}
	}
	return out, nil
}

// DiffLine is one line of a diff: Op " " (both), "-" (running only), "+"
// (proposed only), or "…" (unchanged lines left out). Old and New are the
// line numbers in each file (0: not in it).
type DiffLine struct {
	Op   string `json:"op"`
	Old  int    `json:"old,omitempty"`
	New  int    `json:"new,omitempty"`
	Text string `json:"text"`
}

// diffContext is how many unchanged lines a diff keeps around a change.
const diffContext = 3

// maxDiffCells bounds the LCS table of a diff (its middle part, after the
// common start and end are taken off).
const maxDiffCells = 4 << 20

// diffLines diffs two texts by line (a longest common subsequence),
// keeping diffContext lines around each change; changed reports whether
// they differ.
func diffLines(a, b string) ([]DiffLine, bool) {
	if a == b {
		return []DiffLine{}, false
	}
	x, y := splitLines(a), splitLines(b)
	pre := 0
	for pre < len(x) && pre < len(y) && x[pre] == y[pre] {
		pre++
	}
	suf := 0
	for suf < len(x)-pre && suf < len(y)-pre && x[len(x)-1-suf] == y[len(y)-1-suf] {
		suf++
	}
	mx, my := x[pre:len(x)-suf], y[pre:len(y)-suf]
	var all []DiffLine
	for i := range pre {
		all = append(all, DiffLine{Op: " ", Old: i + 1, New: i + 1, Text: x[i]})
	}
	if len(mx)*len(my) > maxDiffCells {
		for i, l := range mx {
			all = append(all, DiffLine{Op: "-", Old: pre + i + 1, Text: l})
		}
		for j, l := range my {
			all = append(all, DiffLine{Op: "+", New: pre + j + 1, Text: l})
		}
	} else {
		// lcs[i][j]: the LCS length of mx[i:] and my[j:].
		w := len(my) + 1
		lcs := make([]int32, (len(mx)+1)*w)
		for i := len(mx) - 1; i >= 0; i-- {
			for j := len(my) - 1; j >= 0; j-- {
				if mx[i] == my[j] {
					lcs[i*w+j] = lcs[(i+1)*w+j+1] + 1
				} else {
					lcs[i*w+j] = max(lcs[(i+1)*w+j], lcs[i*w+j+1])
				}
			}
		}
		i, j := 0, 0
		for i < len(mx) || j < len(my) {
			switch {
			case i < len(mx) && j < len(my) && mx[i] == my[j]:
				all = append(all, DiffLine{Op: " ", Old: pre + i + 1, New: pre + j + 1, Text: mx[i]})
				i++
				j++
			case i < len(mx) && (j == len(my) || lcs[(i+1)*w+j] >= lcs[i*w+j+1]):
				all = append(all, DiffLine{Op: "-", Old: pre + i + 1, Text: mx[i]})
				i++
			default:
				all = append(all, DiffLine{Op: "+", New: pre + j + 1, Text: my[j]})
				j++
			}
		}
	}
	for k := range suf {
		all = append(all, DiffLine{Op: " ", Old: len(x) - suf + k + 1, New: len(y) - suf + k + 1, Text: x[len(x)-suf+k]})
	}
	// Keep the changes and diffContext lines around each.
	keep := make([]bool, len(all))
	for k, l := range all {
		if l.Op != " " {
			for m := max(0, k-diffContext); m <= min(len(all)-1, k+diffContext); m++ {
				keep[m] = true
			}
		}
	}
	out := []DiffLine{}
	for k, l := range all {
		switch {
		case keep[k]:
			out = append(out, l)
		case len(out) == 0 || out[len(out)-1].Op != "…":
			out = append(out, DiffLine{Op: "…"})
		}
	}
	return out, true
}

func splitLines(s string) []string {
	s = strings.TrimSuffix(s, "\n")
	if s == "" {
		return nil
	}
	return strings.Split(s, "\n")
}
