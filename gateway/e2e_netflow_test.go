package gateway_test

import (
	"bytes"
	"context"
	wire "encoding/binary"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"path/filepath"
	"regexp"
	"sort"
	"strconv"
	"strings"
	"sync"
	"sync/atomic"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/gateway/netlab"
	"github.com/edgegw/edgegw/gateway/netlab/testkit"
	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

// flowRecord is one network_analytics_logs record as Splunk received it.
// Numbers stay json.Number so that comparisons are exact.
type flowRecord map[string]any

func (r flowRecord) str(k string) string {
	switch v := r[k].(type) {
	case nil:
		return ""
	case string:
		return v
	case json.Number:
		return v.String()
	default:
		return fmt.Sprint(v)
	}
}

func (r flowRecord) num(k string) int64 {
	n, _ := r[k].(json.Number).Int64()
	return n
}

func (r flowRecord) String() string {
	keys := make([]string, 0, len(r))
	for k := range r {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	var b strings.Builder
	for _, k := range keys {
		fmt.Fprintf(&b, "%s=%s ", k, r.str(k))
	}
	return b.String()
}

// flowRecords decodes the events the receiver holds.
func flowRecords(t testing.TB, hec *hectest.Server) []flowRecord {
	t.Helper()
	evs := hec.Events()
	out := make([]flowRecord, 0, len(evs))
	for _, e := range evs {
		d := json.NewDecoder(bytes.NewReader(e.Event))
		d.UseNumber()
		var r flowRecord
		if err := d.Decode(&r); err != nil {
			t.Fatalf("event %s: %v", e.Event, err)
		}
		out = append(out, r)
	}
	return out
}

// hecInGateway starts a Splunk HEC receiver on the gateway's loopback and
// writes its token file.
func hecInGateway(t testing.TB, s *site) (*hectest.Server, string) {
	t.Helper()
	var hec *hectest.Server
	must(t, s.ra.GW.Do(func() error {
		hec = hectest.New(hectest.Config{Tokens: []string{"flow-token"}})
		return nil
	}))
	t.Cleanup(hec.Close)
	token := filepath.Join(s.dir, "hec-token")
	must(t, os.WriteFile(token, []byte("flow-token\n"), 0o600))
	return hec, token
}

// writeFlowConfig writes the gateway's configuration with the appliance
// naming the colo, sampling every packet, and body appended.
func (s *site) writeFlowConfig(body string) {
	cfg := fmt.Sprintf(`appliance:
  name: ams-office-1
  colo: AMS
  country: NL
  state_dir: %s/state
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  listen: 127.0.0.1:9100
  socket: %s
log:
  level: info
tunnels:
  wireguard:
    interface: %s
    listen_port: 51820
    address: 100.96.0.1/12%s
netflow:
  sample_rate: 1
%s`, s.dir, s.socket(), s.wgIf, peersYAML(s.peers), body)
	must(s.t, os.WriteFile(s.cfg, []byte(cfg), 0o600))
}

func peersYAML(peers []string) string {
	if len(peers) == 0 {
		return ""
	}
	return "\n    peers:" + strings.Join(peers, "")
}

// withTTL sets the IP TTL of a socket before it sends anything, so that
// the record's IPTTL can be told from the kernel's default.
func withTTL(ttl int) func(network, address string, c syscall.RawConn) error {
	return func(network, address string, c syscall.RawConn) error {
		var serr error
		err := c.Control(func(fd uintptr) {
			serr = syscall.SetsockoptInt(int(fd), syscall.IPPROTO_IP, syscall.IP_TTL, ttl)
		})
		if err != nil {
			return err
		}
		return serr
	}
}

// dialTCP connects from ns with a fixed source port and TTL.
func dialTCP(ns *netlab.NS, laddr, raddr string, ttl int, timeout time.Duration) (net.Conn, error) {
	var c net.Conn
	err := ns.Do(func() error {
		la, err := net.ResolveTCPAddr("tcp", laddr)
		if err != nil {
			return err
		}
		d := net.Dialer{LocalAddr: la, Timeout: timeout, FallbackDelay: -1, Control: withTTL(ttl)}
		c, err = d.Dial("tcp", raddr)
		return err
	})
	return c, err
}

// sendUDP sends one datagram of n payload bytes from laddr in ns with ttl.
func sendUDP(t testing.TB, ns *netlab.NS, laddr, raddr string, ttl, n int) {
	t.Helper()
	var pc net.PacketConn
	must(t, ns.Do(func() error {
		lc := net.ListenConfig{Control: withTTL(ttl)}
		var err error
		pc, err = lc.ListenPacket(context.Background(), "udp4", laddr)
		return err
	}))
	defer pc.Close()
	ra, err := net.ResolveUDPAddr("udp4", raddr)
	must(t, err)
	_, err = pc.WriteTo(bytes.Repeat([]byte{'x'}, n), ra)
	must(t, err)
}

// flowWant is what one record must say: exact field values (formatted as
// the JSON has them) and fields that must be absent.
type flowWant struct {
	name   string
	match  func(flowRecord) bool
	fields map[string]any
	absent []string
	check  func(flowRecord) error // further checks on the packet's own fields
}

func (w *flowWant) verify(r flowRecord) error {
	var errs []string
	for k, v := range w.fields {
		if got := r.str(k); got != fmt.Sprint(v) {
			errs = append(errs, fmt.Sprintf("%s = %q, want %q", k, got, fmt.Sprint(v)))
		}
	}
	for _, k := range w.absent {
		if _, ok := r[k]; ok {
			errs = append(errs, fmt.Sprintf("%s = %q, want none", k, r.str(k)))
		}
	}
	if w.check != nil {
		if err := w.check(r); err != nil {
			errs = append(errs, err.Error())
		}
	}
	if len(errs) > 0 {
		return fmt.Errorf("%s", strings.Join(errs, "; "))
	}
	return nil
}

// tuple matches records by addresses, protocol and ports (0: any).
func tuple(src, dst string, proto int, sport, dport int) func(flowRecord) bool {
	return func(r flowRecord) bool {
		return r.str("IPSourceAddress") == src && r.str("IPDestinationAddress") == dst &&
			r.num("IPProtocol") == int64(proto) &&
			(sport == 0 || r.num("SourcePort") == int64(sport)) &&
			(dport == 0 || r.num("DestinationPort") == int64(dport))
	}
}

func withFlags(f func(flowRecord) bool, flags int) func(flowRecord) bool {
	return func(r flowRecord) bool { return f(r) && r.num("TCPFlags") == int64(flags) }
}

func withICMP(f func(flowRecord) bool, typ int) func(flowRecord) bool {
	return func(r flowRecord) bool { return f(r) && r["ICMPType"] != nil && r.num("ICMPType") == int64(typ) }
}

// tcpLength is a TCP segment's IP total length: the 20-byte IPv4 header
// our senders use, the TCP header with its options, and the payload.
func tcpLength(payload int) func(flowRecord) error {
	return func(r flowRecord) error {
		want := 20 + 4*r.num("TCPDataOffset") + int64(payload)
		if got := r.num("IPTotalLength"); got != want || r.num("IPHeaderLength") != 20 {
			return fmt.Errorf("IPTotalLength %d (header %d), want 20 + TCP header %d + payload %d = %d",
				got, r.num("IPHeaderLength"), 4*r.num("TCPDataOffset"), payload, want)
		}
		return nil
	}
}

// TestNetflowThroughGateway sends real TCP, UDP and ICMP through the
// gateway from the internet, from the office and from a WireGuard user,
// with rules that pass and drop by ingress, samples every packet, and
// checks the network_analytics_logs records Splunk receives field by field
// against the packets sent.
func TestNetflowThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	s := newSite(t)
	ra := s.ra
	hec, token := hecInGateway(t, s)
	aliceKey, alicePub := wgKey(t, ra.User, s.dir, "alice")
	s.addPeer("alice", alicePub, "100.96.0.10/32")
	body := fmt.Sprintf(`firewall:
  rules:
    - id: wan-no-ssh
      expression: ingress == "wan" and tcp.dstport == 22
      action: block
    - id: wan-web
      expression: ingress == "wan" and tcp.dstport == 80
      action: allow
    - id: wan-no-ping-office
      expression: ingress == "wan" and icmp.type == 8 and ip.dst == 10.0.0.0/24
      action: block
    - id: lan-no-udp-9999
      expression: ingress == "lan" and udp.dstport == 9999
      action: block
    - id: lan-udp-9998
      expression: ingress == "lan" and udp.dstport == 9998
      action: allow
    - id: tunnel-no-telnet
      expression: ingress != "wan" and ingress != "lan" and tcp.dstport == 23
      action: block
logpush:
  - name: flows
    dataset: network_analytics_logs
    destination: %s
    token_file: %s
    max_upload_interval: 1s
`, hec.SplunkURL("/services/collector/event", url.Values{"sourcetype": {"edgegw:network"}}), token)
	s.writeFlowConfig(body)
	begin := time.Now().Add(-time.Second)
	s.start()
	// A routed office prefix: the internet reaches 10.0.0.0/24 through the
	// gateway (as in TestFirewallLANAndWAN).
	must(t, ra.WAN.Route("10.0.0.0/24", ra.GWWANAddr.String()))
	echoServer(t, ra.LAN, ":80")
	echoServer(t, ra.LAN, ":22")
	echoServer(t, ra.LAN, ":23")
	netlab.Eventually(t, 10*time.Second, "internet reaches the office", func() error {
		c, err := dialTCP(ra.User, "192.0.2.2:0", "10.0.0.5:80", 64, time.Second)
		if err == nil {
			c.Close()
		}
		return err
	})

	const (
		user, office, gwWAN, alice = "192.0.2.2", "10.0.0.5", "198.51.100.2", "100.96.0.10"
		userNet, officeNet         = "192.0.2.0/24", "10.0.0.0/24"
		gwNet, aliceNet            = "198.51.100.0/24", "100.96.0.0/24"
	)
	// What the steps share: the packets they expect records of, the
	// records, when the traffic ended, the ruleset id.
	var (
		wants []*flowWant
		in    map[string]any // internet → office TCP, as recorded
		recs  []flowRecord
		end   time.Time
		rsID  string
	)
	tcpAbsent := []string{"ICMPType", "ICMPCode", "UDPChecksum", "TunnelName", "Email"}
	udpAbsent := []string{"ICMPType", "ICMPCode", "TCPFlags", "TCPFlagsString", "TunnelName", "Email"}
	icmpAbsent := []string{"SourcePort", "DestinationPort", "TCPFlags", "UDPChecksum", "TunnelName", "Email"}

	if !t.Run("internet to office web", func(t *testing.T) {
		// Internet → office web, allowed by wan-web: a TTL of 77 is 76 after
		// the internet router.
		c, err := dialTCP(ra.User, user+":40080", office+":80", 77, 2*time.Second)
		must(t, err)
		must(t, c.SetDeadline(time.Now().Add(5*time.Second)))
		_, err = c.Write([]byte("hello\n"))
		must(t, err)
		_, err = c.Read(make([]byte, 6))
		must(t, err)
		c.Close()
		in = map[string]any{"Direction": "ingress", "IPSourceAddress": user, "IPDestinationAddress": office,
			"IPSourceSubnet": userNet, "IPDestinationSubnet": officeNet, "IPProtocol": 6, "IPProtocolName": "tcp",
			"SourcePort": 40080, "DestinationPort": 80, "IPTTL": 76, "Outcome": "pass", "Verdict": "pass", "RuleID": "wan-web"}
		wants = append(wants,
			&flowWant{name: "wan tcp SYN to office:80", match: withFlags(tuple(user, office, 6, 40080, 80), 0x02),
				fields: merge(in, map[string]any{"TCPFlags": 2, "TCPFlagsString": "S"}), absent: tcpAbsent,
				check: all(tcpLength(0), func(r flowRecord) error {
					if r["TCPMSS"] == nil || r.num("TCPMSS") != 1460 {
						return fmt.Errorf("TCPMSS %s, want 1460 (MTU 1500)", r.str("TCPMSS"))
					}
					return nil
				})},
			&flowWant{name: "wan tcp data to office:80", match: withFlags(tuple(user, office, 6, 40080, 80), 0x18),
				fields: merge(in, map[string]any{"TCPFlags": 0x18, "TCPFlagsString": "PA"}), absent: tcpAbsent, check: tcpLength(6)},
			&flowWant{name: "office tcp SYN-ACK to internet", match: withFlags(tuple(office, user, 6, 80, 40080), 0x12),
				fields: map[string]any{"Direction": "egress", "IPSourceSubnet": officeNet, "IPDestinationSubnet": userNet,
					"IPProtocolName": "tcp", "IPTTL": 64, "TCPFlagsString": "SA", "Outcome": "pass", "Verdict": "pass"},
				absent: append([]string{"RuleID"}, tcpAbsent...), check: tcpLength(0)},
		)
	}) {
		return
	}

	if !t.Run("internet to office ssh dropped", func(t *testing.T) {
		// Internet → office SSH, dropped by wan-no-ssh.
		if c, err := dialTCP(ra.User, user+":40022", office+":22", 77, 1500*time.Millisecond); err == nil {
			c.Close()
			t.Error("SSH from the internet passed; wan-no-ssh should drop it")
		}
		wants = append(wants, &flowWant{name: "wan tcp SYN to office:22 dropped", match: tuple(user, office, 6, 40022, 22),
			fields: merge(in, map[string]any{"DestinationPort": 22, "SourcePort": 40022, "TCPFlags": 2, "TCPFlagsString": "S",
				"Outcome": "drop", "Verdict": "drop", "RuleID": "wan-no-ssh"}), absent: tcpAbsent, check: tcpLength(0)})
	}) {
		return
	}

	if !t.Run("office udp to internet", func(t *testing.T) {
		// Office → internet UDP: 9998 allowed by lan-udp-9998, 9999 dropped.
		// The sender is one hop from the gateway: TTL as sent.
		for _, port := range []int{9998, 9999} {
			sendUDP(t, ra.LAN, fmt.Sprintf("%s:4%d", office, port), fmt.Sprintf("%s:%d", user, port), 55, 100)
		}
		out := map[string]any{"Direction": "egress", "IPSourceAddress": office, "IPDestinationAddress": user,
			"IPSourceSubnet": officeNet, "IPDestinationSubnet": userNet, "IPProtocol": 17, "IPProtocolName": "udp",
			"IPTTL": 55, "IPTotalLength": 128, "UDPPayloadLength": 100}
		wants = append(wants,
			&flowWant{name: "lan udp 9998 passed", match: tuple(office, user, 17, 49998, 9998),
				fields: merge(out, map[string]any{"SourcePort": 49998, "DestinationPort": 9998, "Outcome": "pass", "Verdict": "pass", "RuleID": "lan-udp-9998"}), absent: udpAbsent},
			&flowWant{name: "lan udp 9999 dropped", match: tuple(office, user, 17, 49999, 9999),
				fields: merge(out, map[string]any{"SourcePort": 49999, "DestinationPort": 9999, "Outcome": "drop", "Verdict": "drop", "RuleID": "lan-no-udp-9999"}), absent: udpAbsent},
		)
	}) {
		return
	}

	if !t.Run("icmp both ways", func(t *testing.T) {
		// ICMP: the internet may not ping the office (wan-no-ping-office); the
		// office pings the internet (no rule: the default passes), and the
		// reply comes back to the masqueraded address: the sample is taken
		// before conntrack undoes the NAT.
		pingArgs := func(ttl, size int, dst string) []string {
			return []string{"-c", "1", "-W", "1", "-t", strconv.Itoa(ttl), "-s", strconv.Itoa(size), dst}
		}
		if _, err := ra.User.Exec(context.Background(), "ping", pingArgs(50, 56, office)...); err == nil {
			t.Error("ping from the internet to the office passed")
		}
		if out, err := ra.LAN.Exec(context.Background(), "ping", pingArgs(60, 200, user)...); err != nil {
			t.Errorf("ping from the office to the internet: %v\n%s", err, out)
		}
		wants = append(wants,
			&flowWant{name: "wan echo request to office dropped", match: withICMP(tuple(user, office, 1, 0, 0), 8),
				fields: map[string]any{"Direction": "ingress", "IPSourceSubnet": userNet, "IPDestinationSubnet": officeNet,
					"IPProtocolName": "icmp", "ICMPType": 8, "ICMPCode": 0, "IPTTL": 49, "IPTotalLength": 84,
					"Outcome": "drop", "Verdict": "drop", "RuleID": "wan-no-ping-office"}, absent: icmpAbsent},
			&flowWant{name: "lan echo request to internet passed", match: withICMP(tuple(office, user, 1, 0, 0), 8),
				fields: map[string]any{"Direction": "egress", "IPProtocol": 1, "IPProtocolName": "icmp", "ICMPType": 8, "ICMPCode": 0,
					"IPTTL": 60, "IPTotalLength": 228, "Outcome": "pass", "Verdict": "pass"}, absent: append([]string{"RuleID"}, icmpAbsent...)},
			&flowWant{name: "echo reply to the masqueraded address", match: withICMP(tuple(user, gwWAN, 1, 0, 0), 0),
				fields: map[string]any{"Direction": "ingress", "IPSourceSubnet": userNet, "IPDestinationSubnet": gwNet,
					"ICMPCode": 0, "IPTTL": 63, "IPTotalLength": 228, "Outcome": "pass", "Verdict": "pass"}, absent: append([]string{"RuleID"}, icmpAbsent...)},
		)
	}) {
		return
	}

	if !t.Run("a wireguard user", func(t *testing.T) {
		// A WireGuard user: records of tunnel traffic name the tunnel and the
		// user; the encrypted packets are ordinary WAN ingress.
		s.client(ra.User, s.lab.ID()+"u", "alice", aliceKey)
		netlab.Eventually(t, 15*time.Second, "tunnel up", func() error { return ra.User.Ping(office) })
		c, err := dialTCP(ra.User, alice+":40180", office+":80", 64, 2*time.Second)
		must(t, err)
		c.Close()
		if c, err := dialTCP(ra.User, alice+":40123", office+":23", 64, 1500*time.Millisecond); err == nil {
			c.Close()
			t.Error("telnet through the tunnel passed; tunnel-no-telnet should drop it")
		}
		tun := map[string]any{"Direction": "egress", "TunnelName": s.wgIf, "Email": "alice@corp.example",
			"IPSourceAddress": alice, "IPDestinationAddress": office, "IPSourceSubnet": aliceNet, "IPDestinationSubnet": officeNet,
			"IPProtocol": 6, "IPProtocolName": "tcp", "TCPFlags": 2, "TCPFlagsString": "S", "IPTTL": 64}
		wants = append(wants,
			&flowWant{name: "tunnel tcp SYN to office:80", match: withFlags(tuple(alice, office, 6, 40180, 80), 2),
				fields: merge(tun, map[string]any{"SourcePort": 40180, "DestinationPort": 80, "Outcome": "pass", "Verdict": "pass"}),
				absent: []string{"RuleID", "ICMPType", "UDPChecksum"}, check: tcpLength(0)},
			&flowWant{name: "tunnel tcp SYN to office:23 dropped", match: withFlags(tuple(alice, office, 6, 40123, 23), 2),
				fields: merge(tun, map[string]any{"SourcePort": 40123, "DestinationPort": 23, "Outcome": "drop", "Verdict": "drop", "RuleID": "tunnel-no-telnet"}),
				absent: []string{"ICMPType", "UDPChecksum"}, check: tcpLength(0)},
			&flowWant{name: "WireGuard packets from the user", match: tuple(user, gwWAN, 17, 0, 51820),
				fields: map[string]any{"Direction": "ingress", "IPProtocolName": "udp", "IPTTL": 63, "Outcome": "pass", "Verdict": "pass"},
				absent: append([]string{"RuleID"}, udpAbsent...)},
		)
	}) {
		return
	}

	if !t.Run("every flow in splunk", func(t *testing.T) {
		// Every expected packet has records, and every record of it is right.
		netlab.Eventually(t, 20*time.Second, "every flow in Splunk", func() error {
			recs = flowRecords(t, hec)
			for _, w := range wants {
				if !anyRecord(recs, w.match) {
					return fmt.Errorf("no record yet for %s (%d records)", w.name, len(recs))
				}
			}
			return nil
		})
		end = time.Now().Add(time.Second)
		for _, w := range wants {
			n := 0
			for _, r := range recs {
				if !w.match(r) {
					continue
				}
				n++
				if err := w.verify(r); err != nil {
					t.Errorf("%s: %v\n%s", w.name, err, r)
				}
			}
			t.Logf("%s: %d records", w.name, n)
		}
	}) {
		return
	}

	if !t.Run("what every record says", func(t *testing.T) {
		// What every record says: the appliance, the system, the sampling, one
		// ruleset, a time during the test.
		rulesets := map[string]int{}
		for _, r := range recs {
			for k, v := range map[string]string{"ColoCode": "AMS", "ColoName": "ams-office-1", "ColoCountry": "NL",
				"MitigationSystem": "magic-firewall", "SampleInterval": "1"} {
				if r.str(k) != v {
					t.Errorf("%s = %q, want %q: %s", k, r.str(k), v, r)
				}
			}
			if r.str("Outcome") != r.str("Verdict") {
				t.Errorf("Outcome %q and Verdict %q differ: %s", r.str("Outcome"), r.str("Verdict"), r)
			}
			rulesets[r.str("RulesetID")]++
			ts, err := time.Parse(time.RFC3339Nano, r.str("Datetime"))
			if err != nil || ts.Before(begin) || ts.After(end) {
				t.Errorf("Datetime %q not during the test (%v … %v): %v", r.str("Datetime"), begin, end, err)
			}
		}
		if len(rulesets) != 1 || rulesets[""] > 0 {
			t.Errorf("records name rulesets %v, want one non-empty id", rulesets)
		}
		for id := range rulesets {
			rsID = id
		}
	}) {
		return
	}

	if !t.Run("ruleset id across reloads", func(t *testing.T) {
		// The ruleset id stays while the rules do, and a reload that adds a
		// rule gives records a new id and the new rule's id.
		after := func(sport, dport int) flowRecord {
			t.Helper()
			sendUDP(t, ra.LAN, fmt.Sprintf("%s:%d", office, sport), fmt.Sprintf("%s:%d", user, dport), 55, 100)
			var rec flowRecord
			netlab.Eventually(t, 10*time.Second, fmt.Sprintf("record of UDP %d → %d", sport, dport), func() error {
				for _, r := range flowRecords(t, hec) {
					if tuple(office, user, 17, sport, dport)(r) {
						rec = r
						return nil
					}
				}
				return fmt.Errorf("none yet")
			})
			return rec
		}
		s.signal(syscall.SIGHUP)
		s.waitLog("configuration reloaded", 1)
		if r := after(49996, 9998); r.str("RulesetID") != rsID || r.str("RuleID") != "lan-udp-9998" {
			t.Errorf("after a reload without changes: RulesetID %q (was %q), RuleID %q", r.str("RulesetID"), rsID, r.str("RuleID"))
		}
		s.writeFlowConfig(strings.Replace(body, "logpush:", `    - id: lan-no-udp-9997
      expression: ingress == "lan" and udp.dstport == 9997
      action: block
logpush:`, 1))
		s.signal(syscall.SIGHUP)
		s.waitLog("configuration reloaded", 2)
		r := after(49997, 9997)
		if id := r.str("RulesetID"); id == "" || id == rsID || r.str("RuleID") != "lan-no-udp-9997" || r.str("Outcome") != "drop" {
			t.Errorf("after adding a rule: RulesetID %q (was %q), RuleID %q, Outcome %q", id, rsID, r.str("RuleID"), r.str("Outcome"))
		}
		if r2 := after(49995, 9998); r2.str("RulesetID") != r.str("RulesetID") || r2.str("RuleID") != "lan-udp-9998" {
			t.Errorf("after adding a rule: RulesetID %q, want %q; RuleID %q", r2.str("RulesetID"), r.str("RulesetID"), r2.str("RuleID"))
		}
		for _, e := range hec.Events() {
			if e.Sourcetype != "edgegw:network" || e.Host != "ams-office-1" {
				t.Errorf("HEC envelope: sourcetype %q host %q", e.Sourcetype, e.Host)
				break
			}
		}
		m := s.get("/metrics")
		if v := metricValue(m, "edgegw_netflow_samples_lost_total"); v != 0 {
			t.Errorf("edgegw_netflow_samples_lost_total = %v", v)
		}
		if v := metricValue(m, "edgegw_netflow_records_total"); v < float64(len(recs)) {
			t.Errorf("edgegw_netflow_records_total = %v, but Splunk has %d records", v, len(recs))
		}
	}) {
		return
	}
}

func merge(a, b map[string]any) map[string]any {
	out := map[string]any{}
	for k, v := range a {
		out[k] = v
	}
	for k, v := range b {
		out[k] = v
	}
	return out
}

func all(fs ...func(flowRecord) error) func(flowRecord) error {
	return func(r flowRecord) error {
		for _, f := range fs {
			if err := f(r); err != nil {
				return err
			}
		}
		return nil
	}
}

func anyRecord(rs []flowRecord, f func(flowRecord) bool) bool {
	for _, r := range rs {
		if f(r) {
			return true
		}
	}
	return false
}

// metricValue is the value of an unlabelled metric in a scrape (-1: absent).
func metricValue(scrape, name string) float64 {
	m := regexp.MustCompile(`(?m)^` + regexp.QuoteMeta(name) + ` (\S+)$`).FindStringSubmatch(scrape)
	if m == nil {
		return -1
	}
	v, _ := strconv.ParseFloat(m[1], 64)
	return v
}

// TestNetflowChaos samples 100,000 UDP datagrams through the gateway, each
// with its own (source port, destination port), while the Splunk receiver
// drops every connection for part of the run and answers 503, and the
// gateway is stopped gracefully and started again on the same state
// directory while records are still spooled and in flight. Every datagram
// that crossed the gateway must reach Splunk as a record at least once;
// duplicates are bounded by one batch per failure.
func TestNetflowChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test")
	}
	const (
		total    = 100_000
		dports   = 250 // destination ports 30000…30249
		batch    = 2000
		perTick  = 40 // datagrams per 10 ms: 4,000/s, which a loaded 2-core box samples without loss
		firstSrc = 20000
		firstDst = 30000
	)
	s := newSite(t)
	ra := s.ra
	hec, token := hecInGateway(t, s)
	s.writeFlowConfig(fmt.Sprintf(`logpush:
  - name: flows
    dataset: network_analytics_logs
    destination: %s
    token_file: %s
    fields: [IPSourceAddress, IPDestinationAddress, IPProtocol, SourcePort, DestinationPort, Outcome, SampleInterval]
    max_upload_records: %d
    max_upload_interval: 1s
`, hec.SplunkURL("/services/collector/event", nil), token, batch))
	// A host that does not forward unless edgegw runs, as Debian ships:
	// every datagram that reaches the far side crossed a running gateway.
	must(t, ra.GW.Sysctl("net.ipv4.ip_forward", "0"))
	s.start()

	// The far side: the remote host listens on every destination port and
	// notes which keys (in the payload) arrived.
	received := make([]atomic.Bool, total)
	var conns []net.PacketConn
	must(t, ra.User.Do(func() error {
		for i := range dports {
			pc, err := net.ListenPacket("udp4", fmt.Sprintf("%s:%d", ra.UserAddr, firstDst+i))
			if err != nil {
				return err
			}
			conns = append(conns, pc)
		}
		return nil
	}))
	got := make(chan int, 4096)
	var readers sync.WaitGroup
	for _, pc := range conns {
		readers.Go(func() {
			buf := make([]byte, 64)
			for {
				n, _, err := pc.ReadFrom(buf)
				if err != nil {
					return
				}
				if n == 8 {
					got <- int(wire.BigEndian.Uint64(buf))
				}
			}
		})
	}
	go func() {
		for k := range got {
			if k >= 0 && k < total {
				received[k].Store(true)
			}
		}
	}()
	defer func() {
		for _, pc := range conns {
			pc.Close()
		}
		readers.Wait()
		close(got)
	}()

	// The office side: one socket per source port.
	var srcs []net.PacketConn
	must(t, ra.LAN.Do(func() error {
		for i := range total / dports {
			pc, err := net.ListenPacket("udp4", fmt.Sprintf("%s:%d", ra.ServerAddr, firstSrc+i))
			if err != nil {
				return err
			}
			srcs = append(srcs, pc)
		}
		return nil
	}))
	defer func() {
		for _, pc := range srcs {
			pc.Close()
		}
	}()
	dsts := make([]*net.UDPAddr, dports)
	for i := range dsts {
		dsts[i] = &net.UDPAddr{IP: ra.UserAddr.AsSlice(), Port: firstDst + i}
	}
	// The sender goes on at a steady pace for the whole run, through the
	// outage and the restart; the test acts when it reaches given keys.
	var progress atomic.Int64
	sendDone := make(chan error, 1)
	go func() {
		tick := time.NewTicker(10 * time.Millisecond)
		defer tick.Stop()
		var payload [8]byte
		for k := 0; k < total; {
			<-tick.C
			for end := min(k+perTick, total); k < end; k++ {
				wire.BigEndian.PutUint64(payload[:], uint64(k))
				if _, err := srcs[k/dports].WriteTo(payload[:], dsts[k%dports]); err != nil {
					progress.Store(total) // release the waiting test
					sendDone <- fmt.Errorf("send key %d: %w", k, err)
					return
				}
			}
			progress.Store(int64(k))
		}
		sendDone <- nil
	}()
	reach := func(k int64) {
		for progress.Load() < k {
			time.Sleep(5 * time.Millisecond)
		}
	}
	lost := func(t *testing.T, when string) {
		t.Helper()
		if v := metricValue(s.get("/metrics"), "edgegw_netflow_samples_lost_total"); v != 0 {
			t.Fatalf("%s: edgegw_netflow_samples_lost_total = %v: the kernel dropped samples because the "+
				"NFLOG reader fell behind (load %s); this test needs every sample and paces at "+
				"%d datagrams per 10 ms: lower perTick if the machine is slower", when, v, loadavg(), perTick)
		}
	}
	start := time.Now()
	// What the steps share: the first run's log, the batches it spooled,
	// how long sending took, the records per key and how many datagrams
	// arrived.
	var (
		first   string
		spooled []string
		sent    time.Duration
		counts  map[int]int
		arrived int
	)

	if !t.Run("a restart while Splunk is down keeps the spool", func(t *testing.T) {
		// Splunk is busy, then drops every connection.
		reach(25_000)
		hec.Fault(hectest.Busy(), hectest.Busy(), hectest.Busy())
		reach(35_000)
		hec.SetDown(true)
		// A graceful restart while batches wait in the spool, samples are on
		// their way through the kernel, the sampler and the batcher, and
		// packets keep coming.
		reach(55_000)
		lost(t, "before the restart")
		s.signal(syscall.SIGTERM)
		select {
		case <-s.proc.Done():
		case <-time.After(20 * time.Second):
			t.Fatalf("gateway did not stop on SIGTERM\n%s", s.proc.Output())
		}
		if err := s.proc.Wait(); err != nil {
			t.Fatalf("exit: %v\n%s", err, s.proc.Output())
		}
		first = s.proc.Output()
		// Splunk was down: what the first run took in waits in the spool,
		// including the batch it had in memory at SIGTERM.
		var err error
		spooled, err = filepath.Glob(filepath.Join(s.dir, "state", "logpush", "flows", "*.hec.gz"))
		must(t, err)
		if len(spooled) < 2 {
			t.Fatalf("the first run left %d batches in the spool, want several: %v", len(spooled), spooled)
		}
		s.start()
	}) {
		return
	}

	if !t.Run("Splunk back, no sample lost", func(t *testing.T) {
		// Splunk comes back while the last of the datagrams are sent.
		reach(75_000)
		hec.SetDown(false)
		must(t, <-sendDone)
		sent = time.Since(start)
		lost(t, "after the restart")
	}) {
		return
	}

	if !t.Run("every datagram that crossed has a record", func(t *testing.T) {
		// Every datagram that arrived at the far side crossed the running
		// gateway: each must have a record.
		var missing []int
		deadline := time.Now().Add(45 * time.Second)
		for {
			time.Sleep(2 * time.Second)
			counts = chaosKeys(t, hec, firstSrc, firstDst, dports, ra.ServerAddr.String(), ra.UserAddr.String())
			missing, arrived = missing[:0], 0
			for k := range total {
				if received[k].Load() {
					arrived++
					if counts[k] == 0 {
						missing = append(missing, k)
					}
				}
			}
			if len(missing) == 0 || time.Now().After(deadline) {
				break
			}
		}
		if len(missing) > 0 {
			t.Errorf("%d of %d datagrams that crossed the gateway have no record, e.g. keys %v\nreceiver answers: %v\nfirst run's log tail:\n%s\nsecond run's log tail:\n%s",
				len(missing), arrived, missing[:min(len(missing), 20)], hec.Requests(), tail(first, 15), tail(s.proc.Output(), 15))
		}
	}) {
		return
	}

	if !t.Run("most datagrams arrived", func(t *testing.T) {
		// The far side got all but what was sent while the gateway was down:
		// the run proves something.
		if arrived < total*9/10 {
			t.Errorf("only %d of %d datagrams arrived at the far side", arrived, total)
		}
	}) {
		return
	}

	if !t.Run("few duplicates, faults exercised, spool empty", func(t *testing.T) {
		// At most a batch is recorded twice per failure, the receiver's faults
		// were exercised, and the spool is empty.
		dups := 0
		for _, n := range counts {
			dups += max(n-1, 0)
		}
		if maxDups := 2 * batch; dups > maxDups {
			t.Errorf("%d duplicate records, more than %d (one batch per failure: the outage and the restart)", dups, maxDups)
		}
		req := hec.Requests()
		if req[0] == 0 || req[503] == 0 {
			t.Errorf("the receiver's faults were not exercised: answers %v", req)
		}
		if lp := s.get("/api/v1/logpush"); !strings.Contains(lp, `"spooled_batches": 0`) {
			t.Errorf("batches left in the spool:\n%s", lp)
		}
		t.Logf("%d datagrams sent in %v, %d arrived, %d keys recorded, %d duplicates, %d batches spooled across the restart; receiver answers %v; load %s",
			total, sent.Round(time.Millisecond), arrived, len(counts), dups, len(spooled), req, loadavg())
	}) {
		return
	}
}

