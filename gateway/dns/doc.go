// Package dns is Gateway DNS: a filtering, caching DNS forwarder with
// identity-aware policies that resolves from the egress location.
//
// A [Server] answers on UDP and TCP, DNS over TLS on the dot.listen
// addresses (or through [Server.ServeDoT] on the owner's listener) and
// DNS over HTTPS through [Server.DoHHandler], which the owner mounts at
// /dns-query on the Access listener for enrolled devices only
// ([DoHIdentifiedOnly]). Who is behind a client address (email, groups,
// device) and which interface owns that address comes from the owner's
// [IdentitySource]; a query carries the identity only if it came through
// that interface (the WireGuard interface): UDP by the datagram's arrival
// interface (IP_PKTINFO), TCP, DoT and DoH by the route back to the
// client, through which the handshake had to complete. A bare source
// address from the LAN or the WAN never carries one, and with
// dot.identified_only such a client's DNS over TLS is refused. UDP uses
// one SO_REUSEPORT socket per CPU with batched reads and writes (recvmmsg,
// sendmmsg) for every answer that needs no upstream, and each reader
// answers cache hits in memory it reuses (one allocation a hit); TCP and
// TLS are served by github.com/miekg/dns.
//
// Upstream work is bounded: at most max_inflight client queries (default
// 1000) wait for upstreams at once, each holding one goroutine and at
// most one socket; past that a query gets its stale cached answer, if
// any, or SERVFAIL with an Extended DNS Error at once. A flood of random
// names under a zone whose authority never answers so costs the reader
// one cheap answer each, and cached answers keep flowing. It forwards
// to plain DNS, DNS-over-TLS (tls://) and DNS-over-HTTPS (https://, RFC
// 8484) upstreams in order, passing over failing ones for a backoff. Queries go
// upstream as fresh messages: the client's RD, CD and DO bits, a 1232-byte
// EDNS size and the EDNS Client Subnet of the upstream's ecs mode (egress:
// the /24 or /56 of the client's egress address, never a private one;
// none; fixed PREFIX); the client's own options, ECS included, are never
// forwarded. Queries are resolved as from the client's egress
// ([Options.Egress], else the WAN's address followed on netlink events):
// plain-DNS queries are sent from it, answers are cached per egress, and
// gateway_dns records carry it as EgressIP (egress.go). DNSSEC records pass through to clients that set DO.
//
// Answers are cached by name, type, class, DO and CD, within a memory
// bound: positive answers for their smallest TTL, negative ones per RFC
// 2308; popular names are refreshed before they expire, and expired
// answers are served for a day (RFC 8767) when every upstream fails.
//
// Policies are expressions of the rules language over [Schema], in order,
// first match wins, default allow. Policies on dns.resolved_ips,
// dns.cnames, dns.cname_domains or dns.dst.geo.country are evaluated
// after resolution, the others before; the query is resolved when the first such policy is
// reached. Actions: allow, block (0.0.0.0 or :: for A and AAAA, NXDOMAIN
// otherwise, or as block_response says), override (addresses, or a CNAME
// to a name) and safe_search (Google, Bing, DuckDuckGo, Yandex, YouTube
// via CNAME to their restricted endpoints). Blocks and rewrites carry an
// Extended DNS Error (RFC 8914) naming the policy.
//
// Domain lists ($name in expressions) are read from files of plain names,
// hosts entries or adblock ||name^ rules, and swapped atomically on
// refresh and reload; an unreadable file keeps the last good copy.
//
// Every answer becomes a gateway_dns record for Logpush, with Cloudflare's
// field names, and feeds Prometheus metrics.
package dns
