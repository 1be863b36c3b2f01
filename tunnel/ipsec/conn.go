package ipsec

import (
	"fmt"
	"net/netip"
	"slices"
	"time"

	"github.com/strongswan/govici/vici"

	"github.com/edgegw/edgegw/tunnel"
)

// Tunnel is one IPsec tunnel as the engine runs it: its configuration and
// the prefixes the site routes through it.
type Tunnel struct {
	Config
	// Routed are the prefixes routes send through this tunnel. With the
	// userspace backend every tunnel shares one TUN device, so the child
	// SA's remote traffic selectors (these plus the peer's tunnel
	// address) are what sends a packet into this tunnel and no other.
	// The kernel backend is route-based and does not need them: the
	// tunnel's own xfrm interface is what sends a packet into it.
	Routed []netip.Prefix
	// Wide makes the child SA route-based with the userspace backend too:
	// remote selectors 0.0.0.0/0 (or ::/0), as the kernel backend always
	// has them, for a tunnel that carries BGP, whose routes are not known
	// when the SA is negotiated. On the shared TUN, kernel-libipsec picks
	// the most specific selector that holds a packet's destination, so
	// the other tunnels' narrower selectors still win for their prefixes
	// and the wide tunnel takes whatever else is routed into the device;
	// the site's configuration check keeps that unambiguous (one wide
	// tunnel, and no prefix routed through it inside another tunnel's
	// selectors: see site.CheckWideIPsec).
	Wide bool
}

// Equal reports whether t and o run the same way.
func (t Tunnel) Equal(o Tunnel) bool {
	return t.Config.Equal(o.Config) && t.Wide == o.Wide && slices.Equal(t.RemoteTS(), o.RemoteTS())
}

// anyPrefix is the selector that holds every address of the tunnel
// address's family.
func (t Tunnel) anyPrefix() netip.Prefix {
	if t.Address.Addr().Is6() {
		return netip.MustParsePrefix("::/0")
	}
	return netip.MustParsePrefix("0.0.0.0/0")
}

// RemoteTS are the child SA's remote traffic selectors with the
// userspace backend: for a Wide tunnel every address; otherwise the far
// end of the tunnel address, the health-check target, and the routed
// prefixes.
func (t Tunnel) RemoteTS() []netip.Prefix {
	if t.Wide {
		return []netip.Prefix{t.anyPrefix()}
	}
	ts := []netip.Prefix{netip.PrefixFrom(tunnel.Peer(t.Address), t.Address.Addr().BitLen())}
	if tg := t.HealthCheck.Target; tg.IsValid() && !ts[0].Contains(tg) {
		ts = append(ts, netip.PrefixFrom(tg, tg.BitLen()))
	}
	for _, p := range t.Routed {
		p = p.Masked()
		if !slices.Contains(ts, p) {
			ts = append(ts, p)
		}
	}
	slices.SortFunc(ts[1:], func(a, b netip.Prefix) int {
		if c := a.Addr().Compare(b.Addr()); c != 0 {
			return c
		}
		return a.Bits() - b.Bits()
	})
	return ts
}

// The VICI load-conn message, with the keys of swanctl.conf(5).
type connMsg struct {
	Version     string              `vici:"version"`
	LocalAddrs  []string            `vici:"local_addrs"`
	RemoteAddrs []string            `vici:"remote_addrs"`
	Proposals   []string            `vici:"proposals"`
	RekeyTime   string              `vici:"rekey_time"`
	DPDDelay    string              `vici:"dpd_delay"`
	Unique      string              `vici:"unique"`
	Mobike      string              `vici:"mobike"`
	Fragment    string              `vici:"fragmentation"`
	KeyingTries int                 `vici:"keyingtries"`
	Local       authMsg             `vici:"local-psk"`
	Remote      authMsg             `vici:"remote-psk"`
	Children    map[string]childMsg `vici:"children"`
}

type authMsg struct {
	Auth string `vici:"auth"`
	ID   string `vici:"id"`
}

