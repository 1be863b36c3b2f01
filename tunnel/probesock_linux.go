package tunnel

import (
	"os"

	"golang.org/x/sys/unix"
)

// ReadProbes reads datagrams from sock, a nonblocking raw or packet
// socket that health-check answers arrive on, and hands each to handle
// until sock is closed. The buffer is reused: handle must not keep it. A
// failed read (a signal, a packet too big for the socket) is skipped, not
// fatal: the checks see it as a lost answer.
func ReadProbes(sock *os.File, handle func(pkt []byte)) error {
	rc, err := sock.SyscallConn()
	if err != nil {
		return err
	}
	buf := make([]byte, 2048)
	for {
		var n int
		var rerr error
		err := rc.Read(func(fd uintptr) bool {
			n, _, rerr = unix.Recvfrom(int(fd), buf, 0)
			return rerr != unix.EAGAIN
		})
		if err != nil {
			return nil // closed
		}
		if rerr != nil {
			continue
		}
		handle(buf[:n])
	}
}
