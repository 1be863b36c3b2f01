package image

import (
	"reflect"
	"testing"
)

func TestParseRun(t *testing.T) {
	out := `=== PACKAGE image-kerneltest
=== RUN   TestKernelGRE
--- PASS: TestKernelGRE (0.52s)
=== RUN   TestKernelESP
    kernel_test.go:10: the kernel has no ESP
--- SKIP: TestKernelESP (0.10s)
PASS
=== RESULT image-kerneltest exit=0 seconds=3
=== PACKAGE tunnel-gre
=== RUN   TestA
=== RUN   TestA/sub
    --- FAIL: TestA/sub (0.00s)
--- FAIL: TestA (0.01s)
FAIL
=== RESULT tunnel-gre exit=1 seconds=2
=== PACKAGE tunnel-wireguard
=== RUN   TestHang
`
	got := parseRun(out)
	if len(got) != 3 {
		t.Fatalf("%d results, want 3: %+v", len(got), got)
	}
	want := []struct {
		name                    string
		exit, secs              int
		passed, skipped, failed []string
	}{
		{"image-kerneltest", 0, 3, []string{"TestKernelGRE"}, []string{"TestKernelESP"}, nil},
		{"tunnel-gre", 1, 2, nil, nil, []string{"TestA"}},
		{"tunnel-wireguard", -1, 0, nil, nil, nil},
	}
	for i, w := range want {
		g := got[i]
		if g.Name != w.name || g.Exit != w.exit || g.Seconds != w.secs ||
			!reflect.DeepEqual(g.Passed, w.passed) || !reflect.DeepEqual(g.Skipped, w.skipped) || !reflect.DeepEqual(g.Failed, w.failed) {
			t.Errorf("result %d = %+v, want %+v", i, g, w)
		}
	}
	if r := got[0].SkipReason["TestKernelESP"]; r != "kernel_test.go:10: the kernel has no ESP" {
		t.Errorf("skip reason %q", r)
	}
}
