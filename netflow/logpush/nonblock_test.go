package logpush

import (
	"net"
	"net/url"
	"os"
	"path/filepath"
	"slices"
	"sync"
	"testing"
	"time"

	"github.com/prometheus/client_golang/prometheus"
)

// silentHEC is a destination that accepts TCP connections and never
// answers: not the TLS handshake, not a request. It holds every
// connection until the test ends.
func silentHEC(t *testing.T) string {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	var mu sync.Mutex
	var conns []net.Conn
	done := make(chan struct{})
	go func() {
		defer close(done)
		for {
			c, err := ln.Accept()
			if err != nil {
				return
			}
			mu.Lock()
			conns = append(conns, c)
			mu.Unlock()
		}
	}()
	t.Cleanup(func() {
		ln.Close()
		<-done
		mu.Lock()
		for _, c := range conns {
			c.Close()
		}
		mu.Unlock()
	})
	q := url.Values{"channel": {testChannel}, "insecure-skip-verify": {"true"}}
	return "splunk://" + ln.Addr().String() + "/services/collector/event?" + q.Encode()
}

// spooledRecords sums the records of the batches in a job's spool
// directory, from their names.
func spooledRecords(t *testing.T, dir string) int {
	t.Helper()
	des, err := os.ReadDir(dir)
	if err != nil {
		t.Fatal(err)
	}
	n := 0
	for _, de := range des {
		if e, ok := parseEntryName(de.Name()); ok {
			n += e.records
		}
	}
	return n
}

// pushAll pushes records from..from+n-1 from producers goroutines, as the
// DNS loop, Access handlers and the sampler do, and returns how long the
// slowest single Push took.
func pushAll(m *Manager, producers, from, n int) (slowest time.Duration, all []time.Duration) {
	var wg sync.WaitGroup
	lat := make([][]time.Duration, producers)
	per := n / producers
	for p := range producers {
		wg.Go(func() {
			for i := from + p*per; i < from+(p+1)*per; i++ {
				r := benchRecord(i)
				t0 := time.Now()
				m.Push("network_analytics_logs", r)
				lat[p] = append(lat[p], time.Since(t0))
			}
		})
	}
	wg.Wait()
	for _, l := range lat {
		all = append(all, l...)
	}
	slices.Sort(all)
	return all[len(all)-1], all
}

// TestPushNeverBlocksOnDestination sends to a destination that never
// answers. Four producers push 100,000 records: none waits for the
// destination, none is dropped, and every one is in the spool once the
// job stops.
func TestPushNeverBlocksOnDestination(t *testing.T) {
	const total = 100_000
	j := Job{Name: "silent", Dataset: "network_analytics_logs", Destination: silentHEC(t),
		TokenFile: writeToken(t, testToken), TimestampFormat: TimestampUnixNano, MaxUploadRecords: 5000}
	opts := testOpts(t)
	opts.RequestTimeout = time.Hour
	m := newManager(t, []Job{j}, opts)
	r := run(t, m)

	done := make(chan struct{})
	var slowest time.Duration
	var lat []time.Duration
	go func() { slowest, lat = pushAll(m, 4, 0, total); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		t.Fatal("producers still pushing after 60s: Push blocks")
	}
	p99 := lat[len(lat)*99/100]
	t.Logf("Push latency: p99 %v, max %v", p99, slowest)
	// Push waits for nothing but the job's mutex; the bound is generous
	// (a loaded CI machine deschedules goroutines) yet far below any wait
	// for the destination, which here never comes.
	if slowest >= 2*time.Second {
		t.Errorf("a Push took %v", slowest)
	}
	waitFor(t, 30*time.Second, "every batch spooled", func() bool {
		return statusOf(m, "silent").SpooledBatches == total/5000
	})
	r.stop()
	st := statusOf(m, "silent")
	if st.Dropped != 0 || st.RecordsSent != 0 {
		t.Errorf("status = %+v", st)
	}
	if n := spooledRecords(t, filepath.Join(opts.StateDir, "logpush", "silent")); n != total {
		t.Errorf("%d records in the spool, want %d", n, total)
	}
}

// TestPushDropsWhenDiskStalls stalls the spooler, as a disk that stops
// answering would: producers keep pushing without waiting, the records
// past the bounded queue are dropped and counted (queue_full, in the
// status and the metric), and once the disk answers again exactly the
// queued records are spooled.
func TestPushDropsWhenDiskStalls(t *testing.T) {
	const total = 20_000
	srv := silentHEC(t)
	j := Job{Name: "stall", Dataset: "network_analytics_logs", Destination: srv,
		TokenFile: writeToken(t, testToken), TimestampFormat: TimestampUnixNano}
	opts := testOpts(t)
	opts.QueueBytes = 256 << 10
	reg := prometheus.NewRegistry()
	opts.Registerer = reg
	m := newManager(t, []Job{j}, opts)
	release := make(chan struct{})
	var stalls sync.Once
	stalled := make(chan struct{})
	m.find("stall").stall = func() {
		stalls.Do(func() { close(stalled) })
		<-release
	}
	r := run(t, m)

	done := make(chan struct{})
	go func() { pushAll(m, 4, 0, total); close(done) }()
	select {
	case <-done:
	case <-time.After(60 * time.Second):
		close(release)
		t.Fatal("producers blocked behind a stalled disk")
	}
	st := statusOf(m, "stall")
	accepted := total - int(st.DroppedBy[dropQueueFull])
	if st.DroppedBy[dropQueueFull] == 0 || st.Dropped != st.DroppedBy[dropQueueFull] || accepted*400 > 256<<10 || accepted < 100 {
		t.Fatalf("with a 256 KiB queue: %d accepted, drops %+v", accepted, st.DroppedBy)
	}
	mfs, err := reg.Gather()
	if err != nil {
		t.Fatal(err)
	}
	found := false
	for _, mf := range mfs {
		for _, mt := range mf.GetMetric() {
			labels := map[string]string{}
			for _, l := range mt.GetLabel() {
				labels[l.GetName()] = l.GetValue()
			}
			if mf.GetName() == "edgegw_logpush_dropped_records_total" && labels["reason"] == dropQueueFull {
				found = mt.GetCounter().GetValue() == float64(total-accepted)
			}
		}
	}
	if !found {
		t.Errorf("edgegw_logpush_dropped_records_total{reason=%q} is not %d", dropQueueFull, total-accepted)
	}

	<-stalled
	close(release)
	r.stop() // spools the open batch
	if n := spooledRecords(t, filepath.Join(opts.StateDir, "logpush", "stall")); n != accepted {
		t.Errorf("%d records in the spool, want the %d accepted", n, accepted)
	}
}
