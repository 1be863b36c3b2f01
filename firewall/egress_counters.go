package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"

	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Reading the counters of a few map elements
//
// When an identity update removes elements of an identity map, their
// counters must be read first (their connections stay counted, see
// Table.EgressCounts). google/nftables v0.3.0 reads elements only by
// dumping the whole set: 20,000 elements decoded to learn a handful of
// counters, most of the cost of an update with 10,000 identities. The
// kernel also answers a GETSETELEM request that names the elements (the
// request of `nft get element`), one reply per element, so only those are
// asked for here.

// nftaSetElemExpressions is NFTA_SET_ELEM_EXPRESSIONS (linux/netfilter/
// nf_tables.h), the list form of an element's expressions, which
// golang.org/x/sys/unix does not name.
const nftaSetElemExpressions = 11

// elemCounters returns the counters of the elements of identity map set
// whose start keys are keys, by string(key), read in the calling
// thread's network namespace. An element without a counter is absent.
func elemCounters(set string, keys [][]byte) (map[string]Counter, error) {
	out := make(map[string]Counter, len(keys))
	if len(keys) == 0 {
		return out, nil
	}
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	ae.Nested(unix.NFTA_SET_ELEM_LIST_ELEMENTS, func(ae *netlink.AttributeEncoder) error {
		for _, k := range keys {
			ae.Nested(unix.NFTA_LIST_ELEM, func(ae *netlink.AttributeEncoder) error {
				ae.Nested(unix.NFTA_SET_ELEM_KEY, func(ae *netlink.AttributeEncoder) error {
					ae.Bytes(unix.NFTA_DATA_VALUE, k)
					return nil
				})
				return nil
			})
		}
		return nil
	})
	attrs, err := ae.Encode()
	if err != nil {
		return nil, fmt.Errorf("encode element request: %w", err)
	}
	req := append([]byte{unix.NFPROTO_INET, unix.NFNETLINK_V0, 0, 0}, attrs...)

	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return nil, fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	tv := unix.Timeval{Sec: 10}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	_ = unix.SetsockoptInt(fd, unix.SOL_SOCKET, unix.SO_RCVBUFFORCE, 8<<20)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return nil, fmt.Errorf("netlink bind: %w", err)
	}
	const seq = 1
	msg := make([]byte, nlmsgHdrLen, nlmsgHdrLen+len(req))
	binary.NativeEndian.PutUint32(msg[0:], uint32(nlmsgHdrLen+len(req)))
	binary.NativeEndian.PutUint16(msg[4:], unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_GETSETELEM)
	binary.NativeEndian.PutUint16(msg[6:], unix.NLM_F_REQUEST|unix.NLM_F_ACK)
	binary.NativeEndian.PutUint32(msg[8:], seq)
	msg = append(msg, req...)
	for {
		err := unix.Sendto(fd, msg, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			return nil, fmt.Errorf("netlink send: %w", err)
		}
	}
	rbuf := make([]byte, 64<<10)
	for {
		n, _, err := unix.Recvfrom(fd, rbuf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return nil, fmt.Errorf("netlink receive: %w", err)
		}
		for b := rbuf[:n]; len(b) >= nlmsgHdrLen; {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < nlmsgHdrLen || l > len(b) {
				return nil, errors.New("netlink receive: malformed message")
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			data := b[nlmsgHdrLen:l]
			b = b[min((l+3)&^3, len(b)):]
			switch {
			case typ == unix.NLMSG_ERROR:
				if len(data) < 4 {
					return nil, errors.New("netlink receive: short error message")
				}
				if code := int32(binary.NativeEndian.Uint32(data)); code != 0 {
					return nil, fmt.Errorf("get elements of %s: %w", set, unix.Errno(-code))
				}
				return out, nil // the acknowledgement: every element answered
			case typ == unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWSETELEM:
				if err := parseElemCounters(data, out); err != nil {
					return nil, fmt.Errorf("get elements of %s: %w", set, err)
				}
			}
		}
	}
}

// parseElemCounters adds to out the counters of the elements of one
// NEWSETELEM message (without its netlink header): each element's key
// and the counter among its expressions.
func parseElemCounters(msg []byte, out map[string]Counter) error {
	if len(msg) < 4 {
		return errors.New("short message")
	}
	ad, err := netlink.NewAttributeDecoder(msg[4:])
	if err != nil {
		return err
	}
	for ad.Next() {
		if ad.Type() != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			continue
		}
		ad.Nested(func(ad *netlink.AttributeDecoder) error {
			for ad.Next() {
				if ad.Type() != unix.NFTA_LIST_ELEM {
					continue
				}
				ad.Nested(func(ad *netlink.AttributeDecoder) error {
					var key []byte
					var c *Counter
					for ad.Next() {
						switch ad.Type() {
						case unix.NFTA_SET_ELEM_KEY:
							ad.Nested(func(ad *netlink.AttributeDecoder) error {
								for ad.Next() {
									if ad.Type() == unix.NFTA_DATA_VALUE {
										key = ad.Bytes()
									}
								}
								return nil
							})
						case unix.NFTA_SET_ELEM_EXPR:
							ad.Nested(func(ad *netlink.AttributeDecoder) error {
								c = parseCounterExpr(ad)
								return nil
							})
						case nftaSetElemExpressions:
							ad.Nested(func(ad *netlink.AttributeDecoder) error {
								for ad.Next() {
									if ad.Type() == unix.NFTA_LIST_ELEM && c == nil {
										ad.Nested(func(ad *netlink.AttributeDecoder) error {
											c = parseCounterExpr(ad)
											return nil
										})
									}
								}
								return nil
							})
						}
					}
					if key != nil && c != nil {
						out[string(key)] = *c
					}
					return nil
				})
			}
			return nil
		})
	}
	return ad.Err()
}

// parseCounterExpr reads one expression's attributes (NFTA_EXPR_NAME,
// NFTA_EXPR_DATA) and returns its counts if it is a counter.
func parseCounterExpr(ad *netlink.AttributeDecoder) *Counter {
	var name string
	var c Counter
	for ad.Next() {
		switch ad.Type() {
		case unix.NFTA_EXPR_NAME:
			name = ad.String()
		case unix.NFTA_EXPR_DATA:
			ad.Nested(func(ad *netlink.AttributeDecoder) error {
				ad.ByteOrder = binary.BigEndian
				for ad.Next() {
					switch ad.Type() {
					case unix.NFTA_COUNTER_BYTES:
						c.Bytes = ad.Uint64()
					case unix.NFTA_COUNTER_PACKETS:
						c.Packets = ad.Uint64()
					}
				}
				return nil
			})
		}
	}
	if name != "counter" {
		return nil
	}
	return &c
}
