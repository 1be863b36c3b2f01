package ipsec

import (
	"bytes"
	"errors"
	"fmt"
	"os"
)

// ReadPSK reads the tunnel's pre-shared key. The key is the file's
// content without surrounding whitespace. A missing or empty file, or one
// that other users can read, is an error naming the tunnel: a PSK anyone
// on the box can read authenticates anyone as the branch.
func (c *Config) ReadPSK() ([]byte, error) {
	f, err := os.Open(c.PSKFile)
	if err != nil {
		if errors.Is(err, os.ErrNotExist) {
			return nil, fmt.Errorf("tunnel %q: psk_file %s does not exist", c.Name, c.PSKFile)
		}
		return nil, fmt.Errorf("tunnel %q: psk_file: %w", c.Name, err)
	}
	defer f.Close()
	fi, err := f.Stat()
	if err != nil {
		return nil, fmt.Errorf("tunnel %q: psk_file: %w", c.Name, err)
	}
	if !fi.Mode().IsRegular() {
		return nil, fmt.Errorf("tunnel %q: psk_file %s is not a regular file", c.Name, c.PSKFile)
	}
	if perm := fi.Mode().Perm(); perm&0o007 != 0 {
		return nil, fmt.Errorf("tunnel %q: psk_file %s is readable by other users (mode %04o); chmod o-rwx it", c.Name, c.PSKFile, perm)
	}
	b, err := os.ReadFile(c.PSKFile)
	if err != nil {
		return nil, fmt.Errorf("tunnel %q: psk_file: %w", c.Name, err)
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return nil, fmt.Errorf("tunnel %q: psk_file %s is empty", c.Name, c.PSKFile)
	}
	return b, nil
}
