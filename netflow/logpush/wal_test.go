package logpush

import (
	"bytes"
	"encoding/json"
	"fmt"
	"math/rand/v2"
	"os"
	"path/filepath"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

// writeAhead writes records from..from+n-1 through a wal as the spooler
// does, syncing after every record i with sync(i), and returns the
// segment file's bytes and, for each file size reached by a sync, the
// records durable at that size.
func writeAhead(t testing.TB, w *wal, enc *encoder, from, n int, sync func(i int) bool) (raw []byte, marks map[int]int) {
	t.Helper()
	marks = map[int]int{}
	for i := from; i < from+n; i++ {
		w.write(enc.appendRecord(nil, benchRecord(i)), 1)
		if sync(i) {
			if err := w.flush(true, nil); err != nil {
				t.Fatal(err)
			}
			s := w.open()
			raw, _ = os.ReadFile(s.path)
			marks[len(raw)] = s.done
		}
	}
	return raw, marks
}

// TestRecoverSegment cuts a segment at (nearly) every offset, as kill -9
// (a short file) or a power cut (a tail of zeros or garbage) leaves it:
// recovery returns exactly the records of the frames wholly before the
// cut, as they were written.
func TestRecoverSegment(t *testing.T) {
	const n = 200
	enc := newEncoder(nil, TimestampUnixNano, nil)
	var want []byte
	for i := range n {
		want = enc.appendRecord(want, benchRecord(i))
	}
	w := newWAL(t.TempDir(), formatNDJSON, 1)
	defer w.close()
	raw, marks := writeAhead(t, w, newEncoder(nil, TimestampUnixNano, nil), 0, n, func(i int) bool { return i%10 == 9 || i == 3 })
	near := func(cut int) bool {
		for m := range marks {
			if cut >= m-16 && cut <= m+16 {
				return true
			}
		}
		return false
	}
	rng := rand.New(rand.NewPCG(1, 2))
	tails := map[string]func(int) []byte{
		"cut":   func(int) []byte { return nil },
		"zeros": func(k int) []byte { return make([]byte, k%4096+1) },
		"garbage": func(k int) []byte {
			b := make([]byte, k%512+1)
			for i := range b {
				b[i] = byte(rng.Uint32())
			}
			return b
		},
	}
	for name, tail := range tails {
		t.Run(name, func(t *testing.T) {
			durable, checked := 0, 0
			for cut := 0; cut <= len(raw); cut++ {
				if m, ok := marks[cut]; ok {
					durable = m
				}
				if !near(cut) && cut%13 != 0 && cut != len(raw) {
					continue
				}
				checked++
				data, got := recoverSegment(append(bytes.Clone(raw[:cut]), tail(cut)...), 1<<30)
				if got != durable {
					t.Fatalf("cut at %d/%d: recovered %d records, want %d", cut, len(raw), got, durable)
				}
				if !bytes.HasPrefix(want, data) || bytes.Count(data, []byte{'\n'}) != got {
					t.Fatalf("cut at %d: recovered data is not the first %d records: %.200q", cut, got, data)
				}
			}
			if durable != n {
				t.Fatalf("the whole file holds %d records, want %d", durable, n)
			}
			t.Logf("%d cuts of a %d-byte segment checked", checked, len(raw))
		})
	}
}

// FuzzRecoverSegment feeds arbitrary segment bytes to recovery: it must
// not panic, stays within its bound, and returns only whole lines that are
// each valid JSON.
func FuzzRecoverSegment(f *testing.F) {
	w := newWAL(f.TempDir(), formatHEC, 1)
	raw, _ := writeAhead(f, w, newEncoder(nil, TimestampUnix, &hecMeta{host: "h"}), 0, 20, func(i int) bool { return i%5 == 4 })
	w.close()
	f.Add(raw)
	f.Add(raw[:len(raw)/2])
	f.Add(append(bytes.Clone(raw), 0, 0, 0, 9, 0, 0, 0, 1))
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, raw []byte) {
		data, n := recoverSegment(raw, 1<<20)
		if len(data) > 1<<20 {
			t.Fatalf("%d bytes past the bound", len(data))
		}
		lines := bytes.Split(data, []byte{'\n'})
		if len(lines)-1 != n || len(lines[len(lines)-1]) != 0 {
			t.Fatalf("%d records but %d lines: %q", n, len(lines)-1, data)
		}
		for _, l := range lines[:n] {
			if !json.Valid(l) {
				t.Fatalf("invalid record %q", l)
			}
		}
	})
}

