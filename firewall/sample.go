package firewall

import (
	"crypto/sha256"
	"encoding/hex"
	"errors"
	"fmt"
	"strconv"
	"strings"

	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Flow sampling
//
// With Spec.Sampling on, the base chain sends 1 in Rate packets (numgen
// random mod Rate == 0) to "s_rules", a copy of the whole rule structure
// (chains s_<name>, verdict maps s_<name>) that logs to NFLOG group Group
// right before every verdict, with the prefix "ef/<n>/<v>":
//
//   - n is the 1-based position in Config.Rules of the rule whose verdict
//     it is (RuleInfo.Position, [Ruleset.ByPosition]), 0 when no rule
//     matched and the default allows;
//   - v is "a" when the packet passes (allow, no match, within a rate
//     limit) and "b" when it is dropped (block, over a rate limit).
//
// The copy shares counters, sets and rate-limit meters with the original,
// so a sampled packet is counted and limited exactly as any other, and
// every sampled packet is logged exactly once. The chain runs before
// conntrack, so packets the rules drop are sampled too. A packet that is
// not sampled pays for one numgen and one compare. Loopback traffic is
// exempt from the rules and not sampled.

// Sampling selects flow sampling into NFLOG.
type Sampling struct {
	Rate  int    // 1 in Rate packets; 0: off
	Group uint16 // the NFLOG group the samples go to
}

// DefaultSamplingGroup is the NFLOG group edgegw samples into unless
// configured otherwise.
const DefaultSamplingGroup uint16 = 6100

// SampleChain is the chain sampled packets enter: the copy of the base
// chain.
const SampleChain = "s_" + RulesChain

// SampleVerdict is what a sample's NFLOG prefix says: the verdict the
// firewall gave the sampled packet. The firewall writes it
// (SampleVerdict.Prefix) and the flow sampler reads it
// (ParseSamplePrefix): one type, so the two cannot drift apart.
type SampleVerdict struct {
	Rule    int  // 1-based rule position; 0: no rule matched (default allow)
	Dropped bool // "b"; "a" is passed
}

// Prefix is the NFLOG prefix "ef/<n>/<a|b>".
func (v SampleVerdict) Prefix() string {
	s := "a"
	if v.Dropped {
		s = "b"
	}
	return "ef/" + strconv.Itoa(v.Rule) + "/" + s
}

// SamplePrefix is the NFLOG prefix of a sample: rule position n (0: none
// matched) and whether the packet passed.
func SamplePrefix(n int, passed bool) string {
	return SampleVerdict{Rule: n, Dropped: !passed}.Prefix()
}

// ErrNotSample is the error for an NFLOG prefix that is not a sample of
// edgegw's firewall (another program logging to the same group).
var ErrNotSample = errors.New("prefix is not edgegw's ef/<n>/<a|b>")

// ParseSamplePrefix reads an NFLOG prefix "ef/<n>/<a|b>". The prefix
// arrives from the kernel with each sample; anything else logging to the
// group gets ErrNotSample.
func ParseSamplePrefix(s string) (SampleVerdict, error) {
	rest, ok := strings.CutPrefix(s, "ef/")
	if !ok {
		return SampleVerdict{}, ErrNotSample
	}
	num, v, ok := strings.Cut(rest, "/")
	if !ok || num == "" || len(num) > 6 || (len(num) > 1 && num[0] == '0') {
		return SampleVerdict{}, ErrNotSample
	}
	n, err := strconv.Atoi(num)
	if err != nil || n < 0 {
		return SampleVerdict{}, ErrNotSample
	}
	switch v {
	case "a":
		return SampleVerdict{Rule: n}, nil
	case "b":
		return SampleVerdict{Rule: n, Dropped: true}, nil
	}
	return SampleVerdict{}, ErrNotSample
}

func sampledName(name string) string { return "s_" + name }

// sampler builds the sampled copy of a ruleset.
type sampler struct {
	group  uint16
	owners map[string]int // counter or chain → rule position
	maps   map[string]*Set
	chains map[string]*Chain
}

func (sm *sampler) log(n int, passed bool) *expr.Log {
	return &expr.Log{
		Key:   1<<unix.NFTA_LOG_GROUP | 1<<unix.NFTA_LOG_PREFIX,
		Group: sm.group,
		Data:  []byte(SamplePrefix(n, passed)),
	}
}

// defaultRule logs and accepts what no rule matched.
func (sm *sampler) defaultRule() []expr.Any {
	return []expr.Any{sm.log(0, true), verdict(expr.VerdictAccept, "")}
}

// sampleRules returns the sampled copy of a ruleset's base rules, chains
// and verdict maps: the chains to add, starting with SampleChain, and the
// verdict maps to add. A nil rs gives a SampleChain that only logs the
// default.
func sampleRules(rs *Ruleset, smp Sampling) ([]Chain, []Set) {
	sm := &sampler{group: smp.Group, owners: map[string]int{}, maps: map[string]*Set{}, chains: map[string]*Chain{}}
	var base [][]expr.Any
	var chains []Chain
	var sets []Set
	if rs != nil {
		sm.owners, base, chains, sets = rs.owners, rs.base, rs.chains, rs.sets
	}
	for i := range sets {
		if sets[i].Map {
			sm.maps[sets[i].Name] = &sets[i]
		}
	}
	for i := range chains {
		sm.chains[chains[i].Name] = &chains[i]
	}
	tails := sm.tails(base)
	out := []Chain{{Name: SampleChain, Rules: sm.copyRules(base, 0)}}
	out[0].Rules = append(out[0].Rules, sm.defaultRule())
	for _, ch := range chains {
		c := Chain{Name: sampledName(ch.Name), Rules: sm.copyRules(ch.Rules, sm.owners[ch.Name])}
		if tails[ch.Name] && !endsInVerdict(ch.Rules) {
			c.Rules = append(c.Rules, sm.defaultRule())
		}
		out = append(out, c)
	}
	var maps []Set
	for _, s := range sets {
		if !s.Map {
			continue
		}
		m := Set{Name: sampledName(s.Name), Key: s.Key, Map: true}
		for _, e := range s.Elements {
			v := *e.VerdictData
			v.Chain = sampledName(v.Chain)
			e.VerdictData = &v
			m.Elements = append(m.Elements, e)
		}
		maps = append(maps, m)
	}
	return out, maps
}

// tails returns the chains whose end ends the packet's walk through the
// rules, so the default applies there: those entered by goto (directly or
// through a verdict map) from the base chain or from another such chain.
// Chains entered by jump return to their caller.
func (sm *sampler) tails(base [][]expr.Any) map[string]bool {
	tails := map[string]bool{}
	var visit func(rules [][]expr.Any)
	enter := func(name string) {
		if ch, ok := sm.chains[name]; ok && !tails[name] {
			tails[name] = true
			visit(ch.Rules)
		}
	}
	visit = func(rules [][]expr.Any) {
		for _, r := range rules {
			for _, e := range r {
				switch e := e.(type) {
				case *expr.Verdict:
					if e.Kind == expr.VerdictGoto {
						enter(e.Chain)
					}
				case *expr.Lookup:
					if m, ok := sm.maps[e.SetName]; ok && e.IsDestRegSet {
						for _, el := range m.Elements {
							if el.VerdictData.Kind == expr.VerdictGoto {
								enter(el.VerdictData.Chain)
							}
						}
					}
				}
			}
		}
	}
	visit(base)
	return tails
}

// endsInVerdict reports whether the last rule always ends the chain: no
// match before its verdict.
func endsInVerdict(rules [][]expr.Any) bool {
	if len(rules) == 0 {
		return false
	}
	for _, e := range rules[len(rules)-1] {
		switch e := e.(type) {
		case *expr.Objref, *expr.Counter:
		case *expr.Verdict:
			return e.Kind == expr.VerdictAccept || e.Kind == expr.VerdictDrop || e.Kind == expr.VerdictGoto
		default:
			return false
		}
	}
	return false
}

// copyRules returns rules with every chain and verdict map renamed to its
// sampled copy and a log before every accept and drop, naming the rule
// whose counter the nft rule carries, else owner.
func (sm *sampler) copyRules(rules [][]expr.Any, owner int) [][]expr.Any {
	out := make([][]expr.Any, 0, len(rules))
	for _, r := range rules {
		n := owner
		for _, e := range r {
			if o, ok := e.(*expr.Objref); ok {
				n = sm.owners[o.Name]
			}
		}
		c := make([]expr.Any, 0, len(r)+1)
		for _, e := range r {
			switch e := e.(type) {
			case *expr.Verdict:
				switch e.Kind {
				case expr.VerdictAccept:
					c = append(c, sm.log(n, true), e)
				case expr.VerdictDrop:
					c = append(c, sm.log(n, false), e)
				case expr.VerdictJump, expr.VerdictGoto:
					c = append(c, verdict(e.Kind, sampledName(e.Chain)))
				default:
					c = append(c, e)
				}
			case *expr.Lookup:
				if _, ok := sm.maps[e.SetName]; ok && e.IsDestRegSet {
					l := *e
					l.SetName = sampledName(e.SetName)
					c = append(c, &l)
					continue
				}
				c = append(c, e)
			default:
				c = append(c, e)
			}
		}
		out = append(out, c)
	}
	return out
}

// sampleEntry is the base-chain rule that sends 1 in rate packets to the
// sampled copy.
func sampleEntry(rate int) []expr.Any {
	return []expr.Any{
		&expr.Numgen{Register: 1, Modulus: uint32(rate), Type: unix.NFT_NG_RANDOM},
		&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0, 0, 0, 0}},
		verdict(expr.VerdictGoto, SampleChain),
	}
}

// ID is a stable identifier of the ruleset's content, 32 hex digits like
// Cloudflare's RulesetID: the same rules (position, id, action, rate and
// expression) give the same ID, whatever the lists hold. The ID of a nil
// Ruleset is "".
func (r *Ruleset) ID() string {
	if r == nil {
		return ""
	}
	h := sha256.New()
	for i, ri := range r.rules {
		fmt.Fprintf(h, "%d\x00%s\x00%s\x00%s\x00%s\x00", ri.Position, ri.ID, ri.Action, ri.Rate, r.progs[i].Expr)
	}
	return hex.EncodeToString(h.Sum(nil)[:16])
}
