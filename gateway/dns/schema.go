package dns

import (
	"net/netip"
	"strings"
	"sync"

	mdns "github.com/miekg/dns"

	"github.com/edgegw/edgegw/firewall/rules"
)

// Field indexes of [Schema], in definition order.
const (
	fFQDN = iota
	fDomains
	fQType
	fSrc
	fEmail
	fGroups
	fSrcCountry
	fPosture // the six device.posture.* fields: fPosture … fPosture+5
	// fResolvedIPs and later fields are known after resolution; +5 skips
	// the rest of the posture fields (the schema checks the count).
	fResolvedIPs = iota + 5
	fCNAMEs
	fCNAMEDomains
	fDstCountry
	numFields
)

// Schema returns the schema of DNS policy expressions:
//
//	dns.fqdn           string   the query name, lowercase, without the final dot
//	dns.domains        strings  the name and all its parents ("a.b.c", "b.c", "c")
//	dns.qtype          16 bits  the query type; also by name: a, aaaa, txt, …
//	dns.src            IP       the client's address
//	identity.email     string   the user behind the client's address
//	identity.groups    strings  that user's groups
//	dns.src.geo.country string  the client's country (ISO 3166-1 alpha-2, upper
//	                            case) by the GeoIP databases; absent if unknown
//	device.posture.*    …       the posture of the client's device (see
//	                            rules.Posture): os, os_version, client_version,
//	                            disk_encrypted, firewall, compliant; like
//	                            identity.*, only for a query through the tunnel
//	                            of an enrolled device, and absent when unknown,
//	                            so `not device.posture.disk_encrypted` holds
//	                            for an unknown disk
//	dns.resolved_ips   IP       after resolution: an address of the answer; the
//	                            policy matches if it matches for any one of them
//	dns.cnames         strings  after resolution: every name of the CNAME chain
//	dns.cname_domains  strings  after resolution: those names and all their parents
//	dns.dst.geo.country string  after resolution: the country of an address of
//	                            the answer, tried one by one as dns.resolved_ips
//
// Policies that use the fields from dns.resolved_ips on are evaluated after
// resolution; the others before. The returned schema is shared and immutable.
func Schema() *rules.Schema { return dnsSchema() }

var dnsSchema = sync.OnceValue(func() *rules.Schema {
	consts := make(map[string]uint64, len(mdns.TypeToString))
	for t, name := range mdns.TypeToString {
		if name == "" || name == "None" || name == "Reserved" {
			continue
		}
		consts[strings.ToLower(name)] = uint64(t)
	}
	fields := []rules.Field{
		rules.Field{Name: "dns.fqdn", Type: rules.TypeString, Noun: "domain name"},
		rules.Field{Name: "dns.domains", Type: rules.TypeStrings, Noun: "domain name"},
		rules.Field{Name: "dns.qtype", Type: rules.TypeInt, Bits: 16, Noun: "query type", Consts: consts},
		rules.Field{Name: "dns.src", Type: rules.TypeIP},
		rules.Field{Name: "identity.email", Type: rules.TypeString, Noun: "email address"},
		rules.Field{Name: "identity.groups", Type: rules.TypeStrings, Noun: "group name"},
		rules.Field{Name: "dns.src.geo.country", Type: rules.TypeString, Noun: "country code"},
	}
	fields = append(fields, rules.PostureFields()...)
	fields = append(fields,
		rules.Field{Name: "dns.resolved_ips", Type: rules.TypeIP},
		rules.Field{Name: "dns.cnames", Type: rules.TypeStrings, Noun: "domain name"},
		rules.Field{Name: "dns.cname_domains", Type: rules.TypeStrings, Noun: "domain name"},
		rules.Field{Name: "dns.dst.geo.country", Type: rules.TypeString, Noun: "country code"},
	)
	s, err := rules.NewSchema(fields...)
	if err != nil {
		panic("dns: schema: " + err.Error())
	}
	if f, _ := s.Field("dns.resolved_ips"); f.Index() != fResolvedIPs || len(s.Fields()) != numFields {
		panic("dns: schema: field indexes out of step with the f… constants")
	}
	return s
})

// values are the fields of one query, as [rules.Values].
type values struct {
	fqdn    string
	domains []string
	qtype   uint16
	src     netip.Addr
	email   string
	groups  []string
	device  string        // DeviceID in the query log; no policy field yet
	posture rules.Posture // the device's, while hasID
	hasID   bool
	// geo looks up countries (nil: none); the client's is looked up once,
	// when a policy first asks.
	geo        CountryLookup
	srcCountry string
	srcLooked  bool
	resolved   bool // the fields below are set
	ips        []netip.Addr
	ip         netip.Addr // the one of ips being tried
	cnames     []string
	cdomains   []string
}

// Get implements [rules.Values].
func (v *values) Get(f *rules.Field) (rules.Value, bool) {
	switch f.Index() {
	case fFQDN:
		return rules.StringValue(v.fqdn), true
	case fDomains:
		return rules.StringsValue(v.domains...), true
	case fQType:
		return rules.IntValue(uint64(v.qtype)), true
	case fSrc:
		return rules.IPValue(v.src), v.src.IsValid()
	case fEmail:
		return rules.StringValue(v.email), v.hasID && v.email != ""
	case fGroups:
		return rules.StringsValue(v.groups...), v.hasID
	case fPosture, fPosture + 1, fPosture + 2, fPosture + 3, fPosture + 4, fPosture + 5:
		if !v.hasID {
			return rules.Value{}, false
		}
		return v.posture.Value(f.Name)
	case fSrcCountry:
		if !v.srcLooked && v.geo != nil && v.src.IsValid() {
			v.srcCountry, v.srcLooked = v.geo.Country(v.src.Unmap()), true
		}
		return rules.StringValue(v.srcCountry), v.srcCountry != ""
	case fDstCountry:
		if !v.resolved || !v.ip.IsValid() || v.geo == nil {
			return rules.Value{}, false
		}
		c := v.geo.Country(v.ip.Unmap())
		return rules.StringValue(c), c != ""
	case fResolvedIPs:
		return rules.IPValue(v.ip), v.resolved && v.ip.IsValid()
	case fCNAMEs:
		return rules.StringsValue(v.cnames...), v.resolved
	case fCNAMEDomains:
		return rules.StringsValue(v.cdomains...), v.resolved
	}
	return rules.Value{}, false
}

// canonical returns name lowercased without its final dot.
func canonical(name string) string {
	name = strings.TrimSuffix(name, ".")
	for i := 0; i < len(name); i++ {
		if c := name[i]; c >= 'A' && c <= 'Z' {
			return strings.ToLower(name)
		}
	}
	return name
}

// parents appends name and each of its parent domains to dst:
// "a.b.c" gives "a.b.c", "b.c", "c". The strings share name's memory.
func parents(dst []string, name string) []string {
	for name != "" {
		dst = append(dst, name)
		i := strings.IndexByte(name, '.')
		if i < 0 {
			break
		}
		name = name[i+1:]
	}
	return dst
}
