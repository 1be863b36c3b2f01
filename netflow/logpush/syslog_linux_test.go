//go:build linux

package logpush

import (
	"crypto/ecdsa"
	"crypto/elliptic"
	"crypto/rand"
	"crypto/x509"
	"crypto/x509/pkix"
	"encoding/json"
	"encoding/pem"
	"fmt"
	"math/big"
	"net"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
)

// rsyslog is Debian's rsyslogd run in a namespace of its own with a
// configuration, work directory and pid file under the test's temporary
// directory, writing what it receives to out.log, one line per message:
// PRI|HOSTNAME|APP-NAME|MSGID|MSG.
type rsyslog struct {
	t    *testing.T
	ns   *netlab.NS
	dir  string
	conf string
	proc *netlab.Proc
}

// startRsyslog writes the configuration (TLS with imtcp and gtls, or
// plain TCP with imptcp, on 127.0.0.1:port in ns) and starts rsyslogd.
func startRsyslog(t *testing.T, ns *netlab.NS, tlsOn bool, port int, certs *testPKI) *rsyslog {
	return startRsyslogAuth(t, ns, tlsOn, port, certs, "anon")
}

// startRsyslogAuth is startRsyslog with the gtls authMode: anon, or
// x509/certvalid to demand a client certificate from the test CA.
func startRsyslogAuth(t *testing.T, ns *netlab.NS, tlsOn bool, port int, certs *testPKI, authMode string) *rsyslog {
	t.Helper()
	testkit.NeedTool(t, "rsyslogd", "rsyslog")
	dir := t.TempDir()
	if err := os.Mkdir(filepath.Join(dir, "work"), 0o700); err != nil {
		t.Fatal(err)
	}
	var input string
	global := fmt.Sprintf(`global(workDirectory="%s/work" maxMessageSize="256k"`, dir)
	if tlsOn {
		// The gtls driver is rsyslog-gnutls.
		if m, _ := filepath.Glob("/usr/lib/*/rsyslog/lmnsd_gtls.so"); len(m) == 0 {
			testkit.Unavailable(t, "rsyslog's gtls driver is not installed: apt-get install rsyslog-gnutls")
		}
		global += fmt.Sprintf(` defaultNetstreamDriverCAFile="%s" defaultNetstreamDriverCertFile="%s" defaultNetstreamDriverKeyFile="%s"`,
			certs.caFile, certs.certFile, certs.keyFile)
		input = fmt.Sprintf(`module(load="imtcp" streamDriver.name="gtls" streamDriver.mode="1" streamDriver.authMode="%s")
input(type="imtcp" address="127.0.0.1" port="%d")`, authMode, port)
	} else {
		input = fmt.Sprintf(`module(load="imptcp")
input(type="imptcp" address="127.0.0.1" port="%d")`, port)
	}
	conf := fmt.Sprintf(`%s)
%s
template(name="rec" type="list") {
  property(name="pri") constant(value="|")
  property(name="hostname") constant(value="|")
  property(name="app-name") constant(value="|")
  property(name="msgid") constant(value="|")
  property(name="msg") constant(value="\n")
}
action(type="omfile" file="%s/out.log" template="rec")
`, global, input, dir)
	r := &rsyslog{t: t, ns: ns, dir: dir, conf: filepath.Join(dir, "rsyslog.conf")}
	if err := os.WriteFile(r.conf, []byte(conf), 0o600); err != nil {
		t.Fatal(err)
	}
	r.start()
	return r
}

func (r *rsyslog) start() {
	r.t.Helper()
	cmd := r.ns.Command("rsyslogd", "-n", "-f", r.conf, "-i", filepath.Join(r.dir, "rsyslogd.pid"))
	p, err := r.ns.StartCmd(cmd)
	if err != nil {
		r.t.Fatal(err)
	}
	r.proc = p
	r.t.Cleanup(func() { p.Stop() })
}

// stop stops rsyslogd gracefully (SIGTERM): it writes out what it has
// queued, as on a service restart.
func (r *rsyslog) stop() {
	r.t.Helper()
	r.proc.Stop()
}

// syslogLine is one message as rsyslog parsed it.
type syslogLine struct {
	pri, host, app, msgID, msg string
}

