package gateway

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"fmt"
	"net"
	"net/url"
	"os"
	"slices"
	"strings"

	"github.com/edgegw/edgegw/gateway/ha"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// pairSections are the sections whose named files (keys, secrets, lists,
// certificates) must have the same content on both nodes: the pair's
// WireGuard key, VRRP password, Access keys and certificates, identity
// providers' secrets, firewall and DNS lists, tunnels' PSKs. Logpush
// tokens are left out: each node delivers its own spool.
var pairSections = []string{"ha", "firewall", "gateway.dns", "access", "identity", "tunnels", "scim"}

// PairFacts are the settings of p that must be the same on both nodes of
// an HA pair (see gateway/ha/pair.go for how they are compared and kept in
// step). Interface names, the priority, the peer, the appliance's name and
// the Logpush destinations and tokens may differ. Nil when p has no ha:
// section. With skipFiles no named file is read: their contents are left
// out of the comparison.
func PairFacts(p *Plan, skipFiles bool) ([]ha.Fact, error) {
	cfg := p.Config
	if cfg.HA == nil {
		return nil, nil
	}
	facts := cfg.HA.Facts()
	digest := func(path string, v any) error {
		b, err := json.Marshal(v)
		if err != nil {
			return fmt.Errorf("pair facts: %s: %w", path, err)
		}
		sum := sha256.Sum256(b)
		facts = append(facts, ha.Fact{Path: path, Value: hex.EncodeToString(sum[:16]), Digest: true})
		return nil
	}

	// The compiled ruleset (its ID hashes every rule's position, id,
	// action, rate and compiled expression), and what the rules use.
	if f := cfg.Firewall; f != nil {
		facts = append(facts, ha.Fact{Path: "firewall.rules", Value: p.Firewall.Rules.ID(), Digest: true})
		if err := digest("firewall.lists", f.Lists); err != nil {
			return nil, err
		}
		if err := digest("firewall.egress", f.Egress); err != nil {
			return nil, err
		}
		if err := digest("firewall.geoip", f.GeoIP); err != nil {
			return nil, err
		}
	}
	if d := cfg.Gateway.DNS; d != nil {
		if err := digest("gateway.dns.policies", d.Policies); err != nil {
			return nil, err
		}
		if err := digest("gateway.dns.lists", d.Lists); err != nil {
			return nil, err
		}
	}
	if wg := cfg.Tunnels.WireGuard; wg != nil {
		facts = append(facts,
			ha.Fact{Path: "tunnels.wireguard.listen_port", Value: fmt.Sprint(wg.ListenPort)},
			ha.Fact{Path: "tunnels.wireguard.address", Value: wg.Address.String()})
		if err := digest("tunnels.wireguard.peers", wg.Peers); err != nil {
			return nil, err
		}
		if err := digest("tunnels.wireguard.enrollment", wg.Enrollment); err != nil {
			return nil, err
		}
		key := ha.Fact{Path: "tunnels.wireguard.private_key_file"}
		if wg.PrivateKeyFile == "" {
			// The default key is made by each node in its own state dir:
			// a user's wg-quick file would work against one node only.
			key.Refuse = "a pair answers remote users with one WireGuard key: set private_key_file to the same key on both nodes"
		} else if !skipFiles {
			pub, err := publicKeyOf(wg.PrivateKeyFile)
			if err != nil {
				return nil, err
			}
			key.Value = pub // public: shown when the halves differ
		}
		facts = append(facts, key)
	}
	if err := digest("tunnels.gre", cfg.Tunnels.GRE); err != nil {
		return nil, err
	}
	if err := digest("tunnels.ipsec", cfg.Tunnels.IPsec); err != nil {
		return nil, err
	}
	if p.registryOn {
		facts = append(facts, storeFact(p.registry.Store))
	}
	if c := cfg.Identity; c != nil {
		if err := digest("identity.providers", c.Providers); err != nil {
			return nil, err
		}
	}
	if a := cfg.Access; a != nil {
		if err := digest("access", a); err != nil {
			return nil, err
		}
		// Without these files each node seals cookies and signs assertions
		// with keys of its own state dir: a failover would end every
		// session. Their contents are compared with the other files below.
		if a.CookieKeyFile == "" {
			facts = append(facts, ha.Fact{Path: "access.cookie_key_file", Refuse: "a pair keeps Access sessions across a failover only with the same cookie key on both nodes: set cookie_key_file (edgegw access keys)"})
		}
		if a.SigningKeyFile == "" {
			facts = append(facts, ha.Fact{Path: "access.signing_key_file", Refuse: "a pair publishes one JWKS to upstreams only with the same signing key on both nodes: set signing_key_file (edgegw access keys)"})
		}
	}
	if len(cfg.Logpush) > 0 {
		// Each node delivers its own spool, so both must export the same
		// datasets; names and destinations may differ.
		var ds []string
		for _, j := range cfg.Logpush {
			ds = append(ds, j.Dataset)
		}
		slices.Sort(ds)
		facts = append(facts, ha.Fact{Path: "logpush", Value: "datasets [" + strings.Join(slices.Compact(ds), ", ") + "]"})
	}
	if !skipFiles {
		for path, sum := range cfg.Files {
			if path == "tunnels.wireguard.private_key_file" {
				continue // compared by its public key above
			}
			if strings.HasPrefix(path, "firewall.geoip.") {
				// GeoIP databases are replaced in place by their updater on
				// each node's own schedule: the same paths are compared,
				// contents that lag for a day are not a mismatch.
				continue
			}
			for _, s := range pairSections {
				if path == s || strings.HasPrefix(path, s+".") || strings.HasPrefix(path, s+"[") {
					facts = append(facts, ha.Fact{Path: path, Value: sum, Secret: true})
					break
				}
			}
		}
	}
	slices.SortFunc(facts, func(a, b ha.Fact) int { return strings.Compare(a.Path, b.Path) })
	return facts, nil
}

// storeFact is where the device registry lives: a PostgreSQL server and
// database both nodes reach (credentials may differ and are never
// compared or shown), or a refusal for SQLite, which is a file on each
// node: devices enrolled on one would be unknown to the other.
func storeFact(store string) ha.Fact {
	f := ha.Fact{Path: "identity.store"}
	u, err := url.Parse(store)
	if store == "" || store == "sqlite" || err != nil || (u.Scheme != "postgres" && u.Scheme != "postgresql") {
		f.Value = "sqlite"
		f.Refuse = "a pair needs one device registry both nodes see: set identity.store to the same postgres:// database on both (SQLite is a file on each node)"
		return f
	}
	host, port := u.Hostname(), u.Port()
	if port == "" {
		port = "5432"
	}
	f.Value = "postgres://" + net.JoinHostPort(host, port) + "/" + strings.TrimPrefix(u.Path, "/")
	return f
}

// publicKeyOf reads a WireGuard private key file and returns its public
// key, so two nodes' keys are compared without showing either.
func publicKeyOf(path string) (string, error) {
	b, err := os.ReadFile(path)
	if err != nil {
		return "", fmt.Errorf("tunnels.wireguard.private_key_file: %w", err)
	}
	k, err := wireguard.ParseKey(strings.TrimSpace(string(b)))
	if err != nil {
		return "", fmt.Errorf("tunnels.wireguard.private_key_file %s: %w", path, err)
	}
	return k.PublicKey().String(), nil
}
