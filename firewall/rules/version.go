package rules

import (
	"fmt"
	"strconv"
	"strings"
)

// Version is a dotted numeric version: "6.1.0-27-amd64" is 6.1.0 (what
// follows the numbers, a distribution's suffix, is ignored). It is the one
// version order of edgegw: TypeVersion fields compare with it, and so do
// the posture rules (access/posture), so `device.posture.os_version >=
// "6.1"` in a firewall rule and an os_version posture rule agree.
type Version []uint64

// maxVersionComponents bounds how many numbers a version has.
const maxVersionComponents = 8

// ParseVersion reads the leading dotted numbers of s.
func ParseVersion(s string) (Version, error) {
	end := strings.IndexFunc(s, func(r rune) bool { return r != '.' && (r < '0' || r > '9') })
	num := s
	if end >= 0 {
		num = s[:end]
	}
	num = strings.TrimSuffix(num, ".")
	if num == "" {
		return nil, fmt.Errorf("version %q does not start with a number", s)
	}
	parts := strings.Split(num, ".")
	if len(parts) > maxVersionComponents {
		return nil, fmt.Errorf("version %q has more than %d numbers", s, maxVersionComponents)
	}
	v := make(Version, len(parts))
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return nil, fmt.Errorf("version %q: %q is not a number", s, p)
		}
		v[i] = n
	}
	return v, nil
}

// Compare orders versions; missing components count as 0, so 6.1 == 6.1.0.
func (v Version) Compare(w Version) int {
	for i := range max(len(v), len(w)) {
		var a, b uint64
		if i < len(v) {
			a = v[i]
		}
		if i < len(w) {
			b = w[i]
		}
		switch {
		case a < b:
			return -1
		case a > b:
			return 1
		}
	}
	return 0
}

// String formats v as dotted numbers, "6.1.0".
func (v Version) String() string {
	parts := make([]string, len(v))
	for i, n := range v {
		parts[i] = strconv.FormatUint(n, 10)
	}
	return strings.Join(parts, ".")
}

// CompareVersions orders two version strings by [Version.Compare]; ok is
// false when either does not parse (a field holding it counts as absent).
func CompareVersions(a, b string) (c int, ok bool) {
	va, err := ParseVersion(a)
	if err != nil {
		return 0, false
	}
	vb, err := ParseVersion(b)
	if err != nil {
		return 0, false
	}
	return va.Compare(vb), true
}
