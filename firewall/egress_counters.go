package firewall

import (
	"bytes"
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
// thread's network namespace; all of them when dump is set (keys is then
// ignored). An element without a counter is absent.
func elemCounters(set string, keys [][]byte, dump bool) (map[string]Counter, error) {
	out := make(map[string]Counter, len(keys))
	if len(keys) == 0 && !dump {
		return out, nil
	}
	ae := netlink.NewAttributeEncoder()
	ae.String(unix.NFTA_SET_ELEM_LIST_TABLE, TableName)
	ae.String(unix.NFTA_SET_ELEM_LIST_SET, set)
	if !dump {
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
	}
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
	flags := uint16(unix.NLM_F_REQUEST | unix.NLM_F_ACK)
	if dump {
		flags = unix.NLM_F_REQUEST | unix.NLM_F_DUMP
	}
	binary.NativeEndian.PutUint16(msg[6:], flags)
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
			case typ == unix.NLMSG_DONE:
				return out, nil // the end of the dump
			case typ == unix.NFNL_SUBSYS_NFTABLES<<8|unix.NFT_MSG_NEWSETELEM:
				if err := parseElemCounters(data, out); err != nil {
					return nil, fmt.Errorf("get elements of %s: %w", set, err)
				}
			}
		}
	}
}

// parseElemCounters adds to out the counters of the elements of one
// NEWSETELEM message (without its netlink header): each start element's
// key and the counter among its expressions. It walks the attributes in
// place (a dump of 10,000 elements is 10,000 of these messages' worth).
func parseElemCounters(msg []byte, out map[string]Counter) error {
	if len(msg) < 4 {
		return errors.New("short message")
	}
	return walkAttrs(msg[4:], func(typ uint16, v []byte) error {
		if typ != unix.NFTA_SET_ELEM_LIST_ELEMENTS {
			return nil
		}
		return walkAttrs(v, func(typ uint16, v []byte) error {
			if typ != unix.NFTA_LIST_ELEM {
				return nil
			}
			var key []byte
			var c Counter
			counted, end := false, false
			err := walkAttrs(v, func(typ uint16, v []byte) error {
				switch typ {
				case unix.NFTA_SET_ELEM_FLAGS:
					if len(v) < 4 {
						return errors.New("short element flags")
					}
					end = binary.BigEndian.Uint32(v)&unix.NFT_SET_ELEM_INTERVAL_END != 0
				case unix.NFTA_SET_ELEM_KEY:
					return walkAttrs(v, func(typ uint16, v []byte) error {
						if typ == unix.NFTA_DATA_VALUE {
							key = v
						}
						return nil
					})
				case unix.NFTA_SET_ELEM_EXPR:
					var err error
					counted, err = counterExpr(v, &c)
					return err
				case nftaSetElemExpressions:
					return walkAttrs(v, func(typ uint16, v []byte) error {
						if typ != unix.NFTA_LIST_ELEM || counted {
							return nil
						}
						var err error
						counted, err = counterExpr(v, &c)
						return err
					})
				}
				return nil
			})
			if err != nil {
				return err
			}
			if key != nil && counted && !end {
				out[string(key)] = c
			}
			return nil
		})
	})
}

// counterExpr reads one expression's attributes (NFTA_EXPR_NAME,
// NFTA_EXPR_DATA) into c and reports whether it is a counter.
func counterExpr(b []byte, c *Counter) (bool, error) {
	var name []byte
	var n Counter
	err := walkAttrs(b, func(typ uint16, v []byte) error {
		switch typ {
		case unix.NFTA_EXPR_NAME:
			name = v
		case unix.NFTA_EXPR_DATA:
			return walkAttrs(v, func(typ uint16, v []byte) error {
				if typ != unix.NFTA_COUNTER_BYTES && typ != unix.NFTA_COUNTER_PACKETS {
					return nil
				}
				if len(v) < 8 {
					return errors.New("short counter")
				}
				if typ == unix.NFTA_COUNTER_BYTES {
					n.Bytes = binary.BigEndian.Uint64(v)
				} else {
					n.Packets = binary.BigEndian.Uint64(v)
				}
				return nil
			})
		}
		return nil
	})
	if err != nil || string(bytes.TrimRight(name, "\x00")) != "counter" {
		return false, err
	}
	*c = n
	return true, nil
}

// walkAttrs calls fn with the type (flags masked off) and value of each
// netlink attribute in b, in order, and stops at fn's first error.
func walkAttrs(b []byte, fn func(typ uint16, v []byte) error) error {
	for len(b) > 0 {
		if len(b) < unix.SizeofNlAttr {
			return errors.New("truncated attribute")
		}
		l := int(binary.NativeEndian.Uint16(b))
		if l < unix.SizeofNlAttr || l > len(b) {
			return fmt.Errorf("attribute length %d of %d bytes", l, len(b))
		}
		if err := fn(binary.NativeEndian.Uint16(b[2:])&^(unix.NLA_F_NESTED|unix.NLA_F_NET_BYTEORDER), b[unix.SizeofNlAttr:l]); err != nil {
			return err
		}
		b = b[min((l+3)&^3, len(b)):]
	}
	return nil
}
