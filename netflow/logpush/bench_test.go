package logpush

import (
	"net/url"
	"syscall"
	"testing"
	"time"

	"github.com/edgegw/edgegw/netflow/logpush/hectest"
)

func cpuTime() time.Duration {
	var ru syscall.Rusage
	syscall.Getrusage(syscall.RUSAGE_SELF, &ru)
	return time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
}

// BenchmarkExport measures records per second from Push to a HEC receiver
// on loopback (HTTPS, gzip, write-ahead segments and an fsynced spool),
// and the process CPU (exporter and receiver together) per 100,000
// records. Push never waits, so the producer loop paces itself on the
// job's queue (as a burst limited by the spooler would) and no record may
// be dropped.
//
//	go test -run '^$' -bench Export -benchtime 400000x ./netflow/logpush/
func BenchmarkExport(b *testing.B) {
	for _, bc := range []struct {
		name, path string
		ack        bool
	}{
		{"event", "/services/collector/event", false},
		{"raw", "/services/collector/raw", false},
		{"event-ack", "/services/collector/event", true},
	} {
		b.Run(bc.name, func(b *testing.B) {
			srv := hectest.New(hectest.Config{Tokens: []string{testToken}, CountOnly: true, Ack: bc.ack})
			defer srv.Close()
			j := hecJob(b, srv, "bench", nil)
			j.Destination = srv.SplunkURL(bc.path, url.Values{"channel": {testChannel}, "sourcetype": {"edgegw:network"}})
			j.MaxUploadRecords = 10_000
			j.IndexerAck = bc.ack
			opts := testOpts(b)
			m := newManager(b, []Job{j}, opts)
			r := run(b, m)
			recs := make([]Record, 10_000)
			for i := range recs {
				recs[i] = benchRecord(i)
			}
			jb := m.find("bench")
			b.ResetTimer()
			cpu0, t0 := cpuTime(), time.Now()
			for i := range b.N {
				m.Push("network_analytics_logs", recs[i%len(recs)])
				if i%1024 == 0 {
					for jb.queued() > m.opts.QueueBytes/2 {
						time.Sleep(100 * time.Microsecond)
					}
				}
			}
			r.stop() // spools the last partial batch
			r = run(b, m)
			waitFor(b, 5*time.Minute, "all delivered", func() bool { return srv.Count() >= b.N })
			elapsed, cpu := time.Since(t0), cpuTime()-cpu0
			b.StopTimer()
			st := statusOf(m, "bench")
			if st.Dropped != 0 {
				b.Fatalf("%d records dropped", st.Dropped)
			}
			b.ReportMetric(float64(b.N)/elapsed.Seconds(), "records/s")
			b.ReportMetric(cpu.Seconds()*100_000/float64(b.N), "cpu-s/100k")
			b.ReportMetric(float64(st.BytesSent)/float64(b.N), "gzip-B/record")
		})
	}
}

// queued returns the bytes waiting in the job's queue.
func (j *job) queued() int {
	j.mu.Lock()
	defer j.mu.Unlock()
	return j.qBytes
}