// lines returns the messages rsyslog has written so far.
func (r *rsyslog) lines() []syslogLine {
	b, err := os.ReadFile(filepath.Join(r.dir, "out.log"))
	if err != nil {
		return nil
	}
	var out []syslogLine
	for _, l := range strings.Split(strings.TrimSuffix(string(b), "\n"), "\n") {
		f := strings.SplitN(l, "|", 5)
		if len(f) != 5 {
			continue
		}
		out = append(out, syslogLine{f[0], f[1], f[2], f[3], strings.TrimLeft(f[4], " ")})
	}
	return out
}

// waitLines waits until rsyslog has written n messages.
func (r *rsyslog) waitLines(n int) []syslogLine {
	r.t.Helper()
	testkit.Eventually(r.t, 30*time.Second, fmt.Sprintf("rsyslog to write %d messages", n), func() error {
		if got := len(r.lines()); got < n {
			return fmt.Errorf("%d messages so far; rsyslogd says: %s", got, r.proc.Output())
		}
		return nil
	})
	return r.lines()
}

// lineSeqs decodes each message's record and returns its sequence numbers.
func lineSeqs(t *testing.T, lines []syslogLine) []int64 {
	t.Helper()
	out := make([]int64, 0, len(lines))
	for _, l := range lines {
		var rec struct {
			PFPCustomTag *int64
			ColoCode     string
		}
		if err := json.Unmarshal([]byte(l.msg), &rec); err != nil || rec.PFPCustomTag == nil || rec.ColoCode != "ams" {
			t.Fatalf("message %q is not a record (%v)", l.msg, err)
		}
		out = append(out, *rec.PFPCustomTag)
	}
	return out
}

// checkInOrder fails unless seqs is exactly 0, 1, …, n-1.
func checkInOrder(t *testing.T, seqs []int64, n int) {
	t.Helper()
	if len(seqs) != n {
		t.Fatalf("%d records arrived, want %d", len(seqs), n)
	}
	for i, s := range seqs {
		if s != int64(i) {
			t.Fatalf("record %d is %d: lost, duplicated or out of order", i, s)
		}
	}
}

// syslogJob returns a job sending network_analytics_logs to dest, its
// connections made inside ns (where rsyslog listens).
func syslogJob(name, dest string) Job {
	return Job{Name: name, Dataset: "network_analytics_logs", Destination: dest,
		TimestampFormat: TimestampUnixNano, MaxUploadRecords: 1000, MaxUploadInterval: time.Second}
}

func dialIn(t *testing.T, m *Manager, name string, ns *netlab.NS) {
	t.Helper()
	d, ok := m.find(name).dest.(*syslogDest)
	if !ok {
		t.Fatalf("job %s has no syslog destination", name)
	}
	d.dial = ns.DialContext
}

// TestSyslogTLSToRsyslog sends three batches over RFC 5425 TLS to rsyslog
// (imtcp with the gtls driver, a test CA in ca_file): every record arrives
// once, in order, as an RFC 5424 message with the configured PRI,
// HOSTNAME, APP-NAME and MSGID and the record's JSON as MSG.
func TestSyslogTLSToRsyslog(t *testing.T) {
	testkit.NeedRoot(t)
	lab := netlab.NewT(t)
	ns, err := lab.NS("syslog")
	if err != nil {
		t.Fatal(err)
	}
	pki := newTestPKI(t)
	r := startRsyslog(t, ns, true, 6514, pki)

	j := syslogJob("siem", "syslog+tls://127.0.0.1?facility=local3&severity=notice&app-name=edgegw-test&msgid=flows")
	j.CAFile = pki.caFile
	m := newManager(t, []Job{j}, testOpts(t))
	dialIn(t, m, "siem", ns)
	run(t, m)
	pushN(m, 0, 2500)
	lines := r.waitLines(2500)
	checkInOrder(t, lineSeqs(t, lines), 2500)
	for _, l := range lines[:3] {
		if want := strconv.Itoa(19*8 + 5); l.pri != want || l.host != "gw-test" || l.app != "edgegw-test" || l.msgID != "flows" {
			t.Errorf("message header = %+v, want PRI %s, gw-test, edgegw-test, flows", l, want)
		}
	}
	testkit.Eventually(t, 10*time.Second, "status", func() error {
		if st := statusOf(m, "siem"); st.RecordsSent != 2500 || st.BatchesSent != 3 || st.State != "running" {
			return fmt.Errorf("status = %+v", st)
		}
		return nil
	})
}

