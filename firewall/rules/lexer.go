package rules

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"unicode/utf8"
)

// Pos is a position in an expression's source.
type Pos struct {
	Offset int // byte offset, 0-based
	Line   int // 1-based
	Col    int // 1-based, in characters
}

type tokKind uint8

const (
	tokEOF    tokKind = iota
	tokError          // lexical error; text is the message
	tokIdent          // field name, keyword or constant name
	tokInt            // integer; val holds it
	tokIP             // address or CIDR; ip holds it
	tokString         // quoted string; text holds the decoded bytes
	tokList           // $name; text holds the name
	tokPunct          // operator or bracket; text holds it
)

type token struct {
	kind tokKind
	pos  Pos
	src  string // the token as written
	text string
	val  uint64
	ip   netip.Prefix
	cidr bool // tokIP written with a /length
}

// describe names the token for "expected …, got …" messages.
func (t token) describe() string {
	switch t.kind {
	case tokEOF:
		return "end of expression"
	case tokIdent:
		return strconv.Quote(t.src)
	case tokInt:
		return "integer " + t.src
	case tokIP:
		if t.cidr {
			return "CIDR " + t.src
		}
		return "IP address " + t.src
	case tokString:
		return "string " + quote(t.text)
	case tokList:
		return "list " + t.src
	}
	return strconv.Quote(t.src)
}

// punctuation, longest first.
var puncts = []string{
	"==", "!=", "<=", ">=", "&&", "||", "^^", "..",
	"<", ">", "&", "!", "(", ")", "{", "}", "~",
}

type lexer struct {
	src  string
	off  int
	line int
	col  int
}

// lex splits src into tokens. It stops at the first lexical error, which it
// returns as a tokError token before the final tokEOF.
func lex(src string) []token {
	lx := &lexer{src: src, line: 1, col: 1}
	var toks []token
	for {
		t := lx.next()
		toks = append(toks, t)
		if t.kind == tokError {
			toks = append(toks, token{kind: tokEOF, pos: t.pos})
		}
		if t.kind == tokEOF || t.kind == tokError {
			return toks
		}
	}
}

func (lx *lexer) pos() Pos { return Pos{Offset: lx.off, Line: lx.line, Col: lx.col} }

// advance moves past n bytes, which must end on a character boundary.
func (lx *lexer) advance(n int) {
	end := lx.off + n
	for lx.off < end {
		r, size := utf8.DecodeRuneInString(lx.src[lx.off:])
		lx.off += size
		if r == '\n' {
			lx.line++
			lx.col = 1
		} else {
			lx.col++
		}
	}
}

func isWordStart(c byte) bool {
	return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == ':'
}

func isWordByte(c byte) bool { return isWordStart(c) || c == '.' || c == '/' }

// wordLen returns the length of the word at s: word bytes, stopping before "..".
func wordLen(s string, isByte func(byte) bool) int {
	n := 0
	for n < len(s) && isByte(s[n]) {
		if s[n] == '.' && n+1 < len(s) && s[n+1] == '.' {
			break
		}
		n++
	}
	return n
}

func (lx *lexer) next() token {
	for lx.off < len(lx.src) {
		c := lx.src[lx.off]
		if c != ' ' && c != '\t' && c != '\n' && c != '\r' {
			break
		}
		lx.advance(1)
	}
	start := lx.pos()
	if lx.off >= len(lx.src) {
		return token{kind: tokEOF, pos: start}
	}
	rest := lx.src[lx.off:]
	errorf := func(format string, args ...any) token {
		return token{kind: tokError, pos: start, text: fmt.Sprintf(format, args...)}
	}
	switch c := rest[0]; {
	case c == '"':
		return lx.lexString(start)
	case c == '$':
		n := 1 + wordLen(rest[1:], func(c byte) bool {
			return c >= 'a' && c <= 'z' || c >= 'A' && c <= 'Z' || c >= '0' && c <= '9' || c == '_' || c == '.'
		})
		if n == 1 {
			return errorf("expected a list name after $")
		}
		lx.advance(n)
		return token{kind: tokList, pos: start, src: rest[:n], text: rest[1:n]}
	case isWordStart(c):
		n := wordLen(rest, isWordByte)
		lx.advance(n)
		return classify(rest[:n], start)
	}
	for _, p := range puncts {
		if strings.HasPrefix(rest, p) {
			lx.advance(len(p))
			return token{kind: tokPunct, pos: start, src: p, text: p}
		}
	}
	r, _ := utf8.DecodeRuneInString(rest)
	switch r {
	case '=':
		return errorf("unexpected =; use == to compare")
	case '|':
		return errorf("unexpected |; use || or or")
	case '^':
		return errorf("unexpected ^; use ^^ or xor")
	case '\'':
		return errorf("strings are written in double quotes")
	case utf8.RuneError:
		return errorf("invalid UTF-8 byte 0x%02x", rest[0])
	}
	return errorf("unexpected character %q", r)
}

