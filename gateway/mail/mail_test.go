package mail

import (
	"errors"
	"io"
	"net/textproto"
	"os"
	"path/filepath"
	"strings"
	"testing"
)

// TestStep: which failures another attempt may fix.
func TestStep(t *testing.T) {
	for _, c := range []struct {
		err   error
		retry bool
	}{
		{&textproto.Error{Code: 421, Msg: "service not available"}, true},
		{&textproto.Error{Code: 450, Msg: "mailbox busy"}, true},
		{&textproto.Error{Code: 454, Msg: "temporary authentication failure"}, true},
		{&textproto.Error{Code: 535, Msg: "authentication credentials invalid"}, false},
		{&textproto.Error{Code: 550, Msg: "no such user"}, false},
		{&textproto.Error{Code: 554, Msg: "transaction failed"}, false},
		{io.ErrUnexpectedEOF, true}, // the connection broke
	} {
		retry, err := step("RCPT TO", c.err)
		if retry != c.retry || !errors.Is(err, c.err) || !strings.HasPrefix(err.Error(), "RCPT TO: ") {
			t.Errorf("%v: retry %v, %v; want retry %v", c.err, retry, err, c.retry)
		}
	}
}

// TestLoadCA: a PEM bundle is read; a file without a certificate, or no
// file, is an error that names it.
func TestLoadCA(t *testing.T) {
	dir := t.TempDir()
	empty := filepath.Join(dir, "empty.pem")
	if err := os.WriteFile(empty, []byte("not a certificate\n"), 0o644); err != nil {
		t.Fatal(err)
	}
	if _, err := LoadCA(empty); err == nil || !strings.Contains(err.Error(), "empty.pem holds no PEM certificate") {
		t.Errorf("a file without a certificate: %v", err)
	}
	if _, err := LoadCA(filepath.Join(dir, "missing.pem")); !errors.Is(err, os.ErrNotExist) {
		t.Errorf("a missing file: %v", err)
	}
}

// TestSendRefusesBadServer: a server that is not host:port is refused
// before anything is dialled, for good.
func TestSendRefusesBadServer(t *testing.T) {
	r := Relay{Server: "smtp.corp.example"}
	if retry, err := r.Send(t.Context(), "a@b.example", []string{"c@d.example"}, nil); err == nil || retry {
		t.Errorf("retry %v, %v", retry, err)
	}
}
