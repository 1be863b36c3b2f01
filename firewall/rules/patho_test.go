package rules

import (
	"strings"
	"testing"
	"time"
)

// TestPathological checks that hostile input is rejected or compiled in
// bounded time and with a bounded number of errors.
func TestPathological(t *testing.T) {
	for name, src := range map[string]string{
		"deep parens": strings.Repeat("(", 100000) + "tcp.flags.syn" + strings.Repeat(")", 100000),
		"deep not":    strings.Repeat("not ", 100000) + "tcp.flags.syn",
		"long chain":  strings.Repeat("tcp.flags.syn and ", 50000) + "tcp.flags.syn",
		"many errors": strings.Repeat("x == 1 and ", 50000) + "x",
		"long name":   strings.Repeat("a", 200000),
		"big set":     "tcp.dstport in {" + strings.Repeat("1 2..3 ", 50000) + "}",
		"long string": `ingress == "` + strings.Repeat(`\x00a`, 100000) + `"`,
	} {
		start := time.Now()
		p, err := Compile(src, FirewallSchema(), nil)
		if p != nil {
			_ = p.String()
			p.Eval(NewRecord(FirewallSchema()))
		}
		if d := time.Since(start); d > 10*time.Second { // generous: the test machine is shared
			t.Errorf("%s: took %v", name, d)
		}
		if err != nil {
			if el := err.(ErrorList); len(el) > maxErrors+1 {
				t.Errorf("%s: %d errors", name, len(el))
			}
		}
	}
}
