package swanbranch

import (
	"strings"
	"testing"
)

func TestCharonConf(t *testing.T) {
	for _, tc := range []struct {
		name      string
		c         Charon
		want, not []string
	}{
		{"libipsec with a log", Charon{Backend: BackendLibipsec, VICI: "/d/charon.vici", Log: "/d/charon.log"},
			[]string{"load = random nonce openssl aes gcm sha1 sha2 hmac kdf pem pkcs1 x509 pubkey kernel-libipsec kernel-netlink socket-default vici\n",
				"socket = unix:///d/charon.vici\n", "retransmit_tries = 2\n", "path = /d/charon.log\n"}, nil},
		{"kernel without a log", Charon{Backend: BackendKernel, VICI: "/d/v", RetransmitTries: 3},
			[]string{"pubkey kernel-netlink socket-default vici\n", "retransmit_tries = 3\n"},
			[]string{"kernel-libipsec", "filelog"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := tc.c.Conf()
			for _, w := range tc.want {
				if !strings.Contains(conf, w) {
					t.Errorf("no %q in\n%s", w, conf)
				}
			}
			for _, n := range tc.not {
				if strings.Contains(conf, n) {
					t.Errorf("%q in\n%s", n, conf)
				}
			}
			if strings.Count(conf, "{") != strings.Count(conf, "}") {
				t.Errorf("unbalanced braces:\n%s", conf)
			}
		})
	}
}

func TestConnSwanctl(t *testing.T) {
	c := Conn{Name: "gw", Local: "198.51.100.20", Remote: "203.0.113.10", LocalID: "fra.corp.example", RemoteID: "lon.corp.example",
		LocalTS: []string{"10.20.0.0/16", "10.200.3.1/32"}, RemoteTS: []string{"10.10.0.0/16", "10.200.3.0/32"}, PSK: "p"}
	for _, tc := range []struct {
		name string
		c    func(Conn) Conn
		want []string
	}{
		{"defaults", func(c Conn) Conn { return c }, []string{
			"\tgw {\n\t\tversion = 2\n", "local_addrs = 198.51.100.20\n", "remote_addrs = 203.0.113.10\n",
			"proposals = " + DefaultProposals + "\n", "esp_proposals = " + DefaultESPProposals + "\n",
			"local_ts = 10.20.0.0/16, 10.200.3.1/32\n", "remote_ts = 10.10.0.0/16, 10.200.3.0/32\n",
			"start_action = none\n", "ike-gw {\n\t\tid-1 = fra.corp.example\n\t\tid-2 = lon.corp.example\n\t\tsecret = \"p\"\n"}},
		{"initiating with other proposals", func(c Conn) Conn {
			c.Initiate, c.Proposals, c.ESPProposals = true, "aes128-sha256-modp2048", "aes128-sha256"
			return c
		}, []string{"start_action = start\n", "\t\tproposals = aes128-sha256-modp2048\n", "esp_proposals = aes128-sha256\n"}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			conf := tc.c(c).Swanctl()
			for _, w := range tc.want {
				if !strings.Contains(conf, w) {
					t.Errorf("no %q in\n%s", w, conf)
				}
			}
			if strings.Count(conf, "{") != strings.Count(conf, "}") {
				t.Errorf("unbalanced braces:\n%s", conf)
			}
		})
	}
}
