package firewall

import (
	"encoding/binary"
	"testing"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// elemMessage encodes a NEWSETELEM reply as the kernel sends it: the
// nfgenmsg header, then one element with its key and a counter, in the
// single-expression form or in the list form.
func elemMessage(t testing.TB, key []byte, packets, bytes uint64, list bool) []byte {
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, "egm4_0_wan")
	counter := func(ae *netlink.AttributeEncoder) error {
		ae.String(unix.NFTA_EXPR_NAME, "counter")
		ae.Nested(unix.NFTA_EXPR_DATA, func(ae *netlink.AttributeEncoder) error {
			ae.ByteOrder = binary.BigEndian
			ae.Uint64(unix.NFTA_COUNTER_BYTES, bytes)
			ae.Uint64(unix.NFTA_COUNTER_PACKETS, packets)
			return nil
		})
		return nil
	}
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ae *netlink.AttributeEncoder) error {
		ae.Nested(unix.NFTA_LIST_ELEM, func(ae *netlink.AttributeEncoder) error {
			ae.Nested(unix.NFTA_SET_ELEM_KEY, func(ae *netlink.AttributeEncoder) error {
				ae.Bytes(unix.NFTA_DATA_VALUE, key)
				return nil
			})
			ae.Nested(unix.NFTA_SET_ELEM_DATA, func(ae *netlink.AttributeEncoder) error {
				ae.Bytes(unix.NFTA_DATA_VALUE, []byte{203, 0, 113, 1})
				return nil
			})
			if list {
				ae.Nested(nftaSetElemExpressions, func(ae *netlink.AttributeEncoder) error {
					ae.Nested(unix.NFTA_LIST_ELEM, counter)
					return nil
				})
			} else {
				ae.Nested(unix.NFTA_SET_ELEM_EXPR, counter)
			}
			return nil
		})
		return nil
	})
	b, err := ae.Encode()
	if err != nil {
		t.Fatal(err)
	}
	return append([]byte{unix.NFPROTO_INET, 0, 0, 0}, b...)
}

func TestParseElemCounters(t *testing.T) {
	for _, list := range []bool{false, true} {
		out := map[string]Counter{}
		if err := parseElemCounters(elemMessage(t, []byte{10, 1, 0, 10}, 3, 180, list), out); err != nil {
			t.Fatal(err)
		}
		if c := out[string([]byte{10, 1, 0, 10})]; len(out) != 1 || c.Packets != 3 || c.Bytes != 180 {
			t.Errorf("list form %v: got %v, want 10.1.0.10: 3 packets, 180 bytes", list, out)
		}
	}
	if err := parseElemCounters([]byte{1, 0}, map[string]Counter{}); err == nil {
		t.Error("a message shorter than its header parsed")
	}
}

// FuzzParseElemCounters: whatever a reply holds, parsing it returns an
// error or counters, never a panic.
func FuzzParseElemCounters(f *testing.F) {
	f.Add(elemMessage(f, []byte{10, 1, 0, 10}, 3, 180, false))
	f.Add(elemMessage(f, []byte{0xfd, 1, 15: 0x10}, 1, 80, true))
	f.Add([]byte{1, 0, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		_ = parseElemCounters(b, map[string]Counter{})
	})
}
