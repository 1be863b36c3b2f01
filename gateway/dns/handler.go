package dns

import (
	"errors"
	"net"
	"net/netip"
	"time"

	mdns "github.com/miekg/dns"
)

// Resolver decisions, as in the gateway_dns dataset.
const (
	decAllowNoMatch   = "allowedOnNoPolicyMatch"
	decAllowQuery     = "allowedByQueryPolicy"
	decAllowAnswer    = "allowedByAnswerPolicy"
	decBlockQuery     = "blockedByQueryPolicy"
	decBlockAnswer    = "blockedByAnswerPolicy"
	decOverride       = "overrideApplied"
	decSafeSearch     = "overrideForSafeSearch"
	decResolveFailure = "resolveFailure"
	// decRefusedUnidentified is edgegw's own: a DNS-over-TLS query
	// refused by dot.identified_only (Cloudflare has no such mode).
	decRefusedUnidentified = "refusedUnidentified"
)

// Extended DNS Error codes (RFC 8914) edgegw sets.
const (
	edeOther         = 0
	edeStale         = 3
	edeForged        = 4
	edeBlocked       = 15
	edeProhibited    = 18
	edeNoReachable   = 22
	blockTTL         = 60
	overrideTTL      = 60
	maxCNAMEsToCheck = 16
)

// query is the state of one query on its way through the handler.
type query struct {
	req      *mdns.Msg
	proto    string
	src, dst netip.AddrPort
	via      int // UDP: the arrival interface's index (IP_PKTINFO); 0 unknown
	start    time.Time
	key      cacheKey
	opt      *mdns.OPT
	v        values

	// noWait: answer only from the cache or policy, or as overloaded
	// past max_inflight; else take a slot (held) and set wouldWait.
	noWait    bool
	wouldWait bool
	held      bool // the query holds a max_inflight slot, released by finished

	done     bool // resolution attempted
	res      result
	pol      *policy
	decision string
	ede      []mdns.EDNS0_EDE

	// sc, when set, lends the answer's memory: a UDP reader's own, reused
	// once the answer is packed and logged (see scratch).
	sc *scratch
	// top, when set, is the UDP reader's pending console counts, which
	// the reader holds locked: logQuery counts the answer there.
	top *topLocal
	// counts, when set, is the UDP reader's batchCounts: the answer's
	// cache hit and rcode are counted there.
	counts *batchCounts

	// The wire fast path of a UDP reader's cached answers (wire.go):
	// qwire is the question as received (set when the reader's parser
	// took the query), rrs the cached records the answer holds, and
	// wire their packed sections once the answer is known to fit.
	qwire []byte
	rrs   *agedRRs
	wire  []byte
}

// scratch is the memory a UDP reader lends to the query it is answering,
// so that a cache hit allocates little: the answer message, its
// question, sections and OPT record, and the parent domains of the name.
// Its arrays are only ever appended to by the query that holds it;
// nothing keeps a reference once the answer is packed and logged.
type scratch struct {
	out      mdns.Msg
	opt      mdns.OPT
	question [1]mdns.Question
	answer   [8]mdns.RR
	extra    [4]mdns.RR
	options  [2]mdns.EDNS0
	domains  [8]string
}

// reply returns the empty answer to req, in q's scratch memory if it
// has any; it sets the header and question as [mdns.Msg.SetReply] does.
func (q *query) reply(req *mdns.Msg) *mdns.Msg {
	sc := q.sc
	if sc == nil {
		return new(mdns.Msg).SetReply(req)
	}
	out := &sc.out
	*out = mdns.Msg{Answer: sc.answer[:0:len(sc.answer)], Extra: sc.extra[:0:len(sc.extra)]}
	out.Id, out.Response, out.Opcode = req.Id, true, req.Opcode
	if out.Opcode == mdns.OpcodeQuery {
		out.RecursionDesired, out.CheckingDisabled = req.RecursionDesired, req.CheckingDisabled
	}
	if len(req.Question) > 0 {
		sc.question[0] = req.Question[0]
		out.Question = sc.question[:1:1]
	}
	return out
}

func (q *query) addEDE(code uint16, text string) {
	q.ede = append(q.ede, mdns.EDNS0_EDE{InfoCode: code, ExtraText: text})
}

// ServeDNS implements [mdns.Handler].
func (s *Server) ServeDNS(w mdns.ResponseWriter, req *mdns.Msg) {
	proto := "udp"
	if _, ok := w.LocalAddr().(*net.TCPAddr); ok {
		proto = "tcp"
	}
	s.serveDNS(w, req, proto)
}

