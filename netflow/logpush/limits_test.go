package logpush

import (
	"bytes"
	"log/slog"
	"math/rand/v2"
	"os"
	"path/filepath"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush/hectest"
	"golang.org/x/sys/unix"
)

func TestBudgetFor(t *testing.T) {
	const MiB, GiB = 1 << 20, 1 << 30
	for _, tc := range []struct {
		name       string
		size       int64
		configured int64
		jobs       int
		want       spoolBudget
	}{
		{"appliance /data, one job", 256 * MiB, 0, 1, spoolBudget{limit: 64 * MiB, reserve: 256 * MiB / 10, auto: true}},
		{"appliance /data, three jobs", 256 * MiB, 0, 3, spoolBudget{limit: 256 * MiB / 4 / 3, reserve: 256 * MiB / 10, auto: true}},
		{"large disk: at most 1 GiB", 100 * GiB, 0, 2, spoolBudget{limit: GiB, reserve: 10 * GiB, auto: true}},
		{"configured, fits", 256 * MiB, 100 * MiB, 1, spoolBudget{limit: 100 * MiB, reserve: 256 * MiB / 10}},
		{"configured 1 GiB on /data: capped", 256 * MiB, GiB, 1, spoolBudget{limit: 256*MiB - 256*MiB/10, reserve: 256 * MiB / 10, capped: true}},
		{"configured, capped to the job's share", 256 * MiB, 200 * MiB, 2, spoolBudget{limit: (256*MiB - 256*MiB/10) / 2, reserve: 256 * MiB / 10, capped: true}},
		{"no jobs counted as one", 256 * MiB, 0, 0, spoolBudget{limit: 64 * MiB, reserve: 256 * MiB / 10, auto: true}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			if got := budgetFor(fsSpace{size: tc.size, avail: tc.size}, tc.configured, tc.jobs); got != tc.want {
				t.Errorf("budgetFor = %+v, want %+v", got, tc.want)
			}
		})
	}
}

// mountTmpfs mounts a tmpfs of size bytes under a new temporary directory
// and unmounts it at cleanup (registered before anything that uses it, so
// it runs last).
func mountTmpfs(t *testing.T, size string) string {
	t.Helper()
	if os.Geteuid() != 0 {
		t.Skip("mounting a tmpfs needs root (CI runs tests as root)")
	}
	dir := filepath.Join(t.TempDir(), "data")
	if err := os.Mkdir(dir, 0o700); err != nil {
		t.Fatal(err)
	}
	if err := unix.Mount("tmpfs", dir, "tmpfs", unix.MS_NOSUID|unix.MS_NODEV, "size="+size+",mode=0700"); err != nil {
		t.Fatalf("mount tmpfs: %v", err)
	}
	t.Cleanup(func() {
		if err := unix.Unmount(dir, unix.MNT_DETACH); err != nil {
			t.Errorf("unmount %s: %v", dir, err)
		}
	})
	return dir
}

// syncBuffer is a log destination for tests.
type syncBuffer struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (s *syncBuffer) Write(p []byte) (int, error) {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.Write(p)
}

func (s *syncBuffer) String() string {
	s.mu.Lock()
	defer s.mu.Unlock()
	return s.b.String()
}

// bigRecord is benchRecord with a random, hardly compressible RuleID, so
// that a few thousand records fill megabytes of spool.
func bigRecord(rng *rand.Rand, seq int) Record {
	const alphabet = "ABCDEFGHIJKLMNOPQRSTUVWXYZabcdefghijklmnopqrstuvwxyz0123456789+/"
	id := make([]byte, 400)
	for i := range id {
		id[i] = alphabet[rng.IntN(len(alphabet))]
	}
	r := benchRecord(seq)
	for i := range r {
		if r[i].Name == "RuleID" {
			r[i].Value = String(string(id))
		}
	}
	return r
}