// chaosKeys counts the records of each chaos key: UDP from the office
// server to the remote host, the key from the ports.
func chaosKeys(t *testing.T, hec *hectest.Server, firstSrc, firstDst, dports int, src, dst string) map[int]int {
	t.Helper()
	counts := map[int]int{}
	for _, e := range hec.Events() {
		var r struct {
			IPSourceAddress, IPDestinationAddress   string
			IPProtocol, SourcePort, DestinationPort int
		}
		if err := json.Unmarshal(e.Event, &r); err != nil {
			t.Fatalf("event %s: %v", e.Event, err)
		}
		if r.IPProtocol != 17 || r.IPSourceAddress != src || r.IPDestinationAddress != dst {
			continue
		}
		d := r.DestinationPort - firstDst
		if d < 0 || d >= dports || r.SourcePort < firstSrc {
			continue
		}
		counts[(r.SourcePort-firstSrc)*dports+d]++
	}
	return counts
}

func tail(s string, n int) string {
	lines := strings.Split(strings.TrimRight(s, "\n"), "\n")
	return strings.Join(lines[max(len(lines)-n, 0):], "\n")
}

func loadavg() string {
	b, _ := os.ReadFile("/proc/loadavg")
	return strings.TrimSpace(string(b))
}

// TestIPFIXExportThroughGateway runs the gateway with netflow.export to
// Debian's nfdump collector, nfcapd, on the office server: the office
// sends UDP to the internet through the gateway, and nfdump -r reads the
// gateway's export back: addresses, ports, protocol, direction, packets
// and bytes (sampled 1 in 1: what was sent) and times within the test.
func TestIPFIXExportThroughGateway(t *testing.T) {
	if testing.Short() {
		t.Skip("end-to-end test")
	}
	testkit.NeedTool(t, "nfcapd", "nfdump")
	testkit.NeedTool(t, "nfdump", "nfdump")
	testkit.NeedTool(t, "stdbuf", "coreutils")
	s := newSite(t)
	ra := s.ra
	dir := t.TempDir()
	// -E prints each flow as it arrives, line-buffered through stdbuf.
	nfcapd, err := ra.LAN.Start("stdbuf", "-oL", "nfcapd", "-w", dir, "-b", "10.0.0.5", "-p", "4739", "-t", "3600", "-E")
	must(t, err)
	defer nfcapd.Stop()
	ctx, cancel := context.WithTimeout(context.Background(), 20*time.Second)
	defer cancel()
	if err := nfcapd.WaitOutput(ctx, "Startup"); err != nil {
		t.Fatalf("nfcapd: %v: %s", err, nfcapd.Output())
	}
	s.writeFlowConfig(`  export:
    - collector: 10.0.0.5:4739
      observation_domain: 9
      template_refresh: 5s
`)
	begin := time.Now().Add(-time.Second)
	s.start()

	const office, user, n, payload = "10.0.0.5", "192.0.2.2", 5, 100
	for range n {
		sendUDP(t, ra.LAN, office+":49998", user+":9998", 64, payload)
	}
	netlab.Eventually(t, 30*time.Second, "nfcapd printing the office's flows", func() error {
		if c := strings.Count(nfcapd.Output(), "9998"); c < n {
			return fmt.Errorf("%d of %d flows; nfcapd: %s", c, n, tail(nfcapd.Output(), 2000))
		}
		return nil
	})
	end := time.Now().Add(time.Second)
	if err := nfcapd.Stop(); err != nil {
		t.Logf("nfcapd stop: %v", err)
	}
	files, err := filepath.Glob(filepath.Join(dir, "nfcapd.2*"))
	if err != nil || len(files) != 1 {
		t.Fatalf("nfcapd files %v, %v", files, err)
	}
	out, err := ra.LAN.Exec(context.Background(), "env", "TZ=UTC", "nfdump", "-r", files[0], "-o", "json", "dst port 9998")
	if err != nil {
		t.Fatalf("nfdump: %v: %s", err, out)
	}
	var flows []struct {
		First, Last string
		Packets     uint64 `json:"in_packets"`
		Bytes       uint64 `json:"in_bytes"`
		Proto       int
		SrcPort     int    `json:"src_port"`
		DstPort     int    `json:"dst_port"`
		Src         string `json:"src4_addr"`
		Dst         string `json:"dst4_addr"`
		Direction   int
		Router      string `json:"ip4_router"`
	}
	must(t, json.Unmarshal(out, &flows))
	var pk, by uint64
	for _, f := range flows {
		if f.Src != office || f.Dst != user || f.Proto != 17 || f.SrcPort != 49998 || f.DstPort != 9998 || f.Direction != 1 || f.Router != "10.0.0.1" {
			t.Errorf("flow %+v: want %s:49998 → %s:9998 udp, egress, from the gateway's LAN address", f, office, user)
		}
		for _, ts := range []string{f.First, f.Last} {
			at, err := time.Parse("2006-01-02T15:04:05.000", ts)
			if err != nil || at.Before(begin.Truncate(time.Millisecond)) || at.After(end) {
				t.Errorf("flow time %q (%v) not between %v and %v", ts, err, begin, end)
			}
		}
		pk += f.Packets
		by += f.Bytes
	}
	if pk != n || by != n*(20+8+payload) {
		t.Errorf("nfdump read %d packets, %d bytes; sent %d packets, %d bytes:\n%s", pk, by, n, n*(20+8+payload), out)
	}
	if m := s.get("/metrics"); metricValue(m, "edgegw_netflow_export_records_total") < n {
		t.Errorf("edgegw_netflow_export_records_total below %d", n)
	}
}
