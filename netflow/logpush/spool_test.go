package logpush

import (
	"os"
	"path/filepath"
	"slices"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

func TestSpoolFiles(t *testing.T) {
	dir := t.TempDir()
	s, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	for i := range 3 {
		if _, err := s.add([]byte{byte(i)}, i+1, formatNDJSON); err != nil {
			t.Fatal(err)
		}
	}
	os.WriteFile(filepath.Join(dir, ".tmp-00000000000000000004.9.ndjson.gz"), []byte("half"), 0o600)
	os.WriteFile(filepath.Join(dir, "README"), []byte("not a batch"), 0o600)

	s2, err := openSpool(dir, 1<<20)
	if err != nil {
		t.Fatal(err)
	}
	if n, b := s2.usage(); n != 3 || b != 3 {
		t.Errorf("reopened spool: %d batches, %d bytes", n, b)
	}
	if _, err := os.Stat(filepath.Join(dir, ".tmp-00000000000000000004.9.ndjson.gz")); !os.IsNotExist(err) {
		t.Errorf("temporary file not removed: %v", err)
	}
	e, ok := s2.nextAfter(0)
	if !ok || e.seq != 1 || e.records != 1 {
		t.Fatalf("first = %+v %v", e, ok)
	}
	if e, _ := s2.nextAfter(e.seq); e.seq != 2 {
		t.Errorf("second = %+v", e)
	}
	s2.remove(1)
	if _, err := s2.add([]byte("x"), 1, formatHEC); err != nil {
		t.Fatal(err)
	}
	names, _ := filepath.Glob(filepath.Join(dir, "0*"))
	for i := range names {
		names[i] = filepath.Base(names[i])
	}
	want := []string{"00000000000000000002.2.ndjson.gz", "00000000000000000003.3.ndjson.gz", "00000000000000000004.1.hec.gz"}
	if !slices.Equal(names, want) {
		t.Errorf("files = %v, want %v", names, want)
	}
}

func TestSpoolLimitDropsOldest(t *testing.T) {
	s, err := openSpool(t.TempDir(), 350)
	if err != nil {
		t.Fatal(err)
	}
	batch := make([]byte, 100)
	var dropped []uint64
	for i := range 6 {
		d, err := s.add(batch, 10, formatHEC)
		if err != nil {
			t.Fatal(err)
		}
		for _, e := range d {
			dropped = append(dropped, e.seq)
		}
		if i == 0 {
			s.nextAfter(0) // batch 1 is being sent: never dropped
		}
	}
	if want := []uint64{2, 3, 4}; !slices.Equal(dropped, want) {
		t.Errorf("dropped %v, want %v", dropped, want)
	}
	if n, b := s.usage(); n != 3 || b != 300 {
		t.Errorf("spool holds %d batches, %d bytes", n, b)
	}
}

// TestSpoolLimitDropsOldestEndToEnd runs a job against a receiver that is
// down: the spool fills, the oldest idle batches go, and once the receiver
// is back exactly the surviving records arrive.
func TestSpoolLimitDropsOldestEndToEnd(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	srv.SetDown(true)
	j := hecJob(t, srv, "small", nil)
	j.Fields = []string{"PFPCustomTag"}
	j.MaxUploadRecords = 10
	j.MaxUploadBytes = 2000
	j.SpoolLimit = 5000
	m := newManager(t, []Job{j}, testOpts(t))
	run(t, m)
	for i := range 100 {
		pushN(m, i*10, 10)
		waitFor(t, 5*time.Second, "batch spooled", func() bool {
			st := statusOf(m, "small")
			return st.SpooledBatches+int(st.Dropped/10) == i+1
		})
	}
	st := statusOf(m, "small")
	if st.Dropped == 0 || st.DroppedBy[dropSpoolLimit] != st.Dropped || st.SpooledBytes > 5000 {
		t.Fatalf("status = %+v", st)
	}
	srv.SetDown(false)
	want := 1000 - int(st.Dropped)
	waitFor(t, 10*time.Second, "survivors delivered", func() bool { return statusOf(m, "small").RecordsSent == uint64(want) })
	got := seqs(t, srv.Events())
	if len(got) != want {
		t.Errorf("%d distinct records arrived, want %d", len(got), want)
	}
	// Batch 0 was in flight (kept); then the oldest went: seqs 10…10+dropped-1.
	for seq := range int64(1000) {
		lost := seq >= 10 && seq < 10+int64(st.Dropped)
		if (got[seq] == 0) != lost {
			t.Fatalf("record %d: arrived %d times, dropped range 10..%d", seq, got[seq], 10+st.Dropped-1)
		}
	}
}

func TestRestartResumesFromSpool(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	srv.SetDown(true)
	j := hecJob(t, srv, "resume", nil)
	opts := testOpts(t)
	m1 := newManager(t, []Job{j}, opts)
	r1 := run(t, m1)
	pushN(m1, 0, 2500) // 2 batches cut by count, 500 records in memory
	r1.stop()          // the in-memory batch is spooled on the way out
	files, _ := filepath.Glob(filepath.Join(opts.StateDir, "logpush", "resume", "*.gz"))
	if len(files) != 3 {
		t.Fatalf("spool after stop: %v", files)
	}
	srv.SetDown(false)
	m2 := newManager(t, []Job{j}, opts)
	run(t, m2)
	waitFor(t, 10*time.Second, "resumed delivery", func() bool { return statusOf(m2, "resume").RecordsSent == 2500 })
	if got := seqs(t, srv.Events()); len(got) != 2500 || srv.Count() != 2500 {
		t.Errorf("%d distinct, %d events; want 2500", len(got), srv.Count())
	}
}

func TestSetReload(t *testing.T) {
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	a, b, c := hecJob(t, srv, "a", nil), hecJob(t, srv, "b", nil), hecJob(t, srv, "c", nil)
	m := newManager(t, []Job{a, b}, testOpts(t))
	run(t, m)
	ja, jb := m.find("a"), m.find("b")

	b2 := b
	b2.Fields = []string{"SourcePort"}
	if err := m.Set([]Job{a, b2, c}); err != nil {
		t.Fatal(err)
	}
	if m.find("a") != ja {
		t.Error("unchanged job a was replaced")
	}
	if m.find("b") == jb || jb.cancel != nil {
		t.Error("changed job b was not restarted")
	}
	if m.find("c") == nil || m.find("c").cancel == nil {
		t.Error("added job c not running")
	}
	if err := m.Set([]Job{a, b2, c}); err != nil || m.find("a") != ja {
		t.Errorf("a reload without changes changed something: %v", err)
	}
	bad := c
	bad.Fields = []string{"NoSuchField"}
	if err := m.Set([]Job{a, bad}); err == nil || len(m.Status()) != 3 {
		t.Errorf("a bad reload must change nothing: %v, %d jobs", err, len(m.Status()))
	}
	if err := m.Set([]Job{a}); err != nil {
		t.Fatal(err)
	}
	if st := m.Status(); len(st) != 1 || st[0].Name != "a" {
		t.Errorf("status after removal = %+v", st)
	}
	pushN(m, 0, 10)
	waitFor(t, 5*time.Second, "job a still delivers", func() bool { return statusOf(m, "a").RecordsSent == 10 })
}
