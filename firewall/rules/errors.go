package rules

import (
	"strconv"
	"strings"
	"unicode/utf8"
)

// Error is one syntax or type error in an expression.
type Error struct {
	Line int    // 1-based line
	Col  int    // 1-based column, counted in characters
	Msg  string // what is wrong and, where there is one, the fix

	text string // the source line, for the excerpt
}

// Error renders "line:col: msg" followed by the source line and a caret
// under the column, each indented by two spaces:
//
//	1:16: expected port number, got "abc"
//	  tcp.dstport == abc
//	                 ^
func (e *Error) Error() string {
	var b strings.Builder
	b.WriteString(strconv.Itoa(e.Line))
	b.WriteByte(':')
	b.WriteString(strconv.Itoa(e.Col))
	b.WriteString(": ")
	b.WriteString(e.Msg)
	if e.text == "" {
		return b.String()
	}
	b.WriteString("\n  ")
	b.WriteString(printable(e.text))
	b.WriteString("\n  ")
	// Reproduce tabs so the caret lines up whatever the tab width.
	col := 1
	for _, r := range printable(e.text) {
		if col >= e.Col {
			break
		}
		if r == '\t' {
			b.WriteByte('\t')
		} else {
			b.WriteByte(' ')
		}
		col++
	}
	b.WriteByte('^')
	return b.String()
}

// printable replaces invalid UTF-8 and control characters other than tab,
// one character each, so that columns stay true.
func printable(s string) string {
	ok := utf8.ValidString(s)
	for i := 0; ok && i < len(s); i++ {
		if s[i] < ' ' && s[i] != '\t' || s[i] == 0x7f {
			ok = false
		}
	}
	if ok {
		return s
	}
	var b strings.Builder
	for _, r := range s {
		if r == utf8.RuneError || r < ' ' && r != '\t' || r == 0x7f {
			r = '?'
		}
		b.WriteRune(r)
	}
	return b.String()
}

// ErrorList is every error found in one expression, in source order.
// [Compile] returns it as its error.
type ErrorList []*Error

// Error renders each error on its own lines.
func (l ErrorList) Error() string {
	parts := make([]string, len(l))
	for i, e := range l {
		parts[i] = e.Error()
	}
	return strings.Join(parts, "\n")
}

// Unwrap returns the errors, for errors.As.
func (l ErrorList) Unwrap() []error {
	errs := make([]error, len(l))
	for i, e := range l {
		errs[i] = e
	}
	return errs
}
