//go:build linux

package site

import (
	"errors"
	"fmt"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/vishvananda/netlink"
	"golang.zx2c4.com/wireguard/tun"
)

// delayRelay delays packets in userspace, standing in for netem (which
// this kernel lacks): in the WAN namespace, packets to one address are
// routed into a TUN device, read by the relay, held for the current
// delay and written back to the TUN, from where a policy rule (iif the
// TUN) routes them on to their destination. Only that direction is
// delayed. The test owns the relay: Close stops its goroutines.
type delayRelay struct {
	dev   tun.Device
	delay atomic.Int64 // nanoseconds
	queue chan delayed
	wg    sync.WaitGroup
}

type delayed struct {
	due time.Time
	pkt []byte
}

const relayOffset = 16 // room for the TUN's virtio-net header

// newDelayRelay delays packets the WAN forwards to dst (an address on
// the WAN's link out, outIf, to the branch).
func newDelayRelay(t testing.TB, x *siteToSite, dst, outIf string) *delayRelay {
	t.Helper()
	r := &delayRelay{queue: make(chan delayed, 4096)}
	err := x.wan.Do(func() (err error) {
		if r.dev, err = tun.CreateTUN("dly0", 1500); err != nil {
			return err
		}
		link, err := netlink.LinkByName("dly0")
		if err != nil {
			return err
		}
		return netlink.LinkSetUp(link)
	})
	if err != nil {
		t.Fatalf("delay relay: %v", err)
	}
	t.Cleanup(r.Close)
	for _, args := range [][]string{
		{"route", "add", "198.51.100.0/24", "dev", outIf, "table", "100"},
		{"rule", "add", "iif", "dly0", "lookup", "100", "pref", "100"},
		{"route", "add", dst + "/32", "dev", "dly0"},
	} {
		if out, err := x.wan.IP(args...); err != nil {
			t.Fatalf("ip %v: %v: %s", args, err, out)
		}
	}
	r.wg.Go(func() {
		for range r.dev.Events() {
		}
	})
	r.wg.Go(r.read)
	r.wg.Go(r.write)
	return r
}

// set changes the delay of packets read from now on.
func (r *delayRelay) set(d time.Duration) { r.delay.Store(int64(d)) }

func (r *delayRelay) read() {
	defer close(r.queue)
	bufs := make([][]byte, r.dev.BatchSize())
	for i := range bufs {
		bufs[i] = make([]byte, relayOffset+65535)
	}
	sizes := make([]int, len(bufs))
	for {
		n, err := r.dev.Read(bufs, sizes, relayOffset)
		if err != nil && !errors.Is(err, tun.ErrTooManySegments) {
			return
		}
		due := time.Now().Add(time.Duration(r.delay.Load()))
		for i := range n {
			r.queue <- delayed{due: due, pkt: append(make([]byte, relayOffset), bufs[i][relayOffset:relayOffset+sizes[i]]...)}
		}
	}
}

// write sends packets back in the order read, each at its due time.
func (r *delayRelay) write() {
	for d := range r.queue {
		time.Sleep(time.Until(d.due))
		r.dev.Write([][]byte{d.pkt}, relayOffset) // a write after Close fails; the queue drains
	}
}

// Close removes the TUN device and waits for the relay's goroutines.
func (r *delayRelay) Close() {
	r.dev.Close()
	r.wg.Wait()
}

func (r *delayRelay) String() string {
	return fmt.Sprintf("delay relay (%v)", time.Duration(r.delay.Load()))
}
