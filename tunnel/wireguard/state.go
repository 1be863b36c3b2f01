package wireguard

import (
	"github.com/edgegw/edgegw/tunnel/wireguard/wgconf"

	"bufio"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"
	"time"
)

// wgState is what edgegw manages of wireguard-go's configuration, in the
// terms of its configuration protocol ("UAPI"); parsed from IpcGet it also
// carries each peer's run-time counters.
type wgState struct {
	privateKey Key
	listenPort int
	peers      map[Key]*wgPeer
}

type wgPeer struct {
	psk        Key // zero: none
	keepalive  int // seconds, 0: off
	allowedIPs []netip.Prefix

	// Run time, from IpcGet only.
	endpoint      string
	lastHandshake time.Time
	rxBytes       uint64
	txBytes       uint64
}

// loadState reads the key files c names and returns the state c asks for.
func loadState(c *Config, stateDir string) (wgState, error) {
	path := c.PrivateKeyPath(stateDir)
	if path == "" {
		return wgState{}, fmt.Errorf("no private_key_file and no state directory to keep a generated key in")
	}
	priv, err := LoadOrCreatePrivateKey(path)
	if err != nil {
		return wgState{}, err
	}
	pub := priv.PublicKey()
	st := wgState{privateKey: priv, listenPort: c.ListenPort, peers: make(map[Key]*wgPeer, len(c.Peers))}
	for _, p := range c.Peers {
		if p.PublicKey == pub {
			return wgState{}, fmt.Errorf("peer %q has the gateway's own public key", p.Name)
		}
		wp := &wgPeer{keepalive: int(p.PersistentKeepalive / time.Second), allowedIPs: sortedPrefixes(p.AllowedIPs)}
		if p.PresharedKeyFile != "" {
			if wp.psk, err = wgconf.ReadKeyFile(p.PresharedKeyFile); err != nil {
				return wgState{}, fmt.Errorf("peer %q: preshared key: %w", p.Name, err)
			}
		}
		st.peers[p.PublicKey] = wp
	}
	return st, nil
}

func sortedPrefixes(in []netip.Prefix) []netip.Prefix {
	out := slices.Clone(in)
	slices.SortFunc(out, func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return slices.Compact(out)
}

// parseIpcGet reads the output of wireguard-go's IpcGet.
func parseIpcGet(s string) (wgState, error) {
	st := wgState{peers: map[Key]*wgPeer{}}
	var cur *wgPeer
	var hsSec, hsNsec int64
	flush := func() {
		if cur != nil && (hsSec != 0 || hsNsec != 0) {
			cur.lastHandshake = time.Unix(hsSec, hsNsec)
		}
		hsSec, hsNsec = 0, 0
	}
	sc := bufio.NewScanner(strings.NewReader(s))
	for sc.Scan() {
		line := sc.Text()
		if line == "" {
			continue
		}
		key, value, ok := strings.Cut(line, "=")
		if !ok {
			return st, fmt.Errorf("uapi: bad line %q", line)
		}
		var err error
		switch key {
		case "private_key":
			st.privateKey, err = wgconf.ParseHex(value)
		case "listen_port":
			st.listenPort, err = strconv.Atoi(value)
		case "public_key":
			flush()
			var k Key
			if k, err = wgconf.ParseHex(value); err == nil {
				cur = &wgPeer{}
				st.peers[k] = cur
			}
		default:
			if cur == nil {
				continue // fwmark and keys this package does not manage
			}
			switch key {
			case "preshared_key":
				cur.psk, err = wgconf.ParseHex(value)
			case "endpoint":
				cur.endpoint = value
			case "last_handshake_time_sec":
				hsSec, err = strconv.ParseInt(value, 10, 64)
			case "last_handshake_time_nsec":
				hsNsec, err = strconv.ParseInt(value, 10, 64)
			case "rx_bytes":
				cur.rxBytes, err = strconv.ParseUint(value, 10, 64)
			case "tx_bytes":
				cur.txBytes, err = strconv.ParseUint(value, 10, 64)
			case "persistent_keepalive_interval":
				cur.keepalive, err = strconv.Atoi(value)
			case "allowed_ip":
				var p netip.Prefix
				if p, err = netip.ParsePrefix(value); err == nil {
					cur.allowedIPs = append(cur.allowedIPs, p)
				}
			}
		}
		if err != nil {
			return st, fmt.Errorf("uapi: %s: %w", key, err)
		}
	}
	flush()
	for _, p := range st.peers {
		p.allowedIPs = sortedPrefixes(p.allowedIPs)
	}
	return st, sc.Err()
}

// uapiDiff returns the configuration-protocol "set" text that turns cur into
// want, or "" if they agree. Peers are touched only if they change: a new
// peer is created, a removed one removed, a changed one updated in place
// (update_only, so its session survives), and its allowed IPs changed one
// prefix at a time rather than replaced, so no packet meets an empty table.
// It never uses replace_peers.
func uapiDiff(cur, want wgState) string {
	var b strings.Builder
	line := func(k, v string) { b.WriteString(k + "=" + v + "\n") }
	if cur.privateKey != want.privateKey {
		line("private_key", want.privateKey.Hex())
	}
	if cur.listenPort != want.listenPort {
		line("listen_port", strconv.Itoa(want.listenPort))
	}
	for _, k := range sortedKeys(cur.peers) {
		if _, ok := want.peers[k]; !ok {
			line("public_key", k.Hex())
			line("remove", "true")
		}
	}
	for _, k := range sortedKeys(want.peers) {
		w := want.peers[k]
		c, exists := cur.peers[k]
		if !exists {
			writePeer(&b, k, w)
			continue
		}
		var peer strings.Builder
		if c.psk != w.psk {
			peer.WriteString("preshared_key=" + w.psk.Hex() + "\n")
		}
		if c.keepalive != w.keepalive {
			peer.WriteString("persistent_keepalive_interval=" + strconv.Itoa(w.keepalive) + "\n")
		}
		for _, p := range c.allowedIPs {
			if !slices.Contains(w.allowedIPs, p) {
				peer.WriteString("allowed_ip=-" + p.String() + "\n")
			}
		}
		for _, p := range w.allowedIPs {
			if !slices.Contains(c.allowedIPs, p) {
				peer.WriteString("allowed_ip=" + p.String() + "\n")
			}
		}
		if peer.Len() > 0 {
			line("public_key", k.Hex())
			line("update_only", "true")
			b.WriteString(peer.String())
		}
	}
	return b.String()
}

func sortedKeys[V any](m map[Key]V) []Key {
	keys := make([]Key, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	slices.SortFunc(keys, func(a, b Key) int { return strings.Compare(string(a[:]), string(b[:])) })
	return keys
}
