package store

import (
	"testing"
	"time"
)

func TestConfig(t *testing.T) {
	for _, tc := range []struct {
		c    Config
		want string
	}{
		{Config{}, ""},
		{Config{Retention: 30 * time.Second}, "retention: must be from 1m to 2160h (90 days), got 30s"},
		{Config{Retention: 100 * 24 * time.Hour}, "retention: must be from 1m to 2160h (90 days), got 2400h0m0s"},
		{Config{MaxBytes: 1000}, "max_bytes: must be at least 1048576 (1 MiB), got 1000"},
	} {
		tc.c.SetDefaults()
		got := ""
		tc.c.Validate(func(f, msg string) { got = f + ": " + msg })
		if got != tc.want {
			t.Errorf("%+v: %q, want %q", tc.c, got, tc.want)
		}
	}
	c := Config{}
	c.SetDefaults()
	if o := c.Options(); o.Retention != DefaultRetention || o.MaxBytes != DefaultMaxBytes {
		t.Errorf("options %+v", o)
	}
}