// serveDNS answers req as received over proto (udp, tcp or tls).
func (s *Server) serveDNS(w mdns.ResponseWriter, req *mdns.Msg, proto string) {
	q := &query{req: req, proto: proto, start: s.now()}
	q.src = addrPort(w.RemoteAddr())
	q.dst = addrPort(w.LocalAddr())
	defer s.finished(q)
	out := s.answer(q)
	if out == nil {
		return
	}
	if err := w.WriteMsg(out); err != nil {
		s.log.Debug("write answer", "client", q.src, "err", err)
	}
	s.logQuery(q, out)
}

// answer returns the answer to q, sized for its transport, or nil to
// drop the query. With q.noWait it returns nil and sets q.wouldWait when
// the answer needs an upstream.
func (s *Server) answer(q *query) *mdns.Msg {
	out := s.handle(s.snap.Load(), q)
	if q.wouldWait {
		return nil
	}
	if out == nil {
		s.m.malformed.Inc()
		return nil
	}
	size := mdns.MaxMsgSize
	if q.proto == "udp" {
		size = mdns.MinMsgSize
		if q.opt != nil {
			size = min(max(int(q.opt.UDPSize()), mdns.MinMsgSize), ednsSize)
		}
	}
	if q.qwire != nil && q.rrs != nil && s.fitsWire(q, out, size) {
		out.Compress = false // as Truncate leaves an answer that fits
		return out
	}
	out.Compress = true
	out.Truncate(size)
	return out
}

// finished gives back the max_inflight slot q holds, if any. The owner
// of a query calls it once the answer is written, so that slots bound the
// goroutines of waiting queries too.
func (s *Server) finished(q *query) {
	if q.held {
		s.release()
		q.held = false
	}
}

// logQuery counts an answered query and hands its record to the sink.
func (s *Server) logQuery(q *query, out *mdns.Msg) {
	if q.pol != nil {
		if c := q.pol.matched; c != nil {
			c.Inc()
		} else {
			s.m.policyMatches.WithLabelValues(q.pol.id).Inc()
		}
	}
	var now time.Time
	if q.counts != nil {
		// A UDP reader's answer leaves with its batch: the batch's
		// duration is observed for it then (batchCounts).
		now = q.start
		q.counts.answered++
	} else {
		now = s.now()
	}
	s.m.observe(q, out, now.Sub(q.start))
	if q.v.fqdn != "" {
		user := ""
		if q.v.hasID {
			user = q.v.email
		}
		blocked := q.decision == decBlockQuery || q.decision == decBlockAnswer
		if q.top != nil {
			q.top.add(now, q.v.fqdn, user, blocked)
		} else {
			s.top.add(now, q.v.fqdn, user, blocked)
		}
	}
	if s.opts.Sink != nil {
		s.opts.Sink.Push("gateway_dns", s.record(q, out))
	}
}

func addrPort(a net.Addr) netip.AddrPort {
	switch a := a.(type) {
	case *net.UDPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	case *net.TCPAddr:
		ap := a.AddrPort()
		return netip.AddrPortFrom(ap.Addr().Unmap(), ap.Port())
	}
	return netip.AddrPort{}
}

