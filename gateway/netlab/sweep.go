//go:build linux

package netlab

import (
	"errors"
	"fmt"
	"io/fs"
	"os"
	"strconv"
	"strings"
)

// A lab's owner marker, /run/netlab/<id>, holds "<pid> <start time>" of the
// process that created the lab. The start time (field 22 of /proc/<pid>/stat)
// tells a live owner from a recycled pid. New creates the marker (O_EXCL)
// before any namespace and Close removes it after the last one, so a
// namespace without a marker has no owner.

func markerPath(id string) string { return markerDir + "/" + id }

// writeOwner creates the owner marker of lab id for this process. It fails
// with an error matching fs.ErrExist if the id is taken. The marker appears
// complete or not at all (written aside, then hard-linked), so a concurrent
// Sweep never reads a half-written one.
func writeOwner(id string) error {
	pid := os.Getpid()
	start, err := procStartTime(pid)
	if err != nil {
		return err
	}
	tmp := fmt.Sprintf("%s/.%s.%d", markerDir, id, pid)
	if err := os.WriteFile(tmp, fmt.Appendf(nil, "%d %d\n", pid, start), 0o644); err != nil {
		return err
	}
	defer os.Remove(tmp)
	return os.Link(tmp, markerPath(id))
}

// ownerAlive reports whether the owner recorded for lab id still runs.
// When in doubt it answers true, so that Sweep leaves the lab alone.
func ownerAlive(id string) bool {
	b, err := os.ReadFile(markerPath(id))
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	if err != nil {
		return true
	}
	var pid int
	var start uint64
	if _, err := fmt.Sscanf(string(b), "%d %d", &pid, &start); err != nil {
		return false // torn or foreign marker: nobody can own it
	}
	got, err := procStartTime(pid)
	if errors.Is(err, fs.ErrNotExist) {
		return false
	}
	return err != nil || got == start
}

// procStartTime returns the start time of pid in clock ticks after boot.
func procStartTime(pid int) (uint64, error) {
	b, err := os.ReadFile("/proc/" + strconv.Itoa(pid) + "/stat")
	if err != nil {
		return 0, err
	}
	// The command name (field 2) may contain spaces and parentheses;
	// fields after the last ')' start with field 3, the state.
	i := strings.LastIndexByte(string(b), ')')
	if i < 0 {
		return 0, fmt.Errorf("netlab: parse /proc/%d/stat", pid)
	}
	f := strings.Fields(string(b[i+1:]))
	if len(f) < 20 {
		return 0, fmt.Errorf("netlab: parse /proc/%d/stat", pid)
	}
	return strconv.ParseUint(f[22-3], 10, 64)
}

// labID returns the lab id in a namespace or marker name of a lab with the
// given prefix, or "" if the name does not belong to such a lab.
func labID(prefix, name string) string {
	id, _, _ := strings.Cut(name, "-")
	h, ok := strings.CutPrefix(id, prefix)
	if !ok || len(h) != idHexLen {
		return ""
	}
	for _, c := range h {
		if !('0' <= c && c <= '9' || 'a' <= c && c <= 'f') {
			return ""
		}
	}
	return id
}

// Sweep deletes namespaces and owner markers left behind by labs with the
// given prefix whose owning process has exited without [Lab.Close] (a crash,
// a `go test -timeout` panic, SIGKILL). Processes still running in those
// namespaces are killed first. Labs of live processes are not touched, so
// Sweep is safe while other tests run.
func Sweep(prefix string) error {
	if !prefixRE.MatchString(prefix) {
		return fmt.Errorf("netlab: invalid prefix %q", prefix)
	}
	dead := map[string]bool{} // lab id -> owner is gone
	isDead := func(id string) bool {
		d, ok := dead[id]
		if !ok {
			d = !ownerAlive(id)
			dead[id] = d
		}
		return d
	}

	var errs []error
	nss, err := os.ReadDir(netnsDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		return fmt.Errorf("netlab: sweep: %w", err)
	}
	failed := map[string]bool{}
	for _, e := range nss {
		id := labID(prefix, e.Name())
		if id == "" || !isDead(id) {
			continue
		}
		if err := deleteNS(e.Name()); err != nil {
			errs = append(errs, err)
			failed[id] = true
		}
	}

	markers, err := os.ReadDir(markerDir)
	if err != nil && !errors.Is(err, fs.ErrNotExist) {
		errs = append(errs, fmt.Errorf("netlab: sweep: %w", err))
	}
	for _, e := range markers {
		id := labID(prefix, e.Name())
		if id == "" || id != e.Name() || failed[id] || !isDead(id) {
			continue
		}
		if err := os.Remove(markerPath(id)); err != nil && !errors.Is(err, fs.ErrNotExist) {
			errs = append(errs, fmt.Errorf("netlab: sweep: %w", err))
		}
	}
	return errors.Join(errs...)
}
