package acmetest

import (
	"context"
	"crypto/rand"
	"encoding/base64"
	"fmt"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/miekg/dns"

	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// Knot is a private knotd, authoritative for one zone, that accepts DNS
// UPDATEs signed with one TSIG key: the primary dns-01 updates.
type Knot struct {
	Addr       string // host:port, UDP and TCP
	Zone       string // such as "example.test", no trailing dot
	KeyName    string
	Algorithm  string // hmac-sha256
	Secret     string // base64
	SecretFile string // Secret, in a file (0600)
	net        Net
}

// StartKnot runs knotd on 127.0.0.1 of n (nil: this process's namespace)
// with its own configuration, database and zone in a temporary
// directory, authoritative for zone; it is stopped when t ends.
func StartKnot(t testing.TB, n Net, zone string) *Knot {
	t.Helper()
	bin := testkit.NeedTool(t, "knotd", "knot")
	if n == nil {
		n = hostNet{}
	}
	dir := t.TempDir()
	raw := make([]byte, 32)
	rand.Read(raw)
	k := &Knot{Zone: zone, KeyName: "edgegw-acme", Algorithm: "hmac-sha256", Secret: base64.StdEncoding.EncodeToString(raw), net: n}
	k.SecretFile = filepath.Join(dir, "tsig.secret")
	port := FreePort(t, n)
	k.Addr = fmt.Sprintf("127.0.0.1:%d", port)
	zoneFile := fmt.Sprintf(`$ORIGIN %[1]s.
$TTL 60
@ SOA ns1.%[1]s. hostmaster.%[1]s. 1 3600 600 86400 60
@ NS ns1.%[1]s.
ns1 A 127.0.0.1
`, zone)
	conf := fmt.Sprintf(`server:
    rundir: %[1]s
    listen: 127.0.0.1@%[2]d
    udp-workers: 1
    tcp-workers: 1
    background-workers: 1
log:
  - target: stderr
    any: info
database:
    storage: %[1]s
control:
    listen: %[1]s/knot.sock
key:
  - id: %[3]s
    algorithm: %[4]s
    secret: %[5]s
acl:
  - id: acme
    key: %[3]s
    action: update
template:
  - id: default
    storage: %[1]s
    file: "%%s.zone"
    zonefile-sync: -1
    journal-content: changes
zone:
  - domain: %[6]s
    acl: acme
`, dir, port, k.KeyName, k.Algorithm, k.Secret, zone)
	for name, b := range map[string]string{
		filepath.Join(dir, zone+".zone"): zoneFile, filepath.Join(dir, "knot.conf"): conf, k.SecretFile: k.Secret + "\n",
	} {
		if err := os.WriteFile(name, []byte(b), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	cmd := n.Command(bin, "-c", filepath.Join(dir, "knot.conf"))
	out := &testkit.Buffer{}
	cmd.Stdout, cmd.Stderr = out, out
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() {
		cmd.Process.Kill()
		cmd.Wait()
		if t.Failed() {
			t.Logf("knotd:\n%s", out.String())
		}
	})
	testkit.Eventually(t, 20*time.Second, "knotd serves the zone", func() error {
		if _, err := k.Query(zone+".", dns.TypeSOA); err != nil {
			return fmt.Errorf("%w\nknotd:\n%s", err, out.String())
		}
		return nil
	})
	return k
}

// Query asks the Knot for name's records of type qtype, over TCP: the
// answer section of an authoritative NOERROR answer.
func (k *Knot) Query(name string, qtype uint16) ([]dns.RR, error) {
	m := new(dns.Msg)
	m.SetQuestion(dns.Fqdn(name), qtype)
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	raw, err := k.net.DialContext(ctx, "tcp", k.Addr)
	if err != nil {
		return nil, err
	}
	conn := &dns.Conn{Conn: raw}
	defer conn.Close()
	conn.SetDeadline(time.Now().Add(5 * time.Second))
	if err := conn.WriteMsg(m); err != nil {
		return nil, err
	}
	in, err := conn.ReadMsg()
	if err != nil {
		return nil, err
	}
	if in.Rcode != dns.RcodeSuccess && in.Rcode != dns.RcodeNameError {
		return nil, fmt.Errorf("%s %s: %s", name, dns.TypeToString[qtype], dns.RcodeToString[in.Rcode])
	}
	if !in.Authoritative {
		return nil, fmt.Errorf("%s %s: not an authoritative answer", name, dns.TypeToString[qtype])
	}
	return in.Answer, nil
}

// TXT is the data of name's TXT records, one string per record.
func (k *Knot) TXT(name string) ([]string, error) {
	rrs, err := k.Query(name, dns.TypeTXT)
	if err != nil {
		return nil, err
	}
	var out []string
	for _, rr := range rrs {
		if t, ok := rr.(*dns.TXT); ok {
			out = append(out, strings.Join(t.Txt, ""))
		}
	}
	return out, nil
}