// classify turns a word into an identifier, integer or IP token.
func classify(w string, pos Pos) token {
	t := token{pos: pos, src: w, text: w}
	bad := func(format string, args ...any) token {
		return token{kind: tokError, pos: pos, src: w, text: fmt.Sprintf(format, args...)}
	}
	switch {
	case strings.Contains(w, ":") || w[0] >= '0' && w[0] <= '9' && strings.ContainsAny(w, "./"):
		t.kind = tokIP
		var err error
		if strings.Contains(w, "/") {
			t.cidr = true
			t.ip, err = netip.ParsePrefix(w)
		} else {
			var a netip.Addr
			a, err = netip.ParseAddr(w)
			t.ip = netip.PrefixFrom(a, a.BitLen())
		}
		if err != nil {
			return bad("invalid IP address %q", w)
		}
		return t
	case w[0] >= '0' && w[0] <= '9':
		t.kind = tokInt
		digits, base := w, 10
		if len(w) > 2 && (w[:2] == "0x" || w[:2] == "0X") {
			digits, base = w[2:], 16
		}
		v, err := strconv.ParseUint(digits, base, 64)
		if err != nil {
			if ne, ok := err.(*strconv.NumError); ok && ne.Err == strconv.ErrRange {
				return bad("integer %s too large", w)
			}
			return bad("invalid number %q", w)
		}
		t.val = v
		return t
	}
	t.kind = tokIdent
	if strings.Contains(w, "/") || strings.HasSuffix(w, ".") || strings.Contains(w, "..") {
		return bad("invalid name %q", w)
	}
	return t
}

func (lx *lexer) lexString(start Pos) token {
	var b []byte
	i := lx.off + 1
	s := lx.src
	fail := func(at int, msg string) token {
		// Point at the offending character.
		lx.advance(at - lx.off)
		return token{kind: tokError, pos: lx.pos(), text: msg}
	}
	for {
		if i >= len(s) {
			return token{kind: tokError, pos: start, text: "unterminated string"}
		}
		c := s[i]
		switch {
		case c == '"':
			raw := s[lx.off : i+1]
			lx.advance(i + 1 - lx.off)
			return token{kind: tokString, pos: start, src: raw, text: string(b)}
		case c == '\n':
			return token{kind: tokError, pos: start, text: "newline in string"}
		case c == '\\':
			if i+1 >= len(s) {
				return token{kind: tokError, pos: start, text: "unterminated string"}
			}
			switch e := s[i+1]; e {
			case '"', '\\':
				b = append(b, e)
			case 'n':
				b = append(b, '\n')
			case 'r':
				b = append(b, '\r')
			case 't':
				b = append(b, '\t')
			case 'x':
				if i+3 < len(s) {
					if v, err := strconv.ParseUint(s[i+2:i+4], 16, 8); err == nil {
						b = append(b, byte(v))
						i += 4
						continue
					}
				}
				return fail(i, `\x needs two hex digits`)
			default:
				return fail(i, fmt.Sprintf("unknown escape \\%c; use \\\" \\\\ \\n \\r \\t or \\xHH", rune(e)))
			}
			i += 2
		default:
			b = append(b, c)
			i++
		}
	}
}

// quote writes s as a string literal the lexer reads back to s.
func quote(s string) string {
	var b strings.Builder
	b.WriteByte('"')
	for i := 0; i < len(s); {
		r, size := utf8.DecodeRuneInString(s[i:])
		switch {
		case r == '"' || r == '\\':
			b.WriteByte('\\')
			b.WriteByte(byte(r))
		case r == '\n':
			b.WriteString(`\n`)
		case r == '\r':
			b.WriteString(`\r`)
		case r == '\t':
			b.WriteString(`\t`)
		case r == utf8.RuneError && size == 1 || r < ' ' || r == 0x7f || r >= 0x80 && !strconv.IsPrint(r):
			for j := range size {
				fmt.Fprintf(&b, `\x%02x`, s[i+j])
			}
		default:
			b.WriteString(s[i : i+size])
		}
		i += size
	}
	b.WriteByte('"')
	return b.String()
}
