package firewall

import (
	"strings"
	"testing"
)

func TestClampCompiles(t *testing.T) {
	p := Compile(Spec{Clamp: []Clamp{{Interface: "branch-nyc", MSS: 1436}}})
	got := p.String()
	for _, want := range []string{
		`chain mss {`,
		`meta l4proto tcp tcp flags & 6 == 2 oifname "branch-nyc" tcp option maxseg size > 1436 counter tcp option maxseg size set 1436`,
		`meta l4proto tcp tcp flags & 6 == 2 iifname "branch-nyc" tcp option maxseg size > 1436 counter tcp option maxseg size set 1436`,
	} {
		if !strings.Contains(got, want) {
			t.Errorf("program lacks %q:\n%s", want, got)
		}
	}
}
