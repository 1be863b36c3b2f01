//go:build !linux

package posture

import "time"

// Sources says where Collect looks.
type Sources struct {
	Root          string
	ClientVersion string
	Firewall      func() Check
	Now           func() time.Time
}

// Collect has no checks for this system yet: the OS and every check are
// unknown, which every posture rule treats as failing.
func Collect(s Sources) Report {
	now := time.Now
	if s.Now != nil {
		now = s.Now
	}
	return Report{Time: now().UTC(), OS: OSUnknown, ClientVersion: s.ClientVersion, DiskEncrypted: Unknown, Firewall: Unknown}
}