// handle decides the answer to q.req: nil to drop it.
func (s *Server) handle(snap *snapshot, q *query) *mdns.Msg {
	req := q.req
	if req.Response {
		return nil
	}
	out := q.reply(req)
	out.RecursionAvailable = true
	if req.Opcode != mdns.OpcodeQuery {
		out.Rcode = mdns.RcodeNotImplemented
		return out
	}
	if len(req.Question) != 1 {
		out.Rcode = mdns.RcodeFormatError
		return out
	}
	q.opt = req.IsEdns0()
	if q.opt != nil && q.opt.Version() != 0 {
		out.SetEdns0(ednsSize, false)
		out.Rcode = mdns.RcodeBadVers
		return out
	}
	qq := req.Question[0]
	q.key = cacheKey{
		name: canonical(qq.Name), qtype: qq.Qtype, qclass: qq.Qclass,
		do: q.opt != nil && q.opt.Do(), cd: req.CheckingDisabled,
	}
	if qq.Qtype == mdns.TypeAXFR || qq.Qtype == mdns.TypeIXFR {
		out.Rcode = mdns.RcodeRefused
		return s.finish(q, out)
	}
	v := &q.v
	v.fqdn = q.key.name
	if q.sc != nil {
		v.domains = parents(q.sc.domains[:0:len(q.sc.domains)], v.fqdn)
	} else {
		v.domains = parents(make([]string, 0, 4), v.fqdn)
	}
	v.qtype = qq.Qtype
	v.src = q.src.Addr()
	v.geo, v.srcCountry, v.srcLooked = s.opts.Countries, "", false
	id, hasID := s.identify(q)
	if hasID {
		v.hasID = true
		v.email, v.groups, v.device = id.Email, id.Groups, id.DeviceID
	}
	v.posture = id.Posture // zero without an identity
	// Resolved as from the client's egress (egress.go).
	q.key.egress = s.egressOf(v.src, id, hasID)
	if q.proto == "tls" && !v.hasID && snap.cfg.DoT != nil && snap.cfg.DoT.IdentifiedOnly {
		out.Rcode = mdns.RcodeRefused
		q.decision = decRefusedUnidentified
		q.addEDE(edeProhibited, "DNS over TLS is for identified clients only")
		return s.finish(q, out)
	}

	for _, p := range snap.policies {
		if p.after && !q.done {
			if s.resolveInto(snap, q); q.wouldWait {
				return nil
			}
		}
		if !p.matches(v) {
			continue
		}
		q.pol = p
		switch p.act {
		case actBlock:
			q.decision = decBlockQuery
			if p.after {
				q.decision = decBlockAnswer
			}
			q.addEDE(edeBlocked, "blocked by policy "+p.id)
			return s.finish(q, s.blockAnswer(snap, q, out))
		case actOverride:
			q.decision = decOverride
			q.addEDE(edeForged, "overridden by policy "+p.id)
			if p.target != "" {
				if out = s.rewrite(snap, q, out, p.target); out == nil {
					return nil
				}
				return s.finish(q, out)
			}
			for _, a := range p.addrs {
				if rr := addrRR(qq.Name, a, qq.Qtype, overrideTTL); rr != nil {
					out.Answer = append(out.Answer, rr)
				}
			}
			return s.finish(q, out)
		case actSafeSearch:
			if t := safeSearchTarget(v.fqdn); t != "" {
				q.decision = decSafeSearch
				q.addEDE(edeForged, "safe search by policy "+p.id)
				if out = s.rewrite(snap, q, out, t); out == nil {
					return nil
				}
				return s.finish(q, out)
			}
		}
		q.decision = decAllowQuery
		if p.after {
			q.decision = decAllowAnswer
		}
		break
	}
	if q.pol == nil {
		q.decision = decAllowNoMatch
	}
	if !q.done {
		if s.resolveInto(snap, q); q.wouldWait {
			return nil
		}
	}
	return s.finish(q, s.fromResult(q, out, q.res))
}

// identify returns the identity of q's client: the one the
// IdentitySource has for its address, if q came through the interface
// that owns that address (see [arrival]). A query that carries a tunnel
// address from anywhere else gets none and is counted.
func (s *Server) identify(q *query) (Identity, bool) {
	ids := s.opts.IdentitySource
	src := q.src.Addr()
	if ids == nil || !src.IsValid() {
		return Identity{}, false
	}
	id, ok := ids.Identify(src)
	if !ok {
		return Identity{}, false
	}
	if id.Interface != "" {
		now := s.now()
		a := s.arrival.Load()
		idx := q.via
		if q.proto != "udp" {
			idx = a.routeIf(src, q.dst.Addr(), now)
		}
		if idx > 0 && a.ifName(idx, now) == id.Interface {
			return id, true
		}
	}
	s.m.unidentified.WithLabelValues(q.proto).Inc()
	return Identity{}, false
}

// matches evaluates the policy; one with dns.resolved_ips matches if it
// matches for any one address of the answer.
func (p *policy) matches(v *values) bool {
	if !p.after || len(v.ips) == 0 {
		v.ip = netip.Addr{}
		return p.prog.Eval(v)
	}
	for _, ip := range v.ips {
		v.ip = ip
		if p.prog.Eval(v) {
			return true
		}
	}
	return false
}

// resolveInto resolves q's question and fills the after-resolution fields.
func (s *Server) resolveInto(snap *snapshot, q *query) {
	q.done = true
	q.res = s.resolve(snap, q.key, q)
	if q.wouldWait {
		return
	}
	v := &q.v
	v.resolved = true
	if q.res.msg == nil {
		return
	}
	if e := q.res.e; e != nil {
		v.ips, v.cnames = e.ips, e.cnames
	} else {
		v.ips, v.cnames = answerData(q.res.msg)
	}
	for i, c := range v.cnames {
		if i == maxCNAMEsToCheck {
			break
		}
		v.cdomains = parents(v.cdomains, c)
	}
}

