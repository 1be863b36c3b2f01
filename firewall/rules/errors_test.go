package rules

import (
	"errors"
	"flag"
	"os"
	"strings"
	"testing"
)

var update = flag.Bool("update", false, "rewrite testdata golden files")

// TestErrorsGolden compiles each case of testdata/errors.golden and compares
// the error text. A case is
//
//	=== name
//	expression (any number of lines)
//	---
//	expected error text
//
// Run with -update to rewrite the expected texts.
func TestErrorsGolden(t *testing.T) {
	const file = "testdata/errors.golden"
	data, err := os.ReadFile(file)
	if err != nil {
		t.Fatal(err)
	}
	cases := parseGolden(t, string(data))
	lists := testLists(t)
	var out strings.Builder
	for _, c := range cases {
		got := "(no error)"
		if _, err := Compile(c.src, FirewallSchema(), lists); err != nil {
			got = err.Error()
			var el ErrorList
			if !errors.As(err, &el) || len(el) == 0 {
				t.Errorf("%s: error %T is not an ErrorList", c.name, err)
			}
			var one *Error
			if !errors.As(err, &one) || one.Line < 1 || one.Col < 1 {
				t.Errorf("%s: no *Error with a position in %v", c.name, err)
			}
		}
		if !*update && got != c.want {
			t.Errorf("%s: %q\n got:\n%s\nwant:\n%s", c.name, c.src, got, c.want)
		}
		out.WriteString("=== " + c.name + "\n" + c.src + "\n---\n" + got + "\n\n")
	}
	if *update {
		if err := os.WriteFile(file, []byte(strings.TrimSuffix(out.String(), "\n")), 0o644); err != nil {
			t.Fatal(err)
		}
	}
}

type goldenCase struct{ name, src, want string }

func parseGolden(t *testing.T, s string) []goldenCase {
	var cases []goldenCase
	for block := range strings.SplitSeq(s, "=== ") {
		if strings.TrimSpace(block) == "" {
			continue
		}
		name, rest, _ := strings.Cut(block, "\n")
		src, want, ok := strings.Cut("\n"+rest, "\n---\n")
		src = strings.TrimPrefix(src, "\n")
		if !ok {
			t.Fatalf("golden case %q: no --- line", name)
		}
		cases = append(cases, goldenCase{name, src, strings.TrimRight(want, "\n")})
	}
	return cases
}

func TestErrorRender(t *testing.T) {
	e := &Error{Line: 1, Col: 3, Msg: "boom", text: "\tx\x01y"}
	if got, want := e.Error(), "1:3: boom\n  \tx?y\n  \t ^"; got != want {
		t.Errorf("got %q, want %q", got, want)
	}
}
