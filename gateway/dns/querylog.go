package dns

import (
	"net/netip"
	"strconv"
	"strings"

	mdns "github.com/miekg/dns"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// record returns the gateway_dns record of one answered query, with
// Cloudflare's field names.
func (s *Server) record(q *query, out *mdns.Msg) logpush.Record {
	var ips, cnames, countries []string
	places := s.opts.Countries
	country := func(ip []byte) {
		if places == nil {
			return
		}
		a, _ := netip.AddrFromSlice(ip)
		countries = append(countries, places.Country(a.Unmap()))
	}
	for _, rr := range out.Answer {
		switch rr := rr.(type) {
		case *mdns.A:
			ips = append(ips, rr.A.String())
			country(rr.A)
		case *mdns.AAAA:
			ips = append(ips, rr.AAAA.String())
			country(rr.AAAA)
		case *mdns.CNAME:
			cnames = append(cnames, canonical(rr.Target))
		}
	}
	qtype := q.key.qtype
	name := q.key.name
	if len(q.req.Question) > 0 && name == "" {
		name, qtype = canonical(q.req.Question[0].Name), q.req.Question[0].Qtype
	}
	var srcCountry string
	if places != nil {
		srcCountry = places.Country(q.src.Addr().Unmap())
	}
	var polID, polName string
	if q.pol != nil {
		polID, polName = q.pol.id, q.pol.name
	}
	ede := "[]"
	if len(q.ede) > 0 {
		b := []byte{'['}
		for i, e := range q.ede {
			if i > 0 {
				b = append(b, ',')
			}
			b = strconv.AppendUint(b, uint64(e.InfoCode), 10)
		}
		ede = string(append(b, ']'))
	}
	return logpush.Record{
		{Name: "Datetime", Value: logpush.Time(q.start)},
		{Name: "QueryID", Value: logpush.String(strconv.FormatUint(s.qid.Add(1), 16) + "-" + strconv.FormatInt(q.start.UnixNano(), 36))},
		{Name: "QueryName", Value: logpush.String(name)},
		{Name: "QueryNameReversed", Value: logpush.String(reverseName(name))},
		{Name: "QueryType", Value: logpush.Int(int64(qtype))},
		{Name: "QueryTypeName", Value: logpush.String(mdns.Type(qtype).String())},
		{Name: "QuerySize", Value: logpush.Int(int64(q.req.Len()))},
		{Name: "RCode", Value: logpush.Int(int64(out.Rcode))},
		{Name: "Protocol", Value: logpush.String(q.proto)},
		{Name: "SrcIP", Value: addrValue(q.src.Addr())},
		{Name: "SrcPort", Value: logpush.Int(int64(q.src.Port()))},
		{Name: "SrcIPCountryCode", Value: logpush.String(srcCountry)},
		{Name: "DstIP", Value: addrValue(q.dst.Addr())},
		{Name: "DstPort", Value: logpush.Int(int64(q.dst.Port()))},
		{Name: "ResolvedIPs", Value: logpush.Strings(ips...)},
		// One per ResolvedIPs entry, "" where the GeoIP databases do not
		// know the address; empty without databases.
		{Name: "ResolvedIPCountryCodes", Value: logpush.Strings(countries...)},
		{Name: "CNAMEs", Value: logpush.Strings(cnames...)},
		{Name: "IsResponseCached", Value: logpush.Bool(q.res.cached)},
		{Name: "EDEErrors", Value: logpush.RawJSON(ede)},
		{Name: "PolicyID", Value: logpush.String(polID)},
		{Name: "PolicyName", Value: logpush.String(polName)},
		{Name: "ResolverDecision", Value: logpush.String(q.decision)},
		{Name: "Email", Value: logpush.String(q.v.email)},
		{Name: "DeviceID", Value: logpush.String(q.v.device)},
		{Name: "ColoCode", Value: logpush.String(s.opts.ColoCode)},
		// edgegw's own: the egress address the query was resolved for
		// (and sent from, for plain DNS); empty without one.
		{Name: "EgressIP", Value: addrValue(q.key.egress)},
	}
}

func addrValue(a netip.Addr) logpush.Value {
	if !a.IsValid() {
		return logpush.Value{}
	}
	return logpush.String(a.String())
}

// reverseName turns "www.example.com" into "com.example.www".
func reverseName(name string) string {
	labels := strings.Split(name, ".")
	for i, j := 0, len(labels)-1; i < j; i, j = i+1, j-1 {
		labels[i], labels[j] = labels[j], labels[i]
	}
	return strings.Join(labels, ".")
}
