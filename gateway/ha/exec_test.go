package ha

import "os/exec"

func testExec(name string, args ...string) ([]byte, error) {
	return exec.Command(name, args...).CombinedOutput()
}
