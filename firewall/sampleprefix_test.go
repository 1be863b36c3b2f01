package firewall

import (
	"errors"
	"testing"
)

// The sample prefix is written by the firewall and read by the flow
// sampler: both go through SampleVerdict, and every prefix the firewall
// writes reads back as itself.
func TestParseSamplePrefix(t *testing.T) {
	for _, tc := range []struct {
		in   string
		want SampleVerdict
		ok   bool
	}{
		{"ef/0/a", SampleVerdict{}, true},
		{"ef/3/b", SampleVerdict{Rule: 3, Dropped: true}, true},
		{"ef/120/a", SampleVerdict{Rule: 120}, true},
		{"ef/03/a", SampleVerdict{}, false},
		{"ef//a", SampleVerdict{}, false},
		{"ef/1/c", SampleVerdict{}, false},
		{"ef/1/ab", SampleVerdict{}, false},
		{"ef/-1/a", SampleVerdict{}, false},
		{"ef/1", SampleVerdict{}, false},
		{"xx/1/a", SampleVerdict{}, false},
		{"ef/1234567/a", SampleVerdict{}, false},
	} {
		got, err := ParseSamplePrefix(tc.in)
		if (err == nil) != tc.ok || got != tc.want {
			t.Errorf("ParseSamplePrefix(%q) = %+v, %v", tc.in, got, err)
		}
		if !tc.ok && !errors.Is(err, ErrNotSample) {
			t.Errorf("ParseSamplePrefix(%q): error %v, want ErrNotSample", tc.in, err)
		}
	}
	for _, n := range []int{0, 1, 9, 10, 99999} {
		for _, passed := range []bool{true, false} {
			p := SamplePrefix(n, passed)
			v, err := ParseSamplePrefix(p)
			if err != nil || v != (SampleVerdict{Rule: n, Dropped: !passed}) {
				t.Errorf("SamplePrefix(%d, %t) = %q reads back as %+v, %v", n, passed, p, v, err)
			}
		}
	}
}

// FuzzParseSamplePrefix: prefixes arrive from the kernel with every
// sample, and another program may log to the same group.
func FuzzParseSamplePrefix(f *testing.F) {
	for _, s := range []string{"ef/0/a", "ef/12/b", "ef/03/a", "ef/1", "x"} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, err := ParseSamplePrefix(s)
		if err != nil {
			return
		}
		if v.Prefix() != s {
			t.Fatalf("%q parsed as %+v, which writes %q", s, v, v.Prefix())
		}
	})
}
