package wireguard

import (
	"encoding/binary"
	"sync/atomic"
	"testing"

	"golang.zx2c4.com/wireguard/conn"
)

func msg(typ uint32, size int) []byte {
	b := make([]byte, size)
	if size >= 4 {
		binary.LittleEndian.PutUint32(b, typ)
	}
	return b
}

func TestWellFormed(t *testing.T) {
	reserved := msg(1, 148)
	reserved[2] = 1
	tests := []struct {
		name string
		b    []byte
		want bool
	}{
		{"empty", nil, false},
		{"short", []byte{1, 0, 0}, false},
		{"initiation", msg(1, 148), true},
		{"initiation short", msg(1, 147), false},
		{"initiation long", msg(1, 149), false},
		{"reserved bytes set", reserved, false},
		{"response", msg(2, 92), true},
		{"response as initiation size", msg(2, 148), false},
		{"cookie reply", msg(3, 64), true},
		{"cookie reply long", msg(3, 65), false},
		{"keepalive", msg(4, 32), true},
		{"transport short", msg(4, 31), false},
		{"transport header only", msg(4, 16), false},
		{"transport aligned", msg(4, 16+1424+16), true},
		// A full 1420-byte packet from a peer with MTU 1420 is padded to the
		// MTU, not to 16: 16 + 1420 + 16 bytes.
		{"transport full MTU 1420", msg(4, 1452), true},
		{"type 0", msg(0, 148), false},
		{"type 5", msg(5, 148), false},
		{"type 0x104", msg(0x104, 64), false},
	}
	for _, tt := range tests {
		if got := wellFormed(tt.b); got != tt.want {
			t.Errorf("%s: wellFormed = %v, want %v", tt.name, got, tt.want)
		}
	}
}

// reference restates the rules independently: the fuzzer compares the two.
func reference(b []byte) bool {
	sizes := map[[4]byte]int{{1}: 148, {2}: 92, {3}: 64}
	if len(b) < 4 {
		return false
	}
	head := [4]byte(b[:4])
	if n, ok := sizes[head]; ok {
		return len(b) == n
	}
	return head == [4]byte{4} && len(b) >= 32
}

func FuzzWellFormed(f *testing.F) {
	for _, s := range [][]byte{nil, {4}, msg(1, 148), msg(2, 92), msg(3, 64), msg(4, 32), msg(4, 1452), msg(7, 40)} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, b []byte) {
		if got, want := wellFormed(b), reference(b); got != want {
			t.Fatalf("wellFormed(% x) = %v, reference says %v", b, got, want)
		}
	})
}

// TestCheckedBindReceive runs the receive filter over a batch as
// wireguard-go would see it.
func TestCheckedBindReceive(t *testing.T) {
	var n atomic.Uint64
	b := &checkedBind{malformed: &n}
	batch := [][]byte{msg(1, 148), []byte("GET / HTTP/1.0\r\n"), msg(4, 48), msg(2, 91), make([]byte, 100)}
	inner := func(packets [][]byte, sizes []int, eps []conn.Endpoint) (int, error) {
		for i, p := range batch {
			copy(packets[i], p)
			sizes[i] = len(p)
		}
		sizes[4] = 0 // a slot the bind left empty
		return len(batch), nil
	}
	packets := make([][]byte, 8)
	for i := range packets {
		packets[i] = make([]byte, 2048)
	}
	sizes := make([]int, 8)
	got, err := b.check(inner)(packets, sizes, make([]conn.Endpoint, 8))
	if err != nil || got != 5 {
		t.Fatalf("n=%d err=%v", got, err)
	}
	if want := []int{148, 0, 48, 0, 0}; [5]int(sizes[:5]) != [5]int(want) {
		t.Errorf("sizes = %v, want %v", sizes[:5], want)
	}
	if n.Load() != 2 {
		t.Errorf("malformed = %d, want 2", n.Load())
	}
}
