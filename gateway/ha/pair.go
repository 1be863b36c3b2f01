package ha

// The two halves of a pair are two files, one per node, and most of them
// must say the same thing: a standby that takes over with a different
// ruleset, WireGuard key or virtual address is not a standby. The way to
// keep them in step is to not write them twice: render both files from
// one template (Ansible, Salt, envsubst, …) in which only the per-node
// values vary (ha.priority, ha.peer, interface names, appliance.name),
// and run `edgegw check --config node-a.yaml --pair node-b.yaml` in CI and
// on each node before `systemctl reload edgegw`. The check compares what
// must match (Facts, collected by gateway.PairFacts) and what must
// complement (priorities, peers); a running node shows the digest of its
// facts in /api/v1/status (ha.config_digest), so an operator can see the
// two nodes agree without reading either file.

import (
	"crypto/sha256"
	"encoding/hex"
	"fmt"
	"net/netip"
	"slices"
	"strconv"
	"strings"

	"go.yaml.in/yaml/v3"
)

// Fact is one setting both halves of a pair must agree on.
type Fact struct {
	// Path is the configuration field the fact comes from, as the
	// configuration's errors name it (ha.vrid, firewall.rules, …); a
	// mismatch is reported at its line.
	Path string
	// Value is the setting in canonical text, or a digest of it.
	Value string
	// Digest: Value is a hash of something long (a compiled ruleset, a
	// section); a mismatch prints only its first characters.
	Digest bool
	// Secret: Value is a digest of secret content (a key, a password);
	// a mismatch never prints it.
	Secret bool
	// Refuse, when set, is a problem with this half alone in a pair
	// (SQLite as the registry, a per-node WireGuard key): it is reported
	// against this file whatever the other half says.
	Refuse string
}

// Facts are the must-match settings of the ha: section itself. The auth
// key's content is a file the caller digests (it is read with the rest of
// the configuration's files); conntrackd's sync settings are derived
// from the section (the sync interface and the peer, the fixed SyncPort),
// so nothing more of them can differ.
func (c Config) Facts() []Fact {
	c.SetDefaults()
	return []Fact{
		{Path: "ha.vrid", Value: strconv.Itoa(c.VRID)},
		{Path: "ha.vrrp_version", Value: strconv.Itoa(c.VRRPVersion)},
		{Path: "ha.advert_interval", Value: c.AdvertInterval.String()},
		{Path: "ha.preempt", Value: strconv.FormatBool(c.Preempt)},
		{Path: "ha.virtual_addresses.wan", Value: prefixList(c.VirtualAddresses.WAN)},
		{Path: "ha.virtual_addresses.lan", Value: prefixList(c.VirtualAddresses.LAN)},
	}
}

// prefixList is ps sorted, so that the order in the file does not matter.
func prefixList(ps []netip.Prefix) string {
	s := make([]string, len(ps))
	for i, p := range ps {
		s[i] = p.String()
	}
	slices.Sort(s)
	return "[" + strings.Join(s, ", ") + "]"
}

