package dns

import (
	"fmt"
	"net/netip"
	"runtime"
	"testing"
	"time"

	mdns "github.com/miekg/dns"
)

// TestCacheSizeBoundsHeap: an entry's accounted size (what cache_mb
// bounds) is at least the heap it holds once it has been hit in its
// first second and again later, each time answered from its wire form:
// the message, the aged copy of its records and both sections' wire
// forms. Measured with the Go heap over many entries of each shape, so
// cache_mb is a bound an operator can size a box by, not a guess (and
// not so loose that the cache holds half of what it could).
func TestCacheSizeBoundsHeap(t *testing.T) {
	shapes := []struct {
		name string
		make func(name string) *mdns.Msg
	}{
		{"one A", func(n string) *mdns.Msg { return answerOf(n, mdns.TypeA, 1, 0, "") }},
		{"four A", func(n string) *mdns.Msg { return answerOf(n, mdns.TypeA, 4, 0, "") }},
		{"CNAME chain, two AAAA", func(n string) *mdns.Msg { return answerOf(n, mdns.TypeAAAA, 2, 2, "") }},
		{"TXT 400 bytes", func(n string) *mdns.Msg { return answerOf(n, mdns.TypeTXT, 2, 0, string(make([]byte, 200))) }},
		{"NXDOMAIN with SOA", func(n string) *mdns.Msg {
			m := answerOf(n, mdns.TypeA, 0, 0, "")
			m.Rcode = mdns.RcodeNameError
			m.Ns = []mdns.RR{&mdns.SOA{Hdr: mdns.RR_Header{Name: "example.com.", Rrtype: mdns.TypeSOA, Class: mdns.ClassINET, Ttl: 300},
				Ns: "ns1.example.com.", Mbox: "hostmaster.example.com.", Serial: 1, Refresh: 7200, Retry: 900, Expire: 1209600, Minttl: 300}}
			return m
		}},
	}
	const n = 4000
	for _, sh := range shapes {
		t.Run(sh.name, func(t *testing.T) {
			now := time.Now()
			msgs := make([]*mdns.Msg, n)
			for i := range msgs {
				msgs[i] = sh.make(fmt.Sprintf("host-%05d.long-enough-label.example.com.", i))
			}
			c := newCache(1 << 40)
			before := heapInUse()
			for i, m := range msgs {
				k := cacheKey{name: m.Question[0].Name, qtype: m.Question[0].Qtype, qclass: mdns.ClassINET}
				e := c.put(k, m, now)
				if e == nil {
					t.Fatalf("entry %d not cached", i)
				}
				if e.fresh().packed() == nil || e.agedBy(3*time.Second).packed() == nil {
					t.Fatalf("entry %d does not pack", i)
				}
			}
			heap := heapInUse() - before
			runtime.KeepAlive(msgs) // the originals are not the cache's
			entries, accounted := c.len()
			if entries != n {
				t.Fatalf("%d entries, want %d", entries, n)
			}
			m0 := msgs[0]
			t.Logf("%s: heap %d B an entry, accounted %d B (%d records, %d B packed)", sh.name, heap/n, accounted/n,
				len(m0.Answer)+len(m0.Ns)+len(m0.Extra), m0.Len())
			if accounted < heap {
				t.Errorf("%s: accounted %d B an entry, but entries hold %d B of heap", sh.name, accounted/n, heap/n)
			}
			if accounted > 2*heap {
				t.Errorf("%s: accounted %d B an entry for %d B of heap: cache_mb would hold half what it could", sh.name, accounted/n, heap/n)
			}
			runtime.KeepAlive(c)
		})
	}
}

// answerOf is an answer to name of qtype with count records, after a
// chain of cnames CNAMEs; txt is each TXT record's text.
func answerOf(name string, qtype uint16, count, cnames int, txt string) *mdns.Msg {
	m := new(mdns.Msg)
	m.SetQuestion(name, qtype)
	m.Response, m.RecursionAvailable = true, true
	owner := name
	for i := range cnames {
		target := fmt.Sprintf("edge-%d.cdn.example.net.", i)
		m.Answer = append(m.Answer, &mdns.CNAME{Hdr: mdns.RR_Header{Name: owner, Rrtype: mdns.TypeCNAME, Class: mdns.ClassINET, Ttl: 300}, Target: target})
		owner = target
	}
	for i := range count {
		hdr := mdns.RR_Header{Name: owner, Rrtype: qtype, Class: mdns.ClassINET, Ttl: 300}
		switch qtype {
		case mdns.TypeA:
			m.Answer = append(m.Answer, &mdns.A{Hdr: hdr, A: netip.AddrFrom4([4]byte{192, 0, 2, byte(i + 1)}).AsSlice()})
		case mdns.TypeAAAA:
			m.Answer = append(m.Answer, &mdns.AAAA{Hdr: hdr, AAAA: netip.MustParseAddr(fmt.Sprintf("2001:db8::%x", i+1)).AsSlice()})
		case mdns.TypeTXT:
			m.Answer = append(m.Answer, &mdns.TXT{Hdr: hdr, Txt: []string{txt}})
		}
	}
	return m
}

// heapInUse is the live heap after a collection.
func heapInUse() int64 {
	runtime.GC()
	runtime.GC()
	var ms runtime.MemStats
	runtime.ReadMemStats(&ms)
	return int64(ms.HeapAlloc)
}