// TestSpoolSizedFromFilesystem runs jobs whose spool lives on a 16 MiB
// tmpfs (the appliance's /data in small) while the destination is down:
// the automatic limit is a quarter of the filesystem shared by the jobs,
// a configured limit larger than the filesystem is capped with a warning,
// the spool never holds more than its limit, and when other files eat the
// free space the spool gives up its oldest batches to keep 10 % free.
// Every dropped record is counted.
func TestSpoolSizedFromFilesystem(t *testing.T) {
	const MiB = 1 << 20
	data := mountTmpfs(t, "16m")
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	srv.SetDown(true)
	logs := &syncBuffer{}
	opts := testOpts(t)
	opts.StateDir = data
	opts.Logger = slog.New(slog.NewTextHandler(logs, nil))
	const batch = 500
	j := hecJob(t, srv, "siem", nil)
	j.MaxUploadRecords = batch
	m := newManager(t, []Job{j}, opts)
	run(t, m)

	if st := statusOf(m, "siem"); st.SpoolLimit != 4*MiB {
		t.Fatalf("automatic limit on a 16 MiB filesystem = %d, want %d", st.SpoolLimit, 4*MiB)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	seq := 0
	pushBatch := func(m *Manager, name string) {
		t.Helper()
		before := statusOf(m, name)
		for range batch {
			m.Push("network_analytics_logs", bigRecord(rng, seq))
			seq++
		}
		// One more batch is accounted for: spooled, or dropped with older ones.
		waitFor(t, 10*time.Second, "batch spooled", func() bool {
			st := statusOf(m, name)
			return st.SpooledBatches+int(st.Dropped/batch) == before.SpooledBatches+int(before.Dropped/batch)+1
		})
	}
	for statusOf(m, "siem").Dropped == 0 {
		pushBatch(m, "siem")
		if st := statusOf(m, "siem"); st.SpooledBytes > st.SpoolLimit {
			t.Fatalf("spool holds %d bytes, over its limit %d", st.SpooledBytes, st.SpoolLimit)
		}
		if seq > 200_000 {
			t.Fatal("the spool never reached its limit")
		}
	}
	st := statusOf(m, "siem")
	if st.DroppedBy[dropSpoolLimit] != st.Dropped || st.Dropped%batch != 0 {
		t.Errorf("drops = %+v", st.DroppedBy)
	}
	t.Logf("automatic limit %d: %d batches, %d bytes spooled after %d records; %d dropped", st.SpoolLimit, st.SpooledBatches, st.SpooledBytes, seq, st.Dropped)

	// Other files grow (the device registry, say): the spool keeps 10 %
	// of the filesystem free by dropping its oldest batches.
	fs, err := statSpace(data)
	if err != nil {
		t.Fatal(err)
	}
	reserve := fs.size / 10
	filler := make([]byte, fs.avail-reserve/2)
	if err := os.WriteFile(filepath.Join(data, "registry.db"), filler, 0o600); err != nil {
		t.Fatal(err)
	}
	droppedBefore := statusOf(m, "siem").Dropped
	pushBatch(m, "siem")
	st = statusOf(m, "siem")
	fs, _ = statSpace(data)
	if st.Dropped == droppedBefore || fs.avail < reserve-64<<10 {
		t.Errorf("below the reserve: %d bytes free, reserve %d; %d records dropped before, %d now", fs.avail, reserve, droppedBefore, st.Dropped)
	}
	os.Remove(filepath.Join(data, "registry.db"))

	// A configured limit the filesystem cannot hold is capped, with a
	// warning; with two jobs each gets half.
	j2 := hecJob(t, srv, "archive", nil)
	j2.Dataset = "gateway_dns" // records pushed below go to siem only
	j2.SpoolLimit = 1 << 30
	if err := m.Set([]Job{j, j2}); err != nil {
		t.Fatal(err)
	}
	capped := (16*MiB - 16*MiB/10) / 2
	if st := statusOf(m, "archive"); st.SpoolLimit != int64(capped) {
		t.Errorf("configured 1 GiB on 16 MiB with two jobs: limit %d, want %d", st.SpoolLimit, capped)
	}
	if !strings.Contains(logs.String(), "spool_limit is more than the spool filesystem can hold") {
		t.Errorf("no warning for the capped spool_limit in the log:\n%s", logs.String())
	}
	if st := statusOf(m, "siem"); st.SpoolLimit != 2*MiB {
		t.Errorf("automatic limit shared by two jobs = %d, want %d", st.SpoolLimit, 2*MiB)
	}
	pushBatch(m, "siem") // the smaller limit applies at the next batch
	if st := statusOf(m, "siem"); st.SpooledBytes > 2*MiB {
		t.Errorf("spool holds %d bytes, over its shared limit", st.SpooledBytes)
	}

	// Once the destination is back, exactly the surviving records arrive.
	srv.SetDown(false)
	waitFor(t, 20*time.Second, "survivors delivered", func() bool {
		st := statusOf(m, "siem")
		return st.SpooledBatches == 0 && st.RecordsSent+st.Dropped == uint64(seq)
	})
	st = statusOf(m, "siem")
	// A request that timed out after the receiver stored it is sent
	// again (at least once): count distinct records.
	if got := uint64(len(seqs(t, srv.Events()))); got != st.RecordsSent || st.RecordsSent+st.Dropped != uint64(seq) {
		t.Errorf("%d records pushed: %d sent, %d dropped, receiver has %d distinct", seq, st.RecordsSent, st.Dropped, got)
	}
}
