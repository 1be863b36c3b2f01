// Package logpush exports dataset records (network_analytics_logs,
// gateway_dns, access_requests) the way Cloudflare Logpush does, but
// without losing any: at-least-once delivery through an on-disk spool.
//
// Producers hand records to a [Sink] (the [Manager]). For each enabled job
// of the record's dataset, Push applies the job's filter (the rules
// language, compiled against [FilterSchema]) and sample_rate, then encodes
// the record into the job's in-memory batch: ndjson, or a HEC event
// envelope, with the selected fields and timestamp_format applied to
// timestamp values. A batch ends at max_upload_records, max_upload_bytes
// (uncompressed) or max_upload_interval, whichever comes first.
//
// Each job then runs two goroutines:
//
//   - the spooler gzips finished batches and writes each to
//     <state_dir>/logpush/<job>/<seq>.<records>.<format>.gz through a
//     temporary file, fsync and rename, so a crash leaves whole batches
//     only. When the spool exceeds spool_limit its oldest batch that is not
//     being sent is deleted and counted as dropped. Finished batches
//     waiting in memory are bounded at max(64 MiB, 2×max_upload_bytes): a
//     burst faster than gzip and the disk makes Push wait for the spooler;
//     only if the spool cannot be written for a second are the oldest
//     waiting batches dropped, counted as overflow. Nothing else is dropped.
//   - the sender delivers spooled batches oldest first and deletes one only
//     after the destination accepted it, or with HEC indexer acks
//     (indexer_ack) once /services/collector/ack reports it; a batch not
//     acked within Options.AckTimeout is sent again. Transport errors, 429
//     and 5xx are retried with capped, jittered exponential backoff that
//     honours Retry-After; any other status stops the job's delivery with
//     the destination's message in [JobStatus] and the log, while other
//     jobs go on. A restart resumes from the spool.
//
// Destinations: splunk://host:port/services/collector/event (or /raw) with
// channel, sourcetype, index, source, host, insecure-skip-verify and
// header_* parameters, sending "Authorization: Splunk <token>" from
// token_file; https://… (ndjson; header_* parameters become headers); and
// file:///path (ndjson appended and fsynced, rotated at max_size, keeping
// keep old files). Package hectest is a HEC receiver for tests.
package logpush
