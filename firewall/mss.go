package firewall

import (
	"encoding/binary"

	"github.com/google/nftables"
	"github.com/google/nftables/expr"
	"golang.org/x/sys/unix"
)

// Clamp asks for the TCP MSS of SYNs through one interface to be lowered to
// MSS: tunnels carry less than the 1500-byte path their peers assume, and
// path MTU discovery through them is often broken by filtered ICMP.
type Clamp struct {
	Interface string
	MSS       uint16 // e.g. 1436 for GRE: 1476 MTU − 40 bytes of IPv4 + TCP headers
}

// MSSChain is the base chain of MSS clamping: forward hook, mangle
// priority, so it sees SYNs in both directions after routing.
const MSSChain = "mss"

// clampChain compiles clamps into rules, one per interface and direction:
//
//	meta l4proto tcp tcp flags & (syn|rst) == syn oifname "X" tcp option maxseg size > MSS counter tcp option maxseg size set MSS
func clampChain(clamps []Clamp) Chain {
	c := Chain{
		Name:     MSSChain,
		Type:     nftables.ChainTypeFilter,
		Hook:     nftables.ChainHookForward,
		Priority: nftables.ChainPriorityMangle,
	}
	for _, cl := range clamps {
		mss := binary.BigEndian.AppendUint16(nil, cl.MSS)
		for _, dir := range []expr.MetaKey{expr.MetaKeyOIFNAME, expr.MetaKeyIIFNAME} {
			c.Rules = append(c.Rules, []expr.Any{
				&expr.Meta{Key: expr.MetaKeyL4PROTO, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{unix.IPPROTO_TCP}},
				&expr.Payload{DestRegister: 1, Base: expr.PayloadBaseTransportHeader, Offset: 13, Len: 1},
				&expr.Bitwise{SourceRegister: 1, DestRegister: 1, Len: 1, Mask: []byte{0x06}, Xor: []byte{0}},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: []byte{0x02}},
				&expr.Meta{Key: dir, Register: 1},
				&expr.Cmp{Op: expr.CmpOpEq, Register: 1, Data: ifname(cl.Interface)},
				&expr.Exthdr{Op: expr.ExthdrOpTcpopt, DestRegister: 1, Type: 2, Offset: 2, Len: 2},
				&expr.Cmp{Op: expr.CmpOpGt, Register: 1, Data: mss},
				&expr.Counter{},
				&expr.Immediate{Register: 1, Data: mss},
				&expr.Exthdr{Op: expr.ExthdrOpTcpopt, SourceRegister: 1, Type: 2, Offset: 2, Len: 2},
			})
		}
	}
	return c
}