// TestSyslogTLSRejectsUnknownCA: without the test CA the handshake fails,
// the batch stays spooled and is retried, nothing reaches rsyslog.
func TestSyslogTLSRejectsUnknownCA(t *testing.T) {
	testkit.NeedRoot(t)
	lab := netlab.NewT(t)
	ns, err := lab.NS("syslog")
	if err != nil {
		t.Fatal(err)
	}
	r := startRsyslog(t, ns, true, 6514, newTestPKI(t))
	j := syslogJob("siem", "syslog+tls://127.0.0.1:6514")
	j.CAFile = newTestPKI(t).caFile // another CA
	m := newManager(t, []Job{j}, testOpts(t))
	dialIn(t, m, "siem", ns)
	run(t, m)
	pushN(m, 0, 10)
	testkit.Eventually(t, 20*time.Second, "failed handshakes to be retried", func() error {
		st := statusOf(m, "siem")
		if st.Retries["transport"] < 2 || st.ErrorMessage == nil || !strings.Contains(*st.ErrorMessage, "certificate") {
			return fmt.Errorf("status = %+v (error %s)", st, derefStr(st.ErrorMessage))
		}
		return nil
	})
	if st := statusOf(m, "siem"); st.RecordsSent != 0 || st.SpooledBatches != 1 {
		t.Errorf("status = %+v", st)
	}
	if n := len(r.lines()); n != 0 {
		t.Errorf("rsyslog wrote %d messages from an unverified sender", n)
	}
}

// TestSyslogTCPRsyslogRestart sends over plain TCP (imptcp), stops rsyslog
// between batches and starts it again: the batches sent meanwhile stay in
// the spool and arrive, every record once and in order.
func TestSyslogTCPRsyslogRestart(t *testing.T) {
	testkit.NeedRoot(t)
	lab := netlab.NewT(t)
	ns, err := lab.NS("syslog")
	if err != nil {
		t.Fatal(err)
	}
	r := startRsyslog(t, ns, false, 1514, nil)
	m := newManager(t, []Job{syslogJob("siem", "syslog+tcp://127.0.0.1:1514")}, testOpts(t))
	dialIn(t, m, "siem", ns)
	run(t, m)

	pushN(m, 0, 1000)
	r.waitLines(1000)
	testkit.Eventually(t, 10*time.Second, "the first batch delivered", func() error {
		if st := statusOf(m, "siem"); st.RecordsSent != 1000 {
			return fmt.Errorf("status = %+v", st)
		}
		return nil
	})

	r.stop()
	pushN(m, 1000, 2000) // two batches while rsyslog is down
	testkit.Eventually(t, 20*time.Second, "refused sends to be retried", func() error {
		if st := statusOf(m, "siem"); st.Retries["transport"] < 2 || st.SpooledBatches < 1 {
			return fmt.Errorf("status = %+v", st)
		}
		return nil
	})
	if st := statusOf(m, "siem"); st.RecordsSent != 1000 {
		t.Fatalf("records counted as sent while rsyslog was down: %+v", st)
	}

	r.start()
	lines := r.waitLines(3000)
	checkInOrder(t, lineSeqs(t, lines), 3000)
	testkit.Eventually(t, 10*time.Second, "status", func() error {
		if st := statusOf(m, "siem"); st.RecordsSent != 3000 || st.SpooledBatches != 0 || st.Dropped != 0 {
			return fmt.Errorf("status = %+v", st)
		}
		return nil
	})
}

