package geo

import (
	"errors"
	"fmt"

	"github.com/oschwald/maxminddb-golang/v2"
)

// errSharedSubtrees is a search tree whose nodes are shared so widely that
// enumerating its networks would take too long.
var errSharedSubtrees = errors.New("search tree has too many paths (shared subtrees)")

// checkPaths bounds the work of enumerating a verified database's
// networks. maxminddb's Verify accepts any acyclic search tree, also one
// whose nodes are shared by many parents; Networks walks every path, and
// a file of a few KiB can have 2^100 of them. A database written as a tree
// has at most NodeCount+1 leaves, plus the IPv4 subtree that IPv6
// databases alias under ::ffff:0:0/96 and 2002::/16 (Networks walks it
// once). So count the leaves, with shared nodes counted once per path and
// a pointer to the IPv4 subtree counted as a leaf, and refuse a file with
// more than a few times NodeCount of them.
func checkPaths(r *maxminddb.Reader, b []byte) error {
	md := r.Metadata
	n := md.NodeCount
	var size uint
	switch md.RecordSize {
	case 24:
		size = 6
	case 28:
		size = 7
	case 32:
		size = 8
	default:
		return fmt.Errorf("record size %d", md.RecordSize)
	}
	if n == 0 || n > uint(len(b))/size {
		return fmt.Errorf("node count %d beyond the file", n)
	}
	records := func(node uint) (left, right uint) {
		p := b[node*size : node*size+size]
		switch md.RecordSize {
		case 24:
			return uint(p[0])<<16 | uint(p[1])<<8 | uint(p[2]), uint(p[3])<<16 | uint(p[4])<<8 | uint(p[5])
		case 28:
			return uint(p[3]&0xf0)<<20 | uint(p[0])<<16 | uint(p[1])<<8 | uint(p[2]),
				uint(p[3]&0x0f)<<24 | uint(p[4])<<16 | uint(p[5])<<8 | uint(p[6])
		}
		return uint(p[0])<<24 | uint(p[1])<<16 | uint(p[2])<<8 | uint(p[3]),
			uint(p[4])<<24 | uint(p[5])<<16 | uint(p[6])<<8 | uint(p[7])
	}
	// The IPv4 subtree of an IPv6 database: 96 left turns from the root.
	v4 := ^uint(0)
	if md.IPVersion == 6 {
		node := uint(0)
		for i := 0; i < 96 && node < n; i++ {
			node, _ = records(node)
		}
		v4 = node
	}
	limit := 4*uint64(n) + 64
	memo := make([]uint64, n) // 0: not yet counted; a count is at least 1
	var paths func(node uint, depth int) uint64
	paths = func(node uint, depth int) uint64 {
		if node >= n || depth > 128 { // a leaf (Verify bounds the depth to 128)
			return 1
		}
		if c := memo[node]; c != 0 {
			return c
		}
		l, r := records(node)
		c := uint64(0)
		for _, child := range [2]uint{l, r} {
			if child == v4 {
				c++ // the IPv4 subtree or an alias of it: counted below
			} else {
				c += paths(child, depth+1)
			}
			if c > limit {
				break
			}
		}
		c = min(c, limit+1)
		memo[node] = c
		return c
	}
	total := paths(0, 0)
	if v4 < n {
		total += paths(v4, 96)
	}
	if total > limit {
		return fmt.Errorf("%w: more than %d leaves for %d nodes", errSharedSubtrees, limit, n)
	}
	return nil
}
