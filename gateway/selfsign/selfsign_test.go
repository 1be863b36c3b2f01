package selfsign

import (
	"os"
	"path/filepath"
	"testing"
	"time"
)

// TestLoad: a certificate is made for the hosts (names and addresses),
// kept with its key 0600, loaded again while it covers the same hosts
// and is not about to expire, and made again when the hosts change or
// its end is within Renew; without a base nothing is kept.
func TestLoad(t *testing.T) {
	base := filepath.Join(t.TempDir(), "dns", "dot-selfsigned")
	now := time.Date(2026, 12, 7, 10, 0, 0, 0, time.UTC)
	hosts := []string{"dns.corp.example", "10.0.0.1"}
	c1, made, err := Load(base, "edgegw dns", hosts, now)
	if err != nil || !made {
		t.Fatalf("first: made %v, %v", made, err)
	}
	if c1.Leaf.Subject.CommonName != "edgegw dns" || !Covers(c1.Leaf, append(hosts, "localhost")) {
		t.Errorf("made %v for %v, IPs %v", c1.Leaf.DNSNames, hosts, c1.Leaf.IPAddresses)
	}
	if st, err := os.Stat(base + ".key"); err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("key file: %v %v", st.Mode(), err)
	}
	c2, made, err := Load(base, "edgegw dns", hosts, now.Add(24*time.Hour))
	if err != nil || made || c2.Leaf.SerialNumber.Cmp(c1.Leaf.SerialNumber) != 0 {
		t.Errorf("again: made %v, %v", made, err)
	}
	c3, made, err := Load(base, "edgegw dns", []string{"dns.corp.example", "10.0.0.2"}, now)
	if err != nil || !made || !Covers(c3.Leaf, []string{"10.0.0.2"}) {
		t.Errorf("another address: made %v, %v", made, err)
	}
	_, made, err = Load(base, "edgegw dns", []string{"dns.corp.example", "10.0.0.2"}, now.Add(Validity-Renew+time.Hour))
	if err != nil || !made {
		t.Errorf("near its end: made %v, %v", made, err)
	}
	if _, made, err := Load("", "edgegw dns", hosts, now); err != nil || !made {
		t.Errorf("without a base: made %v, %v", made, err)
	}
	if Covers(c1.Leaf, []string{"other.example"}) {
		t.Error("covers a name it does not hold")
	}
}
