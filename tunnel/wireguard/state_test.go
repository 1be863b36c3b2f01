package wireguard

import (
	"strings"
	"testing"
	"time"
)

func TestUAPIDiff(t *testing.T) {
	priv := Key{42}
	base := wgState{privateKey: priv, listenPort: 51820, peers: map[Key]*wgPeer{
		testKeyA: {keepalive: 25, allowedIPs: pfx("100.96.0.10/32")},
		testKeyB: {allowedIPs: pfx("10.20.0.0/16", "100.96.0.11/32")},
	}}
	clone := func(s wgState) wgState {
		n := s
		n.peers = map[Key]*wgPeer{}
		for k, p := range s.peers {
			c := *p
			n.peers[k] = &c
		}
		return n
	}
	tests := []struct {
		name string
		edit func(s *wgState)
		want string
	}{
		{"unchanged", func(s *wgState) {}, ""},
		{"add peer", func(s *wgState) {
			s.peers[testKeyC] = &wgPeer{psk: Key{1}, keepalive: 5, allowedIPs: pfx("100.96.0.12/32")}
		}, "public_key=" + testKeyC.Hex() + "\npreshared_key=" + Key{1}.Hex() + "\npersistent_keepalive_interval=5\nallowed_ip=100.96.0.12/32\n"},
		{"remove peer", func(s *wgState) { delete(s.peers, testKeyB) },
			"public_key=" + testKeyB.Hex() + "\nremove=true\n"},
		{"change allowed ips", func(s *wgState) { s.peers[testKeyB].allowedIPs = pfx("10.30.0.0/16", "100.96.0.11/32") },
			"public_key=" + testKeyB.Hex() + "\nupdate_only=true\nallowed_ip=-10.20.0.0/16\nallowed_ip=10.30.0.0/16\n"},
		{"drop psk and keepalive", func(s *wgState) { s.peers[testKeyA].keepalive = 0 },
			"public_key=" + testKeyA.Hex() + "\nupdate_only=true\npersistent_keepalive_interval=0\n"},
		{"port", func(s *wgState) { s.listenPort = 51821 }, "listen_port=51821\n"},
		{"key", func(s *wgState) { s.privateKey = Key{43} }, "private_key=" + Key{43}.Hex() + "\n"},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			want := clone(base)
			tt.edit(&want)
			got := uapiDiff(base, want)
			if got != tt.want {
				t.Errorf("diff:\n%s\nwant:\n%s", got, tt.want)
			}
			if strings.Contains(got, "replace_peers") {
				t.Error("replace_peers used")
			}
		})
	}
	full := uapiDiff(wgState{}, base)
	if !strings.HasPrefix(full, "private_key="+priv.Hex()+"\nlisten_port=51820\n") || strings.Count(full, "public_key=") != 2 {
		t.Errorf("initial config:\n%s", full)
	}
}

func TestParseIpcGet(t *testing.T) {
	text := "private_key=" + Key{42}.Hex() + "\nlisten_port=51820\nfwmark=3\n" +
		"public_key=" + testKeyA.Hex() + "\npreshared_key=" + Key{}.Hex() + "\nprotocol_version=1\nendpoint=192.0.2.2:40000\n" +
		"last_handshake_time_sec=1700000000\nlast_handshake_time_nsec=5\ntx_bytes=10\nrx_bytes=20\npersistent_keepalive_interval=25\n" +
		"allowed_ip=100.96.0.10/32\nallowed_ip=10.0.0.0/8\n" +
		"public_key=" + testKeyB.Hex() + "\nlast_handshake_time_sec=0\nlast_handshake_time_nsec=0\n"
	st, err := parseIpcGet(text)
	if err != nil {
		t.Fatal(err)
	}
	a := st.peers[testKeyA]
	if st.privateKey != (Key{42}) || st.listenPort != 51820 || len(st.peers) != 2 || a == nil {
		t.Fatalf("parsed %+v", st)
	}
	if a.endpoint != "192.0.2.2:40000" || !a.lastHandshake.Equal(time.Unix(1700000000, 5)) || a.rxBytes != 20 || a.txBytes != 10 ||
		a.keepalive != 25 || len(a.allowedIPs) != 2 || a.allowedIPs[0] != pfx("10.0.0.0/8")[0] {
		t.Errorf("peer A %+v", a)
	}
	if !st.peers[testKeyB].lastHandshake.IsZero() {
		t.Error("peer B has a handshake")
	}
	if _, err := parseIpcGet("garbage"); err == nil {
		t.Error("garbage accepted")
	}
}
