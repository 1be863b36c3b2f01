package rules

import "strings"

// Check is a yes/no attribute a device reported, or did not: the zero
// Check is unknown, and an unknown attribute is an absent field, so every
// comparison on it is false (Cloudflare's "unknown is non-compliant").
type Check int8

// Check values.
const (
	CheckUnknown Check = iota
	CheckYes
	CheckNo
)

// String is c as posture reports and the admin API write it: "true",
// "false" or "unknown".
func (c Check) String() string {
	switch c {
	case CheckYes:
		return "true"
	case CheckNo:
		return "false"
	}
	return "unknown"
}

// Posture is what device.posture.* fields see of one device: its last
// accepted posture report (access/posture) and the verdict of the posture
// rules on it. The zero Posture (a static WireGuard peer, a LAN source, a
// device that never reported) has every field absent.
type Posture struct {
	OS            string // "linux", "macos", "windows"; "" unknown
	OSVersion     string // "" unknown
	ClientVersion string // "" unknown
	DiskEncrypted Check
	Firewall      Check
	// Compliant: the device passes every posture rule; unknown without
	// posture rules or without a report.
	Compliant Check
}

// The posture fields, shared by the firewall and DNS schemas:
//
//	device.posture.os             string  "linux", "macos" or "windows"
//	device.posture.os_version     version the OS version (Linux: the kernel release)
//	device.posture.client_version version the edgegw client's version
//	device.posture.disk_encrypted bool    the root file system is encrypted
//	device.posture.firewall       bool    a host firewall filters incoming traffic
//	device.posture.compliant      bool    the device passes every posture rule
//
// Each is absent when the device did not report it, reported "unknown",
// or has no posture at all (a static peer, a LAN source). A comparison on
// an absent field is false, and so is a bare bool field: an allow rule on
// `device.posture.disk_encrypted` does not allow an unknown disk, and a
// block rule on `not device.posture.disk_encrypted` blocks it.
var postureFields = []Field{
	{Name: "device.posture.os", Type: TypeString, Noun: "operating system"},
	{Name: "device.posture.os_version", Type: TypeVersion, Noun: "version"},
	{Name: "device.posture.client_version", Type: TypeVersion, Noun: "version"},
	{Name: "device.posture.disk_encrypted", Type: TypeBool},
	{Name: "device.posture.firewall", Type: TypeBool},
	{Name: "device.posture.compliant", Type: TypeBool},
}

// PostureFields returns the device.posture.* fields, for a schema that
// offers them (a copy; see [NewSchema]).
func PostureFields() []Field { return append([]Field(nil), postureFields...) }

// IsPostureField tells whether name is one of the device.posture.* fields.
func IsPostureField(name string) bool { return strings.HasPrefix(name, "device.posture.") }

// Value returns the value of the posture field name and whether it is
// present.
func (p Posture) Value(name string) (Value, bool) {
	str := func(s string) (Value, bool) { return StringValue(s), s != "" }
	ver := func(s string) (Value, bool) { return VersionValue(s), s != "" }
	check := func(c Check) (Value, bool) { return BoolValue(c == CheckYes), c != CheckUnknown }
	switch name {
	case "device.posture.os":
		return str(p.OS)
	case "device.posture.os_version":
		return ver(p.OSVersion)
	case "device.posture.client_version":
		return ver(p.ClientVersion)
	case "device.posture.disk_encrypted":
		return check(p.DiskEncrypted)
	case "device.posture.firewall":
		return check(p.Firewall)
	case "device.posture.compliant":
		return check(p.Compliant)
	}
	return Value{}, false
}

// SetPosture sets r's device.posture.* fields from p, and clears those p
// does not hold. Fields r's schema lacks are skipped.
func (r *Record) SetPosture(p Posture) {
	for _, f := range postureFields {
		if v, ok := p.Value(f.Name); ok {
			_ = r.Set(f.Name, v) // only a field the schema lacks fails
		} else {
			r.Clear(f.Name)
		}
	}
}
