package gre

import (
	"bytes"
	"fmt"
	"unsafe"

	"golang.org/x/sys/unix"
)

// ethtool ioctl commands and string set (linux/ethtool.h).
const (
	ethtoolGStrings  = 0x1b
	ethtoolGSSetInfo = 0x37
	ethtoolSFeatures = 0x3b
	ethSSFeatures    = 4
	ethGStringLen    = 32
)

// ethtoolFeatures switches netdev features by their ethtool names (as
// `ethtool -K` does) on ifname in the calling thread's network namespace,
// so that the benchmark needs no ethtool binary.
func ethtoolFeatures(ifname string, want map[string]bool) error {
	fd, err := unix.Socket(unix.AF_INET, unix.SOCK_DGRAM|unix.SOCK_CLOEXEC, 0)
	if err != nil {
		return err
	}
	defer unix.Close(fd)
	ioctl := func(data unsafe.Pointer) error {
		var ifr struct {
			name [unix.IFNAMSIZ]byte
			data uintptr
			_    [16]byte
		}
		copy(ifr.name[:], ifname)
		ifr.data = uintptr(data)
		if _, _, e := unix.Syscall(unix.SYS_IOCTL, uintptr(fd), unix.SIOCETHTOOL, uintptr(unsafe.Pointer(&ifr))); e != 0 {
			return e
		}
		return nil
	}
	// How many feature names there are.
	info := struct {
		cmd, _  uint32
		mask    uint64
		count   uint32
		padding uint32
	}{cmd: ethtoolGSSetInfo, mask: 1 << ethSSFeatures}
	if err := ioctl(unsafe.Pointer(&info)); err != nil {
		return fmt.Errorf("%s: ETHTOOL_GSSET_INFO: %w", ifname, err)
	}
	n := int(info.count)
	buf := make([]byte, 12+n*ethGStringLen)
	*(*[3]uint32)(unsafe.Pointer(&buf[0])) = [3]uint32{ethtoolGStrings, ethSSFeatures, uint32(n)}
	if err := ioctl(unsafe.Pointer(&buf[0])); err != nil {
		return fmt.Errorf("%s: ETHTOOL_GSTRINGS: %w", ifname, err)
	}
	blocks := (n + 31) / 32
	set := make([]uint32, 2+2*blocks) // cmd, size, then valid/requested pairs
	set[0], set[1] = ethtoolSFeatures, uint32(blocks)
	found := 0
	for i := range n {
		name := string(bytes.TrimRight(buf[12+i*ethGStringLen:12+(i+1)*ethGStringLen], "\x00"))
		on, ok := want[name]
		if !ok {
			continue
		}
		found++
		set[2+2*(i/32)] |= 1 << (i % 32)
		if on {
			set[3+2*(i/32)] |= 1 << (i % 32)
		}
	}
	if found != len(want) {
		return fmt.Errorf("%s: the kernel knows only %d of the features %v", ifname, found, want)
	}
	if err := ioctl(unsafe.Pointer(&set[0])); err != nil {
		return fmt.Errorf("%s: ETHTOOL_SFEATURES: %w", ifname, err)
	}
	return nil
}
