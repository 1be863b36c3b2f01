// Package netflow turns the packets edgegw's firewall samples into
// Cloudflare network_analytics_logs records.
//
// The kernel does the sampling: with sampling on, the firewall's nft table
// sends 1 in sample_rate packets through a copy of the rules that logs each
// verdict to an NFLOG group with the prefix "ef/<n>/<a|b>" (n the 1-based
// position of the rule whose verdict it is, 0 for the default allow; a
// passed, b dropped; firewall.SampleVerdict writes and reads it). The
// chain runs at prerouting before conntrack, so packets the rules drop are
// sampled too.
//
// A [Sampler] binds that group (github.com/florianl/go-nflog/v2) with
// per-group sequence numbers: a gap in them is a sample the kernel could
// not deliver (the socket buffer was full), counted in
// edgegw_netflow_samples_lost_total; each ENOBUFS is counted too. For each
// sample it decodes the packet ([DecodePacket]: IPv4, IPv6 with extension
// headers, TCP with options, UDP, ICMP, ICMPv6, and GRE with the inner
// IPv4/IPv6 packet), names it from immutable snapshots the owner swaps
// atomically (the ruleset: [Rules]; interfaces: [Interfaces]; who is
// behind a source address: [Identities]) and pushes one record to a
// logpush.Sink. Malformed packets are counted by reason and dropped.
//
// Records carry Cloudflare's field names and types; fields that do not
// apply to a packet are left out. For a GRE packet that carries IP, the IP
// and transport fields describe the inner packet and edgegw's
// OuterIPSourceAddress/OuterIPDestinationAddress the outer one. edgegw's
// own fields: TunnelName (the ingress interface, when it is a tunnel),
// Email and DeviceID (the enrolled device behind the source address).
// Direction is ingress for packets entering on the WAN, egress for those
// entering from the LAN or a tunnel.
//
// Run owns the reader goroutine: it returns once the library's reader has
// stopped reading, and closes the socket, which unbinds the group.
package netflow
