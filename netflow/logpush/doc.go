// Package logpush exports dataset records (network_analytics_logs,
// gateway_dns, access_requests) the way Cloudflare Logpush does, but
// without losing any: at-least-once delivery through an on-disk spool.
//
// Producers hand records to a [Sink] (the [Manager]). For each enabled job
// of the record's dataset, Push applies the job's filter (the rules
// language, compiled against [FilterSchema]) and sample_rate, then encodes
// the record into the job's queue: ndjson, or a HEC event envelope, with
// the selected fields and timestamp_format applied to timestamp values.
// Push never blocks: the queue is bounded (Options.QueueBytes) and a
// record that does not fit is dropped and counted (reason queue_full),
// which happens only when the disk stalls or fails. A batch ends at
// max_upload_records, max_upload_bytes (uncompressed) or
// max_upload_interval, whichever comes first.
//
// Each job then runs two goroutines:
//
//   - the spooler takes the queue at least every Options.SyncInterval
//     (500ms; a quarter of max_upload_interval if that is shorter),
//     compresses the open batch as one gzip stream and writes it ahead: per
//     tick, a sync flush of the stream, the new bytes appended as a
//     checksummed frame to <state_dir>/logpush/<job>/wal-<id>.<format>, and
//     one fsync, so kill -9 or a power cut loses at most the last tick's
//     records. A finished batch's closed stream is written to the spool as
//     <seq>.<records>.<format>.gz through a temporary file, fsync and
//     rename, and its segment removed; at start, segments a crash left are
//     decoded up to their last whole frame and spooled (counted as
//     recovered). The spool's limit is spool_limit or, by default, the
//     lesser of 1 GiB and 25 % of its filesystem shared among the jobs; a
//     spool_limit the filesystem cannot hold is capped (with a warning),
//     and 10 % of the filesystem is kept free whatever the limit. Past
//     either, the oldest batch that is not being sent is deleted and
//     counted as dropped (spool_limit). If the spool cannot be written,
//     the spooler keeps compressed records in memory (up to 16 MiB) and
//     retries every tick; past that the queue fills and Push drops.
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
// keep old files); syslog+tls://host[:6514] and syslog+tcp://host[:514]
// (one RFC 5424 message per record, the record's JSON as MSG, octet
// counting; facility, severity, app-name, hostname, msgid and
// insecure-skip-verify parameters), each batch over a connection of its
// own that counts as delivered once the receiver has read everything and
// closed its side, syslog having no acknowledgements; and
// s3://bucket/prefix (region, access-key-id, endpoint, sse, path-style,
// insecure-skip-verify; the secret access key in token_file), one object
// per batch, the spooled gzip as is, named
// <prefix>/{DATE}/{start}_{end}_{hash}.log.gz like Cloudflare Logpush's,
// the same name when a batch is sent again. Package hectest is a HEC
// receiver for tests.
package logpush
