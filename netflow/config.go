package netflow

import "fmt"

// Config is the `netflow:` section.
type Config struct {
	SampleRate int `yaml:"sample_rate"` // 1 in N packets; default 100
}

// SetDefaults applies the default sampling rate.
func (c *Config) SetDefaults() {
	if c.SampleRate == 0 {
		c.SampleRate = 100
	}
}

// Validate checks the rate.
func (c *Config) Validate(report func(field, msg string)) {
	if c.SampleRate < 1 || c.SampleRate > 1_000_000 {
		report("sample_rate", fmt.Sprintf("must be from 1 (every packet) to 1000000, got %d", c.SampleRate))
	}
}
