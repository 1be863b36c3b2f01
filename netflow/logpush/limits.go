package logpush

import (
	"fmt"

	"golang.org/x/sys/unix"
)

// Spool sizing. The appliance keeps its state on a small /data partition
// (256 MiB), shared with the device registry and keys: a spool sized for a
// server (the old fixed 1 GiB default) lets one SIEM outage fill it, and
// then the registry cannot be written. So limits come from the filesystem
// the spool lives on.
const (
	// autoSpoolMax caps the automatic limit of one job on large disks.
	autoSpoolMax = 1 << 30
	// autoSpoolShare is the part of the filesystem's size that the
	// automatic limits of all jobs share (1/autoSpoolShare = 25 %).
	autoSpoolShare = 4
	// spoolReserveShare is the part of the filesystem kept free
	// (1/spoolReserveShare = 10 %): a spool never grows into it, whatever
	// its limit, and drops its own oldest batches instead.
	spoolReserveShare = 10
)

// fsSpace is the size of a filesystem and the space available to
// unprivileged writers (statfs f_bavail: root's reserved blocks excluded).
type fsSpace struct {
	size, avail int64
}

// statSpace returns the space of the filesystem holding dir.
func statSpace(dir string) (fsSpace, error) {
	var st unix.Statfs_t
	if err := unix.Statfs(dir, &st); err != nil {
		return fsSpace{}, fmt.Errorf("statfs %s: %w", dir, err)
	}
	bs := int64(st.Bsize)
	if st.Frsize > 0 {
		bs = int64(st.Frsize)
	}
	return fsSpace{size: int64(st.Blocks) * bs, avail: int64(st.Bavail) * bs}, nil
}

// spoolBudget is one job's share of the spool filesystem.
type spoolBudget struct {
	limit   int64 // bytes of batches the spool may hold
	reserve int64 // bytes the filesystem keeps free, whatever the limit
	// capped is set when the configured spool_limit was larger than the
	// filesystem can give this job; the limit was lowered to that share.
	capped bool
	auto   bool // no spool_limit: the limit is the automatic one
}

// budgetFor sizes a job's spool on a filesystem of the given size, shared
// by jobs spools. With no configured limit it is the lesser of 1 GiB and
// this job's share of 25 % of the filesystem; a configured limit is kept
// unless it exceeds the job's share of what lies above the reserve (then
// it is capped, and the caller warns). Free space is judged again at
// every write (spool.commit), so the reserve holds even when other files
// grow.
func budgetFor(fs fsSpace, configured int64, jobs int) spoolBudget {
	jobs = max(jobs, 1)
	b := spoolBudget{reserve: fs.size / spoolReserveShare}
	ceiling := (fs.size - b.reserve) / int64(jobs)
	if configured <= 0 {
		b.auto = true
		b.limit = min(autoSpoolMax, fs.size/autoSpoolShare/int64(jobs))
		return b
	}
	b.limit = configured
	if configured > ceiling {
		b.limit, b.capped = ceiling, true
	}
	return b
}