type childMsg struct {
	LocalTS      []string `vici:"local_ts"`
	RemoteTS     []string `vici:"remote_ts"`
	ESPProposals []string `vici:"esp_proposals"`
	RekeyTime    string   `vici:"rekey_time"`
	ReplayWindow int      `vici:"replay_window"`
	Mode         string   `vici:"mode"`
	DPDAction    string   `vici:"dpd_action"`
	StartAction  string   `vici:"start_action"`
	CloseAction  string   `vici:"close_action"`
	// The kernel backend's xfrm interface id; nil (not sent) with
	// kernel-libipsec.
	IfIDIn  *uint32 `vici:"if_id_in"`
	IfIDOut *uint32 `vici:"if_id_out"`
}

func seconds(d time.Duration) string { return fmt.Sprintf("%ds", int64(d/time.Second)) }

// connMessage renders t as charon's connection of the same name, with one
// child SA, also of that name. With ifID 0 (kernel-libipsec) the child's
// remote selectors are [Tunnel.RemoteTS] (any-to-any for a Wide tunnel);
// otherwise (the kernel backend)
// the child is route-based: any-to-any selectors, as Magic WAN's IPsec
// tunnels have, and its states and policies bound to the xfrm interface
// with if_id ifID, so that only packets routed into that interface enter
// the tunnel. A peer that offers narrower selectors gets them (IKEv2
// narrowing), and the routes still decide.
func connMessage(t Tunnel, ifID uint32) (*vici.Message, error) {
	remote := "%any"
	if t.Remote.IsValid() {
		remote = t.Remote.String()
	}
	any := t.anyPrefix().String()
	c := connMsg{
		Version:     "2", // IKEv2 only
		LocalAddrs:  []string{t.Local.String()},
		RemoteAddrs: []string{remote},
		Proposals:   t.IKEProposals,
		RekeyTime:   seconds(t.Rekey),
		DPDDelay:    seconds(t.DPD),
		Unique:      "replace", // a branch that reconnects replaces its old SA
		Mobike:      "no",      // site to site: addresses are fixed
		Fragment:    "yes",
		KeyingTries: 1,
		Local:       authMsg{Auth: "psk", ID: t.LocalID},
		Remote:      authMsg{Auth: "psk", ID: t.RemoteID},
	}
	child := childMsg{
		LocalTS:      []string{any},
		ESPProposals: t.ESPProposals,
		RekeyTime:    seconds(t.Rekey),
		ReplayWindow: *t.ReplayWindow,
		Mode:         "tunnel",
		DPDAction:    "clear",
		StartAction:  "none",
		CloseAction:  "none",
	}
	if ifID != 0 {
		child.RemoteTS = []string{any}
		child.IfIDIn, child.IfIDOut = &ifID, &ifID
	} else {
		for _, p := range t.RemoteTS() {
			child.RemoteTS = append(child.RemoteTS, p.String())
		}
	}
	if t.Initiator {
		// Keep trying, and bring the SA back after DPD or a close.
		c.KeyingTries = 0
		child.DPDAction, child.StartAction, child.CloseAction = "restart", "start", "start"
	}
	c.Children = map[string]childMsg{t.Name: child}
	m, err := vici.MarshalMessage(c)
	if err != nil {
		return nil, fmt.Errorf("tunnel %q: render connection: %w", t.Name, err)
	}
	out := vici.NewMessage()
	if err := out.Set(t.Name, m); err != nil {
		return nil, fmt.Errorf("tunnel %q: render connection: %w", t.Name, err)
	}
	return out, nil
}

// sharedMessage is the load-shared message for t's PSK.
func sharedMessage(t Tunnel, psk []byte) (*vici.Message, error) {
	m := vici.NewMessage()
	for _, kv := range []struct {
		k string
		v any
	}{{"id", secretID(t.Name)}, {"type", "IKE"}, {"data", string(psk)}, {"owners", []string{t.LocalID, t.RemoteID}}} {
		if err := m.Set(kv.k, kv.v); err != nil {
			return nil, fmt.Errorf("tunnel %q: render secret: %w", t.Name, err)
		}
	}
	return m, nil
}

func secretID(name string) string { return "edgegw-" + name }
