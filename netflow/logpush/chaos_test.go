package logpush

import (
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

// TestChaos pushes 100,000 records while the receiver drops connections
// for a while, loses one answer after storing the batch, and the Manager
// is restarted once mid-delivery. Every record must arrive; duplicates are
// bounded by one batch per failure that can duplicate (the lost answer and
// the restart).
func TestChaos(t *testing.T) {
	if testing.Short() {
		t.Skip("chaos test")
	}
	const total, batch = 100_000, 1000
	srv := hectest.New(hectest.Config{Tokens: []string{testToken}})
	defer srv.Close()
	j := hecJob(t, srv, "chaos", nil)
	j.MaxUploadRecords = batch
	opts := testOpts(t)

	m1 := newManager(t, []Job{j}, opts)
	r1 := run(t, m1)
	pushN(m1, 0, 30_000)
	waitFor(t, 20*time.Second, "first deliveries", func() bool { return srv.Count() >= 5_000 })
	srv.Fault(hectest.Fault{Reset: true, Ingest: true}, hectest.Busy())

	srv.SetDown(true)
	pushN(m1, 30_000, 30_000)
	waitFor(t, 20*time.Second, "retries while down", func() bool { return statusOf(m1, "chaos").Retries["transport"] >= 3 })
	srv.SetDown(false)
	waitFor(t, 20*time.Second, "recovery", func() bool { return statusOf(m1, "chaos").RecordsSent >= 35_000 })
	pushN(m1, 60_000, 10_000)
	r1.stop() // restart while batches are still spooled (and maybe one in flight)

	m2 := newManager(t, []Job{j}, opts)
	run(t, m2)
	pushN(m2, 70_000, total-70_000)
	waitFor(t, 25*time.Second, "every batch delivered", func() bool {
		return srv.Count() >= total && statusOf(m2, "chaos").SpooledBatches == 0
	})

	got := seqs(t, srv.Events())
	dups := 0
	for seq := range int64(total) {
		switch n := got[seq]; {
		case n == 0:
			t.Fatalf("record %d lost", seq)
		case n > 1:
			dups += n - 1
		}
	}
	if maxDups := 2 * batch; dups > maxDups {
		t.Errorf("%d duplicates, more than %d (one batch per failure)", dups, maxDups)
	}
	t.Logf("%d records, %d duplicates, receiver answers %v", total, dups, srv.Requests())
}