// TestSyslogMutualTLS: rsyslog demands a client certificate from the
// test CA (gtls x509/certvalid). With cert_file and key_file every record
// arrives; without them nothing does, and the batch stays spooled.
func TestSyslogMutualTLS(t *testing.T) {
	testkit.NeedRoot(t)
	lab := netlab.NewT(t)
	ns, err := lab.NS("syslog")
	if err != nil {
		t.Fatal(err)
	}
	pki := newTestPKI(t)
	r := startRsyslogAuth(t, ns, true, 6514, pki, "x509/certvalid")

	anon := syslogJob("anon", "syslog+tls://127.0.0.1")
	anon.CAFile = pki.caFile
	withCert := syslogJob("mtls", "syslog+tls://127.0.0.1")
	withCert.CAFile, withCert.CertFile, withCert.KeyFile = pki.caFile, pki.clientCert, pki.clientKey
	withCert.Filter = "pfpcustomtag >= 100" // the two jobs' records told apart
	anon.Filter = "pfpcustomtag < 100"
	m := newManager(t, []Job{anon, withCert}, testOpts(t))
	dialIn(t, m, "anon", ns)
	dialIn(t, m, "mtls", ns)
	run(t, m)
	pushN(m, 0, 1100)
	lines := r.waitLines(1000)
	seqs := lineSeqs(t, lines)
	for i := range seqs {
		seqs[i] -= 100
	}
	checkInOrder(t, seqs, 1000)
	testkit.Eventually(t, 20*time.Second, "the job without a certificate to be refused", func() error {
		if st := statusOf(m, "anon"); st.Retries["transport"] < 2 || st.RecordsSent != 0 || st.SpooledBatches != 1 {
			return fmt.Errorf("status = %+v (error %s)", st, derefStr(st.ErrorMessage))
		}
		return nil
	})
	t.Logf("refused: %s", derefStr(statusOf(m, "anon").ErrorMessage))
	if n := len(r.lines()); n != 1000 {
		t.Errorf("rsyslog wrote %d messages, want only the 1000 of the job with a certificate", n)
	}
}

// testPKI is a CA, a server certificate for 127.0.0.1 and a client
// certificate, as PEM files.
type testPKI struct {
	caFile, certFile, keyFile string
	clientCert, clientKey     string
}

func newTestPKI(t *testing.T) *testPKI {
	t.Helper()
	dir := t.TempDir()
	caKey, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
	now := time.Now()
	caTmpl := &x509.Certificate{SerialNumber: big.NewInt(1), Subject: pkix.Name{CommonName: "edgegw test CA"},
		NotBefore: now.Add(-time.Hour), NotAfter: now.Add(24 * time.Hour), IsCA: true, BasicConstraintsValid: true,
		KeyUsage: x509.KeyUsageCertSign | x509.KeyUsageDigitalSignature}
	caDER, err := x509.CreateCertificate(rand.Reader, caTmpl, caTmpl, &caKey.PublicKey, caKey)
	if err != nil {
		t.Fatal(err)
	}
	ca, _ := x509.ParseCertificate(caDER)
	issue := func(serial int64, tmpl *x509.Certificate) ([]byte, []byte) {
		key, _ := ecdsa.GenerateKey(elliptic.P256(), rand.Reader)
		tmpl.SerialNumber, tmpl.NotBefore, tmpl.NotAfter = big.NewInt(serial), now.Add(-time.Hour), now.Add(24*time.Hour)
		tmpl.KeyUsage = x509.KeyUsageDigitalSignature
		der, err := x509.CreateCertificate(rand.Reader, tmpl, ca, &key.PublicKey, caKey)
		if err != nil {
			t.Fatal(err)
		}
		keyDER, err := x509.MarshalPKCS8PrivateKey(key)
		if err != nil {
			t.Fatal(err)
		}
		return der, keyDER
	}
	der, keyDER := issue(2, &x509.Certificate{Subject: pkix.Name{CommonName: "syslog.test"}, DNSNames: []string{"syslog.test"},
		IPAddresses: []net.IP{net.IPv4(127, 0, 0, 1)}, ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageServerAuth}})
	cder, ckeyDER := issue(3, &x509.Certificate{Subject: pkix.Name{CommonName: "gw-test"}, DNSNames: []string{"gw-test"},
		ExtKeyUsage: []x509.ExtKeyUsage{x509.ExtKeyUsageClientAuth}})
	p := &testPKI{caFile: filepath.Join(dir, "ca.pem"), certFile: filepath.Join(dir, "cert.pem"), keyFile: filepath.Join(dir, "key.pem"),
		clientCert: filepath.Join(dir, "client.pem"), clientKey: filepath.Join(dir, "client-key.pem")}
	for _, f := range []struct {
		path, typ string
		der       []byte
	}{{p.caFile, "CERTIFICATE", caDER}, {p.certFile, "CERTIFICATE", der}, {p.keyFile, "PRIVATE KEY", keyDER},
		{p.clientCert, "CERTIFICATE", cder}, {p.clientKey, "PRIVATE KEY", ckeyDER}} {
		if err := os.WriteFile(f.path, pem.EncodeToMemory(&pem.Block{Type: f.typ, Bytes: f.der}), 0o600); err != nil {
			t.Fatal(err)
		}
	}
	return p
}
