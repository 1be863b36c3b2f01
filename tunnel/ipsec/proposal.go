package ipsec

import (
	"fmt"
	"slices"
	"strings"
)

// The Magic WAN IPsec profile, as strongSwan proposal keywords. edgegw
// accepts nothing outside it, so that a tunnel that works against edgegw
// also works against Cloudflare, and a typo is caught at load time
// instead of as NO_PROPOSAL_CHOSEN at the branch.
var (
	ikeEncryption = []string{"aes128gcm16", "aes256gcm16", "aes256"}
	espEncryption = []string{"aes128gcm16", "aes256gcm16", "aes128", "aes256"}
	integrity     = []string{"sha256"}
	prfs          = []string{"prfsha256", "prfsha384", "prfsha512"}
	dhGroups      = []string{"modp2048", "ecp256", "ecp384"} // DH 14, 19, 20
)

// Proposal is one parsed IKE or ESP proposal.
type Proposal struct {
	Encryption string // aes256gcm16 …
	Integrity  string // sha256 for CBC ciphers, "" for AEAD
	PRF        string // IKE only; "" means derived from Integrity
	DH         string // the key exchange (ESP: PFS group, "" for none)
}

func isAEAD(enc string) bool { return strings.Contains(enc, "gcm") }

// ParseProposal checks a strongSwan proposal string against the profile
// for ike (true) or esp (false) and returns its parts. The error says
// which keyword is wrong and what the profile allows.
func ParseProposal(s string, ike bool) (Proposal, error) {
	kind, encs := "ESP", espEncryption
	if ike {
		kind, encs = "IKE", ikeEncryption
	}
	allowed := fmt.Sprintf("encryption %s, integrity %s", strings.Join(encs, "|"), strings.Join(integrity, "|"))
	if ike {
		allowed += ", PRF " + strings.Join(prfs, "|")
	}
	allowed += ", DH " + strings.Join(dhGroups, "|")
	if s == "" {
		return Proposal{}, fmt.Errorf("empty %s proposal", kind)
	}
	var p Proposal
	set := func(slot *string, what, kw string) error {
		if *slot != "" {
			return fmt.Errorf("%s proposal %q names two %s algorithms (%s and %s)", kind, s, what, *slot, kw)
		}
		*slot = kw
		return nil
	}
	for _, kw := range strings.Split(s, "-") {
		var err error
		switch {
		case slices.Contains(encs, kw):
			err = set(&p.Encryption, "encryption", kw)
		case slices.Contains(integrity, kw):
			err = set(&p.Integrity, "integrity", kw)
		case ike && slices.Contains(prfs, kw):
			err = set(&p.PRF, "PRF", kw)
		case slices.Contains(dhGroups, kw):
			err = set(&p.DH, "DH", kw)
		case !ike && kw == "noesn":
			// ESN off is what the profile requires; saying so is fine.
		case !ike && kw == "esn":
			err = fmt.Errorf("ESP proposal %q: extended sequence numbers must be off in the Magic WAN profile", s)
		default:
			err = fmt.Errorf("%s proposal %q: %q is not in the Magic WAN profile (%s)", kind, s, kw, allowed)
		}
		if err != nil {
			return Proposal{}, err
		}
	}
	switch {
	case p.Encryption == "":
		return Proposal{}, fmt.Errorf("%s proposal %q has no encryption algorithm (%s)", kind, s, allowed)
	case isAEAD(p.Encryption) && p.Integrity != "":
		return Proposal{}, fmt.Errorf("%s proposal %q: %s is authenticated encryption and takes no integrity algorithm", kind, s, p.Encryption)
	case !isAEAD(p.Encryption) && p.Integrity == "":
		return Proposal{}, fmt.Errorf("%s proposal %q: %s needs an integrity algorithm (sha256)", kind, s, p.Encryption)
	case ike && p.DH == "":
		return Proposal{}, fmt.Errorf("IKE proposal %q has no DH group (%s)", s, strings.Join(dhGroups, "|"))
	case ike && isAEAD(p.Encryption) && p.PRF == "":
		return Proposal{}, fmt.Errorf("IKE proposal %q: AES-GCM needs a PRF (%s)", s, strings.Join(prfs, "|"))
	}
	return p, nil
}