// fromResult copies a resolution result into out.
func (s *Server) fromResult(q *query, out *mdns.Msg, res result) *mdns.Msg {
	if res.msg == nil {
		out.Rcode = mdns.RcodeServerFailure
		q.decision = decResolveFailure
		if errors.Is(res.err, errOverloaded) {
			q.addEDE(edeOther, "resolver busy: too many queries waiting for upstreams")
		} else {
			q.addEDE(edeNoReachable, "no upstream answered")
		}
		return out
	}
	m := res.msg
	out.Rcode = m.Rcode
	out.AuthenticatedData = m.AuthenticatedData && (q.key.do || q.req.AuthenticatedData)
	var fixed uint32
	if res.stale {
		fixed = staleTTL
		q.addEDE(edeStale, "")
	}
	if res.e != nil && fixed == 0 {
		// Records are never modified once cached: share them (those of
		// the entry itself within its first second, then copies aged a
		// second at a time), and note which, for their wire form.
		var a *agedRRs
		if res.age < time.Second {
			a = res.e.fresh()
		} else {
			a = res.e.agedBy(res.age)
		}
		out.Answer = append(out.Answer, a.answer...)
		out.Ns = append(out.Ns, a.ns...)
		out.Extra = append(out.Extra, a.extra...)
		q.rrs = a
		return out
	}
	if res.age < time.Second && fixed == 0 {
		// Records are never modified once received: share them.
		out.Answer = append(out.Answer, m.Answer...)
		out.Ns = append(out.Ns, m.Ns...)
		out.Extra = append(out.Extra, m.Extra...)
		return out
	}
	out.Answer = append(out.Answer, ageTTLs(m.Answer, res.age, fixed)...)
	out.Ns = ageTTLs(m.Ns, res.age, fixed)
	out.Extra = ageTTLs(m.Extra, res.age, fixed)
	return out
}

// blockAnswer makes out the block response of the configured kind.
func (s *Server) blockAnswer(snap *snapshot, q *query, out *mdns.Msg) *mdns.Msg {
	out.Answer, out.Ns, out.Extra = nil, nil, nil
	name := q.req.Question[0].Name
	switch {
	case snap.block == "refused":
		out.Rcode = mdns.RcodeRefused
	case snap.block == "zero_ip" && q.key.qtype == mdns.TypeA:
		out.Answer = []mdns.RR{addrRR(name, netip.IPv4Unspecified(), mdns.TypeA, blockTTL)}
	case snap.block == "zero_ip" && q.key.qtype == mdns.TypeAAAA:
		out.Answer = []mdns.RR{addrRR(name, netip.IPv6Unspecified(), mdns.TypeAAAA, blockTTL)}
	default:
		out.Rcode = mdns.RcodeNameError
	}
	return out
}

// rewrite answers with a CNAME to target followed by target's answer.
func (s *Server) rewrite(snap *snapshot, q *query, out *mdns.Msg, target string) *mdns.Msg {
	qq := q.req.Question[0]
	out.Answer = []mdns.RR{&mdns.CNAME{
		Hdr:    mdns.RR_Header{Name: qq.Name, Rrtype: mdns.TypeCNAME, Class: mdns.ClassINET, Ttl: overrideTTL},
		Target: target,
	}}
	if qq.Qtype == mdns.TypeCNAME {
		return out
	}
	key := q.key
	key.name = canonical(target)
	res := s.resolve(snap, key, q)
	if q.wouldWait {
		return nil
	}
	q.res = res
	q.done = true
	return s.fromResult(q, out, res)
}

// addrRR returns an A or AAAA record for a if it fits qtype, else nil.
func addrRR(name string, a netip.Addr, qtype uint16, ttl uint32) mdns.RR {
	h := mdns.RR_Header{Name: name, Class: mdns.ClassINET, Ttl: ttl}
	switch {
	case a.Is4() && qtype == mdns.TypeA:
		h.Rrtype = mdns.TypeA
		return &mdns.A{Hdr: h, A: net.IP(a.AsSlice())}
	case a.Is6() && qtype == mdns.TypeAAAA:
		h.Rrtype = mdns.TypeAAAA
		return &mdns.AAAA{Hdr: h, AAAA: net.IP(a.AsSlice())}
	}
	return nil
}

// finish adds edgegw's OPT record, with any Extended DNS Errors, when the
// client used EDNS.
func (s *Server) finish(q *query, out *mdns.Msg) *mdns.Msg {
	if q.opt == nil {
		return out
	}
	var o *mdns.OPT
	if q.sc != nil {
		o = &q.sc.opt
		*o = mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}, Option: q.sc.options[:0:len(q.sc.options)]}
	} else {
		o = &mdns.OPT{Hdr: mdns.RR_Header{Name: ".", Rrtype: mdns.TypeOPT}}
	}
	o.SetUDPSize(ednsSize)
	if q.key.do {
		o.SetDo()
	}
	for i := range q.ede {
		o.Option = append(o.Option, &q.ede[i])
	}
	out.Extra = append(out.Extra, o)
	return out
}
