package identity

import (
	"strings"
	"testing"
)

// TestStoreTLSValidation: a postgres store off this machine needs
// sslmode=verify-full unless store_tls says disable; local ones do not.
func TestStoreTLSValidation(t *testing.T) {
	for _, tt := range []struct {
		name, store, tls string
		field, msg       string // "" when valid
		warn             bool   // Open warns about an unverified connection
	}{
		{name: "sqlite", store: "sqlite"},
		{name: "loopback without TLS", store: "postgres://edgegw@127.0.0.1:5432/edgegw?sslmode=disable"},
		{name: "localhost", store: "postgres://edgegw@localhost/edgegw"},
		{name: "ipv6 loopback", store: "postgres://edgegw@[::1]:5432/edgegw"},
		{name: "unix socket via host=", store: "postgres://edgegw@db.example/edgegw?host=/run/postgresql", tls: ""},
		{name: "remote verify-full", store: "postgres://edgegw@db.example:5432/edgegw?sslmode=verify-full&sslrootcert=/etc/edgegw/db-ca.pem"},
		{name: "remote no sslmode", store: "postgres://edgegw:pw@db.example:5432/edgegw", field: "store", msg: "db.example is not on this machine and the URL has no sslmode"},
		{name: "remote require", store: "postgres://edgegw@10.0.0.5/edgegw?sslmode=require", field: "store", msg: "sslmode=require, which does not verify"},
		{name: "remote verify-ca", store: "postgresql://edgegw@db.example/edgegw?sslmode=verify-ca", field: "store", msg: "sslmode=verify-ca"},
		{name: "second fail-over host remote", store: "postgres://edgegw@127.0.0.1:5432,db.example:5432/edgegw", field: "store", msg: "db.example"},
		{name: "host= overrides to remote", store: "postgres://edgegw@localhost/edgegw?host=db.example", field: "store", msg: "db.example"},
		{name: "remote, TLS disabled on purpose", store: "postgres://edgegw@db.example/edgegw?sslmode=disable", tls: "disable", warn: true},
		{name: "remote require, TLS disabled on purpose", store: "postgres://edgegw@db.example/edgegw?sslmode=require", tls: "disable", warn: true},
		{name: "explicit verify-full setting still needs the URL", store: "postgres://edgegw@db.example/edgegw", tls: "verify-full", field: "store", msg: "sslmode=verify-full"},
		{name: "unknown store_tls", store: "sqlite", tls: "off", field: "store_tls", msg: `"off" is not verify-full or disable`},
	} {
		t.Run(tt.name, func(t *testing.T) {
			c := Config{Store: tt.store, StoreTLS: tt.tls}
			c.SetDefaults()
			var got []string
			c.Validate(func(field, msg string) { got = append(got, field+": "+msg) })
			switch {
			case tt.field == "" && len(got) != 0:
				t.Fatalf("refused: %q", got)
			case tt.field != "" && (len(got) != 1 || !strings.HasPrefix(got[0], tt.field+": ") || !strings.Contains(got[0], tt.msg)):
				t.Fatalf("got %q, want %s: …%s…", got, tt.field, tt.msg)
			}
			for _, g := range got {
				if strings.Contains(g, "pw@") {
					t.Fatalf("the password is in the message: %s", g)
				}
			}
			if w := StoreUnverified(tt.store) != ""; w != (tt.warn || (tt.field == "store")) {
				t.Fatalf("StoreUnverified = %v", w)
			}
		})
	}
}
