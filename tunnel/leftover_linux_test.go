package tunnel

import (
	"os"
	"os/exec"
	"path/filepath"
	"strconv"
	"testing"
)

// KillLeftover kills only what its pid file names and only while that pid
// runs the binary it was asked about: a recycled pid is never hit.
func TestKillLeftover(t *testing.T) {
	dir := t.TempDir()
	pidFile := filepath.Join(dir, "daemon.pid")
	if killed, err := KillLeftover(pidFile, "/usr/bin/sleep"); killed || err != nil {
		t.Fatalf("no pid file: killed %t, %v", killed, err)
	}
	cmd := exec.Command("sleep", "60")
	if err := cmd.Start(); err != nil {
		t.Fatal(err)
	}
	done := make(chan error, 1)
	go func() { done <- cmd.Wait() }()
	t.Cleanup(func() { cmd.Process.Kill() })
	write := func() {
		t.Helper()
		if err := os.WriteFile(pidFile, []byte(strconv.Itoa(cmd.Process.Pid)+"\n"), 0o600); err != nil {
			t.Fatal(err)
		}
	}

	write()
	if killed, err := KillLeftover(pidFile, "/usr/sbin/charon-systemd"); killed || err != nil {
		t.Fatalf("a pid running another binary: killed %t, %v", killed, err)
	}
	if _, err := os.Stat(pidFile); !os.IsNotExist(err) {
		t.Errorf("the pid file stays: %v", err)
	}
	select {
	case err := <-done:
		t.Fatalf("sleep ended although it is not the daemon asked about: %v", err)
	default:
	}

	write()
	if killed, err := KillLeftover(pidFile, "/usr/bin/sleep"); !killed || err != nil {
		t.Fatalf("the leftover: killed %t, %v", killed, err)
	}
	<-done
}
