package tunnel

import (
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"strconv"
	"strings"
	"time"

	"golang.org/x/sys/unix"
)

// KillLeftover kills a daemon that edgegw supervises (strongSwan's charon
// for IPsec, keepalived for the HA pair) when a crashed edgegw left it
// running, found through its pid file: only if that pid still runs binary,
// so a recycled pid is never hit. It reports whether it killed one; the
// pid file is removed either way.
func KillLeftover(pidFile, binary string) (bool, error) {
	b, err := os.ReadFile(pidFile)
	if errors.Is(err, os.ErrNotExist) {
		return false, nil
	} else if err != nil {
		return false, err
	}
	defer os.Remove(pidFile)
	pid, err := strconv.Atoi(strings.TrimSpace(string(b)))
	if err != nil || pid <= 1 {
		return false, nil
	}
	exe, err := os.Readlink(fmt.Sprintf("/proc/%d/exe", pid))
	if err != nil || filepath.Base(exe) != filepath.Base(binary) {
		return false, nil
	}
	if err := unix.Kill(pid, unix.SIGTERM); err != nil {
		return false, nil
	}
	for range 50 {
		if unix.Kill(pid, 0) != nil {
			return true, nil
		}
		time.Sleep(100 * time.Millisecond)
	}
	unix.Kill(pid, unix.SIGKILL)
	return true, nil
}
