package store

import (
	"fmt"
	"time"
)

// Config is `netflow.analytics:`: the embedded store behind /api/v1/flows.
type Config struct {
	Retention time.Duration `yaml:"retention"` // default 168h (7 days)
	MaxBytes  int64         `yaml:"max_bytes"` // default 268435456 (256 MiB)
}

// SetDefaults fills the defaults.
func (c *Config) SetDefaults() {
	if c.Retention == 0 {
		c.Retention = DefaultRetention
	}
	if c.MaxBytes == 0 {
		c.MaxBytes = DefaultMaxBytes
	}
}

// Validate checks the section; field names are relative to it.
func (c *Config) Validate(report func(field, msg string)) {
	if c.Retention < time.Minute || c.Retention > 90*24*time.Hour {
		report("retention", fmt.Sprintf("must be from 1m to 2160h (90 days), got %v", c.Retention))
	}
	if c.MaxBytes < 1<<20 {
		report("max_bytes", fmt.Sprintf("must be at least 1048576 (1 MiB), got %d", c.MaxBytes))
	}
}

// Options returns the store options the section asks for.
func (c *Config) Options() Options { return Options{Retention: c.Retention, MaxBytes: c.MaxBytes} }
