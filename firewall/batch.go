package firewall

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io"
	"syscall"

	"github.com/google/nftables"
	"github.com/mdlayher/netlink"
	"golang.org/x/sys/unix"
)

// Sending batches
//
// google/nftables v0.3.0 asks the kernel to acknowledge every message of a
// batch and reads the acknowledgements one at a time, each a blocking
// receive through the runtime poller: a batch of 10,000 rules spends most
// of a second parking goroutines. So the library only marshals: a batch is
// built on a Conn whose netlink socket is a recorder (nltest), and sendBatch
// sends the recorded messages itself, with one acknowledgement requested
// (for the last message) and every error read back in bulk.

// batch records the messages of one transaction.
type batch struct {
	*nftables.Conn
	msgs []netlink.Message
}

func newBatch() (*batch, error) {
	b := &batch{}
	c, err := nftables.New(nftables.WithTestDial(func(req []netlink.Message) ([]netlink.Message, error) {
		if req == nil {
			return nil, io.EOF // no more replies
		}
		b.msgs = append(b.msgs, req...)
		acks := make([]netlink.Message, 0, len(req))
		for _, m := range req {
			if m.Header.Flags&netlink.Acknowledge != 0 {
				acks = append(acks, netlink.Message{Header: netlink.Header{Type: netlink.Error, Sequence: m.Header.Sequence}, Data: make([]byte, 4)})
			}
		}
		return acks, nil
	}))
	if err != nil {
		return nil, fmt.Errorf("firewall: netlink: %w", err)
	}
	b.Conn = c
	return b, nil
}

// commit sends the batch in the calling thread's network namespace and
// returns the kernel's verdict: the whole transaction or nothing.
func (b *batch) commit() error {
	b.msgs = nil
	if err := b.Flush(); err != nil { // marshals into b.msgs
		return err
	}
	if len(b.msgs) == 0 {
		return nil
	}
	return sendBatch(b.msgs)
}

// netlinkBuffer is the socket buffer size forced on the netlink socket: a
// batch of 50,000 rules is tens of megabytes in one datagram.
const netlinkBuffer = 256 << 20

const nlmsgHdrLen = 16

func sendBatch(msgs []netlink.Message) error {
	fd, err := unix.Socket(unix.AF_NETLINK, unix.SOCK_RAW|unix.SOCK_CLOEXEC, unix.NETLINK_NETFILTER)
	if err != nil {
		return fmt.Errorf("netlink socket: %w", err)
	}
	defer unix.Close(fd)
	for _, opt := range []int{unix.SO_SNDBUFFORCE, unix.SO_RCVBUFFORCE} {
		if err := unix.SetsockoptInt(fd, unix.SOL_SOCKET, opt, netlinkBuffer); err != nil {
			return fmt.Errorf("netlink socket buffer: %w", err)
		}
	}
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_CAP_ACK, 1)
	_ = unix.SetsockoptInt(fd, unix.SOL_NETLINK, unix.NETLINK_EXT_ACK, 1)
	tv := unix.Timeval{Sec: 60}
	_ = unix.SetsockoptTimeval(fd, unix.SOL_SOCKET, unix.SO_RCVTIMEO, &tv)
	if err := unix.Bind(fd, &unix.SockaddrNetlink{Family: unix.AF_NETLINK}); err != nil {
		return fmt.Errorf("netlink bind: %w", err)
	}

	// Ask for one acknowledgement, on the last message inside the batch;
	// errors come back whether asked for or not.
	last := len(msgs) - 2 // msgs[0] begins the batch, msgs[len-1] ends it
	size := 0
	for _, m := range msgs {
		size += nlmsgHdrLen + (len(m.Data)+3)&^3
	}
	buf := make([]byte, 0, size)
	for i, m := range msgs {
		flags := m.Header.Flags &^ netlink.Acknowledge
		if i == last {
			flags |= netlink.Acknowledge
		}
		var h [nlmsgHdrLen]byte
		binary.NativeEndian.PutUint32(h[0:], uint32(nlmsgHdrLen+len(m.Data)))
		binary.NativeEndian.PutUint16(h[4:], uint16(m.Header.Type))
		binary.NativeEndian.PutUint16(h[6:], uint16(flags))
		binary.NativeEndian.PutUint32(h[8:], uint32(i+1))
		buf = append(buf, h[:]...)
		buf = append(buf, m.Data...)
		for len(buf)%4 != 0 {
			buf = append(buf, 0)
		}
	}
	// EINTR: the Go runtime's preemption signal can interrupt a blocking
	// raw syscall; a netlink datagram is sent whole or not at all, so retry.
	for {
		err := unix.Sendto(fd, buf, 0, &unix.SockaddrNetlink{Family: unix.AF_NETLINK})
		if err == nil {
			break
		}
		if !errors.Is(err, unix.EINTR) {
			return fmt.Errorf("netlink send (%d bytes, %d messages): %w", len(buf), len(msgs), err)
		}
	}

	var errs []error
	rbuf := make([]byte, 1<<20)
	for {
		n, _, err := unix.Recvfrom(fd, rbuf, 0)
		if errors.Is(err, unix.EINTR) {
			continue
		}
		if err != nil {
			return errors.Join(append(errs, fmt.Errorf("netlink receive: %w", err))...)
		}
		for b := rbuf[:n]; len(b) >= nlmsgHdrLen; {
			l := int(binary.NativeEndian.Uint32(b[0:]))
			if l < nlmsgHdrLen || l > len(b) {
				return errors.Join(append(errs, errors.New("netlink receive: malformed message"))...)
			}
			typ := binary.NativeEndian.Uint16(b[4:])
			seq := int(binary.NativeEndian.Uint32(b[8:]))
			data := b[nlmsgHdrLen:l]
			b = b[(l+3)&^3:]
			if typ != unix.NLMSG_ERROR || len(data) < 4 {
				continue
			}
			if code := int32(binary.NativeEndian.Uint32(data)); code != 0 {
				errs = append(errs, fmt.Errorf("message %d of %d (type %#x): %w", seq-1, len(msgs)-2,
					msgs[min(max(seq-1, 0), len(msgs)-1)].Header.Type, syscall.Errno(-code)))
			}
			if seq-1 == last || seq == 1 { // the acknowledgement, or an error about the whole batch
				return errors.Join(errs...)
			}
		}
	}
}
