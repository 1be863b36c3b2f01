package bgp

import (
	"fmt"
	"strconv"
	"strings"
)

// wellKnown are the RFC 1997 and RFC 8326 communities operators write by
// name.
var wellKnown = map[string]uint32{
	"graceful-shutdown":   0xFFFF0000,
	"no-export":           0xFFFFFF01,
	"no-advertise":        0xFFFFFF02,
	"no-export-subconfed": 0xFFFFFF03,
	"blackhole":           0xFFFF029A,
}

// ParseCommunity reads a standard community, "ASN:value" with both
// halves 0 to 65535, or a well-known name (no-export, no-advertise,
// no-export-subconfed, graceful-shutdown, blackhole).
func ParseCommunity(s string) (uint32, error) {
	if v, ok := wellKnown[strings.ToLower(s)]; ok {
		return v, nil
	}
	hi, lo, ok := strings.Cut(s, ":")
	if !ok {
		return 0, fmt.Errorf("community %q: expected ASN:value, such as 64500:80, or a well-known name such as no-export", s)
	}
	a, err := strconv.ParseUint(hi, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("community %q: the ASN half must be a number from 0 to 65535", s)
	}
	v, err := strconv.ParseUint(lo, 10, 16)
	if err != nil {
		return 0, fmt.Errorf("community %q: the value half must be a number from 0 to 65535", s)
	}
	return uint32(a)<<16 | uint32(v), nil
}

// LargeCommunity is an RFC 8092 community: global administrator (an
// ASN) and two local data parts.
type LargeCommunity struct{ ASN, Data1, Data2 uint32 }

func (l LargeCommunity) String() string { return fmt.Sprintf("%d:%d:%d", l.ASN, l.Data1, l.Data2) }

// ParseLargeCommunity reads "ASN:x:y", each part 0 to 4294967295.
func ParseLargeCommunity(s string) (LargeCommunity, error) {
	parts := strings.Split(s, ":")
	if len(parts) != 3 {
		return LargeCommunity{}, fmt.Errorf("large community %q: expected ASN:x:y, such as 64500:1:80", s)
	}
	var v [3]uint32
	for i, p := range parts {
		n, err := strconv.ParseUint(p, 10, 32)
		if err != nil {
			return LargeCommunity{}, fmt.Errorf("large community %q: part %d must be a number from 0 to 4294967295", s, i+1)
		}
		v[i] = uint32(n)
	}
	return LargeCommunity{v[0], v[1], v[2]}, nil
}