// TestRecoverSegmentsAtStart leaves segments as a crash would (one synced
// whole, one whose last frame is cut short, one empty) and starts a job:
// the durable records arrive once and are counted as recovered.
func TestRecoverSegmentsAtStart(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	j := hecJob(t, srv, "recover", nil)
	opts := testOpts(t)
	dir := filepath.Join(opts.StateDir, "logpush", "recover")
	if err := os.MkdirAll(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	hec := newEncoder(nil, TimestampUnixNano, &hecMeta{host: "gw-test"})
	w := newWAL(dir, formatHEC, 3)
	writeAhead(t, w, hec, 0, 700, func(i int) bool { return i == 299 || i == 699 })
	w.end() // cut, but the crash came before it was spooled
	w.close()
	raw, _ := writeAhead(t, w, hec, 700, 260, func(i int) bool { return i == 949 || i == 959 })
	w.close()
	// Cut the last frame (records 950..959) short, as kill -9 mid-write.
	if err := os.WriteFile(filepath.Join(dir, walName(4, formatHEC)), raw[:len(raw)-7], 0o600); err != nil {
		t.Fatal(err)
	}
	os.WriteFile(filepath.Join(dir, walName(5, formatHEC)), nil, 0o600)

	m := newManager(t, []Job{j}, opts)
	run(t, m)
	waitFor(t, 10*time.Second, "recovered records delivered", func() bool { return statusOf(m, "recover").RecordsSent == 950 })
	st := statusOf(m, "recover")
	if st.Recovered != 950 || st.Dropped != 0 {
		t.Errorf("status = %+v", st)
	}
	got := seqs(t, srv.Events())
	for seq := range int64(960) {
		if want := map[bool]int{true: 1, false: 0}[seq < 950]; got[seq] != want {
			t.Fatalf("record %d arrived %d times, want %d", seq, got[seq], want)
		}
	}
	if left, _ := filepath.Glob(filepath.Join(dir, walPrefix+"*")); len(left) != 0 {
		t.Errorf("segments left after recovery: %v", left)
	}
	// New segments are numbered past the recovered ones.
	pushN(m, 2000, 10)
	waitFor(t, 5*time.Second, "a new segment", func() bool {
		left, _ := filepath.Glob(filepath.Join(dir, walPrefix+"*"))
		return len(left) == 1 && filepath.Base(left[0]) == walName(6, formatHEC)
	})
}

// TestWriteAheadWithinInterval checks the crash window from the inside:
// records pushed into an open batch (max_upload_interval 30s) are in a
// segment on disk, in whole frames, within SyncInterval, and the batch is
// not cut early for it.
func TestWriteAheadWithinInterval(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	j := hecJob(t, srv, "ahead", nil)
	j.MaxUploadInterval = 30 * time.Second
	j.MaxUploadRecords = 100_000
	opts := testOpts(t)
	opts.SyncInterval = 100 * time.Millisecond
	m := newManager(t, []Job{j}, opts)
	run(t, m)
	dir := filepath.Join(opts.StateDir, "logpush", "ahead")
	for round := range 3 {
		pushN(m, round*1000, 1000)
		want := (round + 1) * 1000
		waitFor(t, 10*time.Second, fmt.Sprintf("%d records written ahead", want), func() bool {
			segs, _ := filepath.Glob(filepath.Join(dir, walPrefix+"*"))
			if len(segs) != 1 {
				return false
			}
			raw, err := os.ReadFile(segs[0])
			if err != nil {
				return false
			}
			_, n := recoverSegment(raw, 1<<30)
			return n == want
		})
	}
	if st := statusOf(m, "ahead"); st.RecordsSent != 0 || st.SpooledBatches != 0 {
		t.Errorf("the open batch was cut early: %+v", st)
	}
	if n := srv.Count(); n != 0 {
		t.Errorf("receiver got %d events before the batch was cut", n)
	}
}
