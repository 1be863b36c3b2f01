package ipsec

import (
	"bytes"
	"errors"
	"fmt"
	"os"
	"unicode/utf8"
)

// MinPSKLength is the shortest pre-shared key accepted, in characters.
// IKEv2's PSK AUTH payload is a MAC keyed with the PSK over values an
// eavesdropper (or anyone who answers or starts one exchange) sees, so one
// captured handshake lets an attacker test guesses offline at full speed:
// a short or word-like key falls to a dictionary attack. Twenty random
// characters put that out of reach.
const MinPSKLength = 20

// ReadPSK reads the tunnel's pre-shared key. The key is the file's
// content without surrounding whitespace. A missing or empty file, one
// that other users can read, or a key shorter than MinPSKLength is an
// error naming the tunnel: a PSK anyone on the box can read authenticates
// anyone as the branch, and a short one can be guessed offline.
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
	if msg := pskTooShort(c.Name, c.PSKFile, b); msg != "" {
		return nil, errors.New(msg)
	}
	return b, nil
}

// CheckFiles checks what is in the files the tunnel names, for the
// configuration check (which has already reported a missing, unreadable or
// world-readable file, so those are skipped here): the pre-shared key must
// be at least MinPSKLength characters.
func (c *Config) CheckFiles(report func(field, msg string)) {
	if c.PSKFile == "" {
		return
	}
	b, err := os.ReadFile(c.PSKFile)
	if err != nil {
		return
	}
	b = bytes.TrimSpace(b)
	if len(b) == 0 {
		return
	}
	if msg := pskTooShort(c.Name, c.PSKFile, b); msg != "" {
		report("psk_file", msg)
	}
}

// pskTooShort says why psk is too short, or "" if it is long enough.
func pskTooShort(tunnelName, file string, psk []byte) string {
	n := utf8.RuneCount(psk)
	if n >= MinPSKLength {
		return ""
	}
	return fmt.Sprintf("tunnel %q: the pre-shared key in %s is %d characters long, the minimum is %d: "+
		"anyone who captures one IKEv2 exchange can guess a short key offline (dictionary attack on the PSK AUTH payload); "+
		"use at least %d random characters, e.g. from `openssl rand -base64 30`", tunnelName, file, n, MinPSKLength, MinPSKLength)
}
