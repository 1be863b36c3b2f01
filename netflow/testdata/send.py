#!/usr/bin/python3
"""Send the test packets of TestSamplerNetns with scapy and print, as JSON,
what scapy says their header fields are, under Cloudflare's
network_analytics_logs names. Scapy is the independent peer here: it builds
and checksums the packets, and reads them back from their raw bytes.

usage: send.py IFACE DST_MAC  (run inside the sending namespace)
"""
import json
import sys

from scapy.all import GRE, ICMP, IP, IPv6, TCP, UDP, ICMPv6EchoRequest, Ether, Raw, raw, sendp

iface, mac = sys.argv[1], sys.argv[2]
A4, B4 = "10.77.0.1", "10.77.0.2"
A6, B6 = "fd77::1", "fd77::2"

tcp_opts = [("MSS", 1460), ("SAckOK", b""), ("Timestamp", (123456, 0)), ("NOP", None), ("WScale", 7)]
packets = [
    IP(src=A4, dst=B4, id=101, ttl=61, tos=(46 << 2) | 1, flags="DF")
    / TCP(sport=40001, dport=443, flags="S", seq=1000, window=64240, options=tcp_opts),
    IP(src=A4, dst=B4, id=102, ttl=64) / UDP(sport=5353, dport=9999) / Raw(b"x" * 20),
    IP(src=A4, dst=B4, id=103, ttl=63) / ICMP(type=8, code=0, id=7, seq=1) / Raw(b"ping"),
    IP(src=A4, dst=B4, id=204, ttl=62) / GRE(chksum_present=1, key_present=1, key=0x1234, seqnum_present=1, sequence_number=7)
    / IP(src="192.0.2.1", dst="198.51.100.7", id=104, ttl=30) / UDP(sport=1111, dport=2222) / Raw(b"inner"),
    IPv6(src=A6, dst=B6, fl=0x12345, hlim=55, tc=(10 << 2) | 2)
    / TCP(sport=40002, dport=80, flags="PA", seq=5, ack=9, window=512, urgptr=0) / Raw(b"GET /"),
    IPv6(src=A6, dst=B6, fl=0x2222, hlim=64) / UDP(sport=53, dport=5300) / Raw(b"q" * 12),
    IPv6(src=A6, dst=B6, fl=0x3333, hlim=64) / ICMPv6EchoRequest(id=1, seq=2),
    IP(src=A4, dst=B4, id=205, ttl=62) / GRE()
    / IPv6(src="2001:db8::1", dst="2001:db8:1::2", fl=0x4444, hlim=20) / TCP(sport=3333, dport=4444, flags="FA", seq=77, ack=88),
]


def ip_fields(ip, out):
    if ip.version == 4:
        out.update(IPSourceAddress=ip.src, IPDestinationAddress=ip.dst, IPProtocol=ip.proto,
                   IPTotalLength=ip.len, IPTTL=ip.ttl, IPHeaderLength=ip.ihl * 4,
                   IPv4Identification=ip.id, IPv4Checksum=ip.chksum, IPv4DSCP=ip.tos >> 2,
                   IPv4ECN=ip.tos & 3, IPv4DontFragment=int("DF" in str(ip.flags)),
                   IPMoreFragments=int("MF" in str(ip.flags)), IPFragmentOffset=ip.frag)
    else:
        out.update(IPSourceAddress=ip.src, IPDestinationAddress=ip.dst, IPProtocol=ip.nh,
                   IPTotalLength=ip.plen + 40, IPTTL=ip.hlim, IPHeaderLength=40,
                   IPv6DSCP=ip.tc >> 2, IPv6ECN=ip.tc & 3, IPv6FlowLabel=ip.fl)
    l4 = ip.payload
    if isinstance(l4, TCP):
        opts = dict((k, v) for k, v in l4.options)
        out.update(SourcePort=l4.sport, DestinationPort=l4.dport, TCPFlags=int(l4.flags),
                   TCPSequenceNumber=l4.seq, TCPAcknowledgementNumber=l4.ack,
                   TCPDataOffset=l4.dataofs, TCPWindowSize=l4.window, TCPChecksum=l4.chksum,
                   TCPUrgentPointer=l4.urgptr, TCPSACKPermitted=int("SAckOK" in opts))
        if "MSS" in opts:
            out["TCPMSS"] = opts["MSS"]
        if "WScale" in opts:
            out["TCPWindowScale"] = opts["WScale"]
        if "Timestamp" in opts:
            out["TCPTimestampValue"], out["TCPTimestampECR"] = opts["Timestamp"]
    elif isinstance(l4, UDP):
        out.update(SourcePort=l4.sport, DestinationPort=l4.dport, UDPChecksum=l4.chksum,
                   UDPPayloadLength=l4.len - 8)
    elif isinstance(l4, ICMP) or l4.__class__.__name__.startswith("ICMPv6"):
        out.update(ICMPType=l4.type, ICMPCode=l4.code, ICMPChecksum=l4.cksum if hasattr(l4, "cksum") else l4.chksum)


expected = []
frames = []
for p in packets:
    p = IP(raw(p)) if p.version == 4 else IPv6(raw(p))  # fills lengths and checksums
    out = {}
    if isinstance(p.payload, GRE):
        g = p.payload
        hl = 4 + 4 * (int(g.chksum_present) + int(g.key_present) + int(g.seqnum_present))
        out.update(GREVersion=g.version, GREEtherType=g.proto, GREHeaderLength=hl,
                   OuterIPSourceAddress=p.src, OuterIPDestinationAddress=p.dst)
        if g.chksum_present:
            out["GREChecksum"] = g.chksum
        if g.key_present:
            out["GREKey"] = g.key
        if g.seqnum_present:
            out["GRESequenceNumber"] = g.sequence_number
        ip_fields(g.payload, out)
    else:
        ip_fields(p, out)
    expected.append(out)
    frames.append(Ether(dst=mac) / p)

sendp(frames, iface=iface, verbose=False)
json.dump(expected, sys.stdout)
