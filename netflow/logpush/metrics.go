package logpush

import (
	"github.com/prometheus/client_golang/prometheus"
)

// collector reads the jobs' counters at scrape time, so jobs added or
// removed by Set appear and vanish without registering anything.
type collector struct{ m *Manager }

var (
	descRecordsSent = prometheus.NewDesc("edgegw_logpush_records_sent_total",
		"Records accepted by the destination (acknowledged, with HEC indexer acks).", []string{"job"}, nil)
	descBytesSent = prometheus.NewDesc("edgegw_logpush_sent_bytes_total",
		"Compressed bytes of the batches accepted by the destination.", []string{"job"}, nil)
	descBatchesSent = prometheus.NewDesc("edgegw_logpush_batches_sent_total",
		"Batches accepted by the destination.", []string{"job"}, nil)
	descDropped = prometheus.NewDesc("edgegw_logpush_dropped_records_total",
		"Records dropped, by reason: spool_limit (the spool's oldest batch, over its limit or the filesystem's reserve), queue_full (the newest record: the spool could not be written fast enough), format, unreadable, spool_error.", []string{"job", "reason"}, nil)
	descRetries = prometheus.NewDesc("edgegw_logpush_retries_total",
		"Failed delivery attempts that will be retried, by HTTP status or transport.", []string{"job", "code"}, nil)
	descSkipped = prometheus.NewDesc("edgegw_logpush_skipped_records_total",
		"Records not exported by choice: reason sample (sample_rate) or filter.", []string{"job", "reason"}, nil)
	descSpoolBytes = prometheus.NewDesc("edgegw_logpush_spool_bytes",
		"Bytes of batches waiting in the on-disk spool.", []string{"job"}, nil)
	descSpoolBatches = prometheus.NewDesc("edgegw_logpush_spool_batches",
		"Batches waiting in the on-disk spool.", []string{"job"}, nil)
	descSpoolLimit = prometheus.NewDesc("edgegw_logpush_spool_limit_bytes",
		"The spool's limit in force: spool_limit or the automatic one from the spool filesystem's size, capped to fit it.", []string{"job"}, nil)
	descRecovered = prometheus.NewDesc("edgegw_logpush_recovered_records_total",
		"Records spooled at start from unfinished batches a crash left written ahead.", []string{"job"}, nil)
	descLastComplete = prometheus.NewDesc("edgegw_logpush_last_complete_timestamp_seconds",
		"When a batch was last accepted, as a Unix time (absent before the first).", []string{"job"}, nil)
	descFailing = prometheus.NewDesc("edgegw_logpush_failing",
		"1 while the job's last delivery attempt failed, 2 once a permanent error stopped it, else 0.", []string{"job"}, nil)
)

func (c *collector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descRecordsSent, descBytesSent, descBatchesSent, descDropped,
		descRetries, descSkipped, descSpoolBytes, descSpoolBatches, descSpoolLimit, descRecovered, descLastComplete, descFailing} {
		ch <- d
	}
}

func (c *collector) Collect(ch chan<- prometheus.Metric) {
	for _, s := range c.m.Status() {
		n := s.Name
		counter := func(d *prometheus.Desc, v uint64, labels ...string) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), append([]string{n}, labels...)...)
		}
		gauge := func(d *prometheus.Desc, v float64) {
			ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, n)
		}
		counter(descRecordsSent, s.RecordsSent)
		counter(descBytesSent, s.BytesSent)
		counter(descBatchesSent, s.BatchesSent)
		for r, v := range s.DroppedBy {
			counter(descDropped, v, r)
		}
		for code, v := range s.Retries {
			counter(descRetries, v, code)
		}
		counter(descSkipped, s.SampledOut, "sample")
		counter(descSkipped, s.FilteredOut, "filter")
		gauge(descSpoolBytes, float64(s.SpooledBytes))
		gauge(descSpoolBatches, float64(s.SpooledBatches))
		gauge(descSpoolLimit, float64(s.SpoolLimit))
		counter(descRecovered, s.Recovered)
		if s.LastComplete != nil {
			gauge(descLastComplete, float64(s.LastComplete.UnixNano())/1e9)
		}
		failing := 0.0
		if s.State == "failed" {
			failing = 2
		} else if s.LastError != nil {
			failing = 1
		}
		gauge(descFailing, failing)
	}
}