// Digest is a short digest of facts: equal on two nodes whose must-match
// settings agree. Secret facts enter as the digests they already are, so
// the result reveals no secret; the VRRPv2 password it covers travels in
// clear text in every advert anyway.
func Digest(facts []Fact) string {
	lines := make([]string, 0, len(facts))
	for _, f := range facts {
		lines = append(lines, f.Path+"="+f.Value+"\n")
	}
	slices.Sort(lines)
	h := sha256.New()
	for _, l := range lines {
		h.Write([]byte(l))
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}

// Pos is a position in a configuration file, 1-based; zero: not in the
// file (a default).
type Pos struct{ Line, Col int }

// Half is one node's file as the pair check sees it.
type Half struct {
	File  string
	HA    Config
	Facts []Fact
	// Pos maps field paths to positions (Positions of the file's text).
	Pos map[string]Pos
}

// Mismatch is one way the two halves disagree, reported at the field in
// File (the other half's position is in the message).
type Mismatch struct {
	File string
	Pos
	Path string
	Msg  string
}

// Position finds path in h, or the nearest enclosing field that is in
// the file (a defaulted vrid is reported at ha:).
func (h Half) Position(path string) Pos {
	for p := path; p != ""; {
		if pos, ok := h.Pos[p]; ok {
			return pos
		}
		i := strings.LastIndexAny(p, ".[")
		if i < 0 {
			break
		}
		p = p[:i]
	}
	return Pos{}
}

func (h Half) where(path string) string {
	p := h.Position(path)
	if p.Line == 0 {
		return h.File
	}
	return fmt.Sprintf("%s:%d:%d", h.File, p.Line, p.Col)
}

// ComparePair reports every way a and b cannot be the two nodes of one
// pair: a fact that differs or is on one side only, a fact refused in a
// pair, and the settings that must complement each other:
//
//   - ha.peer: each node names the other's sync address, so the two peers
//     differ (equal peers mean both nodes advertise to the same box). A
//     node's own sync address is read from its interface at run time and
//     is not in the file, so that is all two files show; `edgegw check
//     --pair` run on a node also checks the peers against its sync
//     interface (cmd/edgegw's onThisNode).
//   - ha.priority: equal priorities are allowed only with preempt off.
//     keepalived then breaks the tie as VRRP says (RFC 5798 §6.4.3: the
//     higher primary address on the sync link wins) at a cold start of
//     both, and after that the active node keeps the addresses until it
//     fails. With preempt on, equal priorities name no preferred node, so
//     which one "preempts" depends on addresses: refused.
func ComparePair(a, b Half) []Mismatch {
	var out []Mismatch
	add := func(h Half, path, msg string) {
		out = append(out, Mismatch{File: h.File, Pos: h.Position(path), Path: path, Msg: msg})
	}
	fb := map[string]Fact{}
	for _, f := range b.Facts {
		fb[f.Path] = f
	}
	seen := map[string]bool{}
	for _, fa := range a.Facts {
		seen[fa.Path] = true
		if fa.Refuse != "" {
			add(a, fa.Path, fa.Refuse)
		}
		g, ok := fb[fa.Path]
		switch {
		case !ok:
			add(a, fa.Path, "set here but not in "+b.File+": both nodes of a pair need it")
		case fa.Refuse != "" || g.Refuse != "":
			// refused in a pair: that says more than how the halves differ
		case g.Value != fa.Value:
			add(a, fa.Path, differ(fa, g, b.where(fa.Path)))
		}
	}
	for _, fb := range b.Facts {
		if fb.Refuse != "" {
			add(b, fb.Path, fb.Refuse)
		}
		if !seen[fb.Path] {
			add(b, fb.Path, "set here but not in "+a.File+": both nodes of a pair need it")
		}
	}
	if a.HA.Peer.IsValid() && a.HA.Peer == b.HA.Peer {
		add(a, "ha.peer", fmt.Sprintf("%s is also the peer in %s: each node names the other's own address on the sync link", a.HA.Peer, b.where("ha.peer")))
	}
	if a.HA.Priority == b.HA.Priority && (a.HA.Preempt || b.HA.Preempt) {
		add(a, "ha.priority", fmt.Sprintf("%d is also the priority in %s: with preempt on, give the preferred node the higher priority (equal priorities are allowed only with preempt off, where the higher sync address wins a cold start)", a.HA.Priority, b.where("ha.priority")))
	}
	return out
}

// differ says how two values of one fact differ, never printing a secret.
func differ(a, b Fact, there string) string {
	switch {
	case a.Secret || b.Secret:
		return "the content differs from " + there + " (compared by SHA-256, not shown)"
	case a.Digest || b.Digest:
		return fmt.Sprintf("differs from %s (digest %s here, %s there)", there, short(a.Value), short(b.Value))
	default:
		return fmt.Sprintf("%s here, %s in %s", a.Value, b.Value, there)
	}
}

func short(s string) string {
	if len(s) > 12 {
		return s[:12]
	}
	return s
}

// Positions maps the field paths of a configuration file's text
// (ha.vrid, tunnels.gre[0].local, …, as the configuration's errors name
// them) to the positions of their values. A file that is not YAML has no
// positions; its errors come from loading it.
func Positions(data []byte) map[string]Pos {
	out := map[string]Pos{}
	var doc yaml.Node
	if yaml.Unmarshal(data, &doc) != nil || len(doc.Content) == 0 {
		return out
	}
	var walk func(n *yaml.Node, path string, depth int)
	walk = func(n *yaml.Node, path string, depth int) {
		if n.Kind == yaml.AliasNode {
			n = n.Alias
		}
		if n == nil || depth > 64 { // aliases may loop; configurations are shallow
			return
		}
		if path != "" {
			out[path] = Pos{Line: n.Line, Col: n.Column}
		}
		switch n.Kind {
		case yaml.MappingNode:
			for i := 0; i+1 < len(n.Content); i += 2 {
				k := n.Content[i].Value
				if path != "" {
					k = path + "." + k
				}
				walk(n.Content[i+1], k, depth+1)
			}
		case yaml.SequenceNode:
			for i, c := range n.Content {
				walk(c, path+"["+strconv.Itoa(i)+"]", depth+1)
			}
		}
	}
	walk(doc.Content[0], "", 0)
	return out
}
