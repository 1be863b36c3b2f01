package wireguard

import (
	"fmt"
	"net"
	"net/netip"
	"runtime"
	"sync"
	"sync/atomic"
	"time"

	"golang.org/x/sys/unix"
	"golang.zx2c4.com/wireguard/conn"
)

// checkedBind wraps wireguard-go's UDP bind. It drops (and counts) every
// received datagram that is not a well-formed WireGuard message before
// wireguard-go sees it, and it opens its sockets in the network namespace
// the device was created in, whichever thread asks for the (re)bind.
//
// One thing is lost by wrapping: wireguard-go starts its route listener,
// which forgets a peer's cached source address when routes change, only for
// its own bind type. A gateway answers peers that talk first, and every
// authenticated packet from a peer refreshes that source address, so this
// matters only if the gateway's own address changes under a silent peer.
//
// It is also where on-demand peers begin: divert may take a handshake
// initiation from a sender that is not yet a peer, and once the peer exists
// inject hands it back, through one more receive function that reads
// injected datagrams instead of a socket.
type checkedBind struct {
	conn.Bind
	netns     int // fd of the device's network namespace, -1 for "current"
	malformed *atomic.Uint64
	divert    func(msg []byte, ep conn.Endpoint) bool // nil: none; set before Open
	injected  chan injected
	// defaultSrc and defaultSrc6, when set, are the sources of datagrams
	// to IPv4 and IPv6 endpoints without a sticky one (see Send in
	// sticky.go).
	defaultSrc, defaultSrc6 atomic.Pointer[netip.Addr]

	mu      sync.Mutex
	openErr error         // of the last Open
	closing chan struct{} // closed by Close: the injection receiver returns
}

type injected struct {
	msg []byte
	ep  conn.Endpoint
}

// inject hands msg, received from ep, to wireguard-go. If the bind is
// closed or wireguard-go is not reading, msg is dropped: the sender
// repeats its initiation after 5 seconds.
func (b *checkedBind) inject(msg []byte, ep conn.Endpoint) {
	b.mu.Lock()
	closing := b.closing
	b.mu.Unlock()
	if closing == nil {
		return
	}
	select {
	case b.injected <- injected{msg, ep}:
	case <-closing:
	case <-time.After(time.Second):
	}
}

func (b *checkedBind) Close() error {
	b.mu.Lock()
	if b.closing != nil {
		close(b.closing)
		b.closing = nil
	}
	b.mu.Unlock()
	return b.Bind.Close()
}

// lastOpenError is the error of the last Open, nil if it succeeded.
// wireguard-go logs a failed rebind but forgets the port it was asked for.
func (b *checkedBind) lastOpenError() error {
	b.mu.Lock()
	defer b.mu.Unlock()
	return b.openErr
}

func (b *checkedBind) Open(port uint16) (fns []conn.ReceiveFunc, actual uint16, err error) {
	err = inNetns(b.netns, func() error {
		fns, actual, err = b.Bind.Open(port)
		return err
	})
	b.mu.Lock()
	b.openErr = err
	b.mu.Unlock()
	if err != nil {
		return nil, 0, err
	}
	for i, fn := range fns {
		fns[i] = b.check(fn)
	}
	if b.divert != nil {
		closing := make(chan struct{})
		b.mu.Lock()
		b.closing = closing
		b.mu.Unlock()
		fns = append(fns, b.receiveInjected(closing))
	}
	return fns, actual, nil
}

// receiveInjected returns injected datagrams one at a time until closing.
func (b *checkedBind) receiveInjected(closing chan struct{}) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		select {
		case in := <-b.injected:
			sizes[0] = copy(packets[0], in.msg)
			eps[0] = in.ep
			return 1, nil
		case <-closing:
			return 0, net.ErrClosed
		}
	}
}

// check filters what fn receives. Zero sizes are what ReceiveFunc callers
// are required to skip, so a dropped datagram is one whose size is set to 0.
func (b *checkedBind) check(fn conn.ReceiveFunc) conn.ReceiveFunc {
	return func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		n, err := fn(packets, sizes, eps)
		for i := 0; i < n; i++ {
			if sizes[i] == 0 {
				continue
			}
			msg := packets[i][:sizes[i]]
			if !wellFormed(msg) {
				sizes[i] = 0
				b.malformed.Add(1)
				continue
			}
			if msg[0] == msgInitiation && b.divert != nil && b.divert(msg, eps[i]) {
				sizes[i] = 0
			}
		}
		return n, err
	}
}

// openNetns returns a file descriptor for the calling thread's network
// namespace. The caller must have locked its OS thread.
func openNetns() (int, error) {
	fd, err := unix.Open(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), unix.O_RDONLY|unix.O_CLOEXEC, 0)
	if err != nil {
		return -1, fmt.Errorf("open network namespace: %w", err)
	}
	return fd, nil
}

// inNetns runs fn on a fresh OS thread that has entered the network
// namespace nsfd (fn runs on the current goroutine when nsfd is -1). The
// thread is never unlocked, so the runtime discards it afterwards rather than
// let another goroutine run in the wrong namespace.
func inNetns(nsfd int, fn func() error) error {
	if nsfd < 0 {
		return fn()
	}
	errc := make(chan error, 1)
	go func() {
		runtime.LockOSThread()
		// Entering the namespace the thread is already in would still need
		// CAP_SYS_ADMIN, which the appliance's unit does not grant: skip it.
		if !sameNetns(nsfd) {
			if err := unix.Setns(nsfd, unix.CLONE_NEWNET); err != nil {
				errc <- fmt.Errorf("enter network namespace: %w", err)
				return
			}
		}
		errc <- fn()
	}()
	return <-errc
}

// sameNetns reports whether nsfd is the calling thread's network namespace.
func sameNetns(nsfd int) bool {
	var want, cur unix.Stat_t
	if unix.Fstat(nsfd, &want) != nil {
		return false
	}
	if unix.Stat(fmt.Sprintf("/proc/self/task/%d/ns/net", unix.Gettid()), &cur) != nil {
		return false
	}
	return want.Dev == cur.Dev && want.Ino == cur.Ino
}
