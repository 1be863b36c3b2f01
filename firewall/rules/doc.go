// Package rules implements edgegw's rules language: a wirefilter-style
// expression language shared by the firewall, Gateway DNS policies and log
// filters.
//
// An expression such as
//
//	ip.src in {10.0.0.0/8 192.168.1.1} and tcp.dstport in {22 8000..8999}
//	    and not tcp.flags.ack
//
// is compiled against a [Schema], which maps field names to types, by
// [Compile]. Compilation parses and type-checks in one pass and returns a
// [Program] holding a typed syntax tree, or an [ErrorList] of every problem
// found, each with a line, a column and a caret excerpt. The tree (see [Expr]
// and its node types) is what the nftables compiler walks; [Program.Eval]
// evaluates it in pure Go against one packet or record, without allocating.
//
// # Syntax
//
// Comparisons take a field on the left and a literal on the right:
// == != < <= > >= (or eq ne lt le gt ge), "in {…}" with values, CIDRs and
// ranges, "in $list", "contains" and, for integers, a bit mask "field & 0x02"
// before the operator. A masked field alone, "tcp.flags & 0x02", means
// "tcp.flags & 0x02 != 0". Boolean fields stand alone. Logical operators are,
// from tightest to loosest, not (!), and (&&), xor (^^) and or (||), all
// left-associative; parentheses group. Keywords are lowercase. Integers are
// decimal or 0x hexadecimal; strings are double-quoted with the escapes \" \\
// \n \r \t and \xHH; IPv4 and IPv6 addresses and CIDRs are written bare.
// The "matches" (regular expression) operator is not supported.
//
// # Absent fields
//
// A packet may lack a field: tcp.dstport on a UDP packet, ip.hdr_len on IPv6,
// identity.email for an unknown source. Every comparison on an absent field
// is false, including !=, "in" and "contains"; so is a boolean field that is
// absent. An IP address of the other family counts as absent too:
// "ip.src != 10.0.0.1" is false for an IPv6 packet. This is what nftables
// does, where a match on a transport header or an address carries an implicit
// dependency on the protocol or family ("tcp dport != 22" does not match UDP).
// "not" is plain boolean negation of its operand, so "not tcp.dstport == 22"
// is true for a UDP packet: the nftables compiler must negate whole
// sub-expressions (for example with a sub-chain that returns), never push the
// negation into a single != match.
package rules
