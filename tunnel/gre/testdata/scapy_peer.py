"""An independent GRE peer for edgegw's tests, built on scapy.

It sniffs GRE packets from REMOTE to LOCAL on eth0, checks the key, and
answers ICMP echo requests inside with GRE-encapsulated echo replies that
carry the same key and a sequence number of its own. It prints one line
per packet it answers or rejects, and "ready" when it sniffs.

usage: scapy_peer.py LOCAL REMOTE KEY
"""

import sys

from scapy.all import GRE, ICMP, IP, conf, send, sniff

local, remote, key = sys.argv[1], sys.argv[2], int(sys.argv[3])
conf.verb = 0
seq = 0


def handle(p):
    global seq
    if IP not in p or p[IP].src != remote or p[IP].dst != local or p[IP].proto != 47:
        return
    g = p[GRE]
    if g.key_present != 1 or g.key != key:
        print("reject key", g.key, flush=True)
        return
    inner = g.payload
    if not isinstance(inner, IP) or ICMP not in inner or inner[ICMP].type != 8:
        print("ignore", inner.summary(), flush=True)
        return
    reply = (IP(src=inner.dst, dst=inner.src, ttl=64)
             / ICMP(type=0, id=inner[ICMP].id, seq=inner[ICMP].seq)
             / bytes(inner[ICMP].payload))
    out = (IP(src=local, dst=remote, ttl=33)
           / GRE(key_present=1, key=key, seqnum_present=1, sequence_number=seq, proto=0x0800)
           / reply)
    seq += 1
    send(out)
    print("answered", inner.src, "->", inner.dst, "ttl", p[IP].ttl,
          "seq", g.sequence_number if g.seqnum_present else "-", flush=True)


print("ready", flush=True)
sniff(iface="eth0", lfilter=lambda p: IP in p and p[IP].proto == 47, prn=handle, store=False)
