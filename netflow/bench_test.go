package netflow

import (
	"net/netip"
	"testing"

	"github.com/edgegw/edgegw/netflow/logpush"
)

type discardSink struct{ n int }

func (d *discardSink) Push(string, logpush.Record) { d.n++ }

// BenchmarkHandle is the sampler's cost per sample after the kernel:
// prefix, decode, snapshots, record.
//
//	go test -run '^$' -bench Handle ./netflow/
func BenchmarkHandle(b *testing.B) {
	for _, bc := range []struct{ name, pkt string }{{"tcp4", v4SYN}, {"gre", v4GRE}, {"icmp6", v6Hop()}} {
		b.Run(bc.name, func(b *testing.B) {
			s, err := New(Options{Group: 1, Sink: &discardSink{}, Colo: Colo{Code: "ams", Name: "ams01", Country: "NL"}})
			if err != nil {
				b.Fatal(err)
			}
			s.SetRules(Rules{RulesetID: "rs", RuleIDs: []string{"a", "b", "c"}, SampleInterval: 100})
			s.SetInterfaces(Interfaces{3: {Name: "wg0", Role: RoleTunnel}})
			s.SetIdentities(IdentityMap{netip.MustParseAddr("10.0.0.1"): {Email: "a@example.com", DeviceID: "d1"}})
			sm := Sample{Prefix: "ef/2/b", InDev: 3, Payload: unhex(b, bc.pkt)}
			b.ReportAllocs()
			for b.Loop() {
				if err := s.Handle(sm); err != nil {
					b.Fatal(err)
				}
			}
		})
	}
}
