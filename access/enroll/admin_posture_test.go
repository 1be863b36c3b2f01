package enroll

import (
	"encoding/json"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/firewall/rules"
)

// TestDeviceOfPosture: the admin API shows a device's posture attributes
// as rules see them, and nothing before a report.
func TestDeviceOfPosture(t *testing.T) {
	now := time.Now()
	if d := DeviceOf(identity.Device{ID: "dev_a"}, now); d.Posture != nil {
		t.Errorf("no report: %+v", d.Posture)
	}
	d := DeviceOf(identity.Device{ID: "dev_b", Posture: rules.Posture{OS: "linux", OSVersion: "6.12", DiskEncrypted: rules.CheckYes, Firewall: rules.CheckNo}}, now)
	b, err := json.Marshal(d.Posture)
	if err != nil {
		t.Fatal(err)
	}
	if want := `{"os":"linux","os_version":"6.12","disk_encrypted":"true","firewall":"false","compliant":"unknown"}`; string(b) != want {
		t.Errorf("posture %s, want %s", b, want)
	}
}
