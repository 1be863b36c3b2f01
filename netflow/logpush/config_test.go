package logpush

import (
	"fmt"
	"slices"
	"strings"
	"testing"
	"time"
)

func validJob() Job {
	return Job{Name: "j", Dataset: "network_analytics_logs", TokenFile: "/etc/edgegw/hec-token",
		Destination: "splunk://splunk.example:8088/services/collector/event?channel=9a1c7b5e-3f2d-4c8e-b1a0-6d5f4e3c2b1a&sourcetype=edgegw:network"}
}

func problems(j Job) []string {
	j.SetDefaults()
	var out []string
	j.Validate(func(field, msg string) { out = append(out, field+": "+msg) })
	return out
}

func TestValidate(t *testing.T) {
	tests := []struct {
		name string
		mod  func(*Job)
		want string // "" means valid
	}{
		{"valid", func(*Job) {}, ""},
		{"example file job", func(j *Job) {
			j.Dataset, j.Destination, j.TokenFile = "gateway_dns", "file:///var/log/edgegw/dns.ndjson", ""
		}, ""},
		{"https with header token", func(j *Job) {
			j.Destination, j.TokenFile = "https://logs.example/ingest?header_Authorization=Basic%20abc", ""
		}, ""},
		{"splunk token in header", func(j *Job) {
			j.Destination, j.TokenFile = "splunk://s:8088/services/collector/raw?header_Authorization=Splunk%20x", ""
		}, ""},
		{"unknown field", func(j *Job) { j.Fields = []string{"Datetime", "SourcPort"} }, `fields[1]: "SourcPort" is not a field of network_analytics_logs (did you mean "SourcePort"?)`},
		{"field of another dataset", func(j *Job) { j.Fields = []string{"QueryName"} }, `fields[0]: "QueryName" is not a field of network_analytics_logs`},
		{"dataset", func(j *Job) { j.Dataset = "http_requests" }, `dataset: "http_requests" is not one of`},
		{"no destination", func(j *Job) { j.Destination = "" }, "destination: missing"},
		{"bad scheme", func(j *Job) { j.Destination = "gs://bucket/x" }, `destination: scheme "gs" is not one of splunk, https, file, syslog+tls, syslog+tcp, s3`},
		{"syslog tls", func(j *Job) {
			j.Destination, j.TokenFile = "syslog+tls://siem.example?facility=security&severity=notice&app-name=edgegw&msgid=flows", ""
		}, ""},
		{"syslog mutual TLS", func(j *Job) {
			j.Destination, j.TokenFile, j.CertFile, j.KeyFile = "syslog+tls://siem.example", "", "/etc/edgegw/c.pem", "/etc/edgegw/k.pem"
		}, ""},
		{"cert without key", func(j *Job) { j.CertFile = "/etc/edgegw/c.pem" }, "cert_file: cert_file and key_file go together"},
		{"cert on plain syslog", func(j *Job) {
			j.Destination, j.CertFile, j.KeyFile = "syslog+tcp://h", "/c.pem", "/k.pem"
		}, "cert_file: a client certificate needs a TLS destination"},
		{"cert on file", func(j *Job) {
			j.Destination, j.CertFile, j.KeyFile = "file:///var/log/x", "/c.pem", "/k.pem"
		}, "cert_file: a client certificate needs a TLS destination"},
		{"syslog tcp", func(j *Job) { j.Destination, j.TokenFile = "syslog+tcp://192.0.2.7:1514", "" }, ""},
		{"syslog no host", func(j *Job) { j.Destination = "syslog+tls://:6514" }, "destination: expected a host"},
		{"syslog path", func(j *Job) { j.Destination = "syslog+tcp://h/x" }, "destination: a syslog destination has no path"},
		{"syslog port", func(j *Job) { j.Destination = "syslog+tcp://h:99999" }, `destination: port "99999" is not a port number`},
		{"syslog facility", func(j *Job) { j.Destination = "syslog+tls://h?facility=local9" }, `destination: facility="local9"`},
		{"syslog severity", func(j *Job) { j.Destination = "syslog+tls://h?severity=loud" }, `destination: severity="loud"`},
		{"syslog app-name", func(j *Job) { j.Destination = "syslog+tls://h?app-name=a%20b" }, `destination: app-name="a b": expected 1 to 48 printable ASCII`},
		{"syslog insecure on tcp", func(j *Job) { j.Destination = "syslog+tcp://h?insecure-skip-verify=true" }, "destination: insecure-skip-verify applies to syslog+tls:// only"},
		{"syslog typo", func(j *Job) { j.Destination = "syslog+tls://h?facilty=user" }, `destination: unknown parameter "facilty"`},
		{"s3", func(j *Job) {
			j.Destination = "s3://edge-logs/gw/{DATE}?region=eu-central-1&access-key-id=AKIAEXAMPLE&endpoint=https://minio.example:9000&sse=AES256&path-style=true"
		}, ""},
		{"s3 no secret", func(j *Job) {
			j.Destination, j.TokenFile = "s3://edge-logs/gw?region=eu-central-1&access-key-id=AKIAEXAMPLE", ""
		}, "token_file: missing: s3 needs the secret access key"},
		{"s3 secret in URL", func(j *Job) {
			j.Destination = "s3://edge-logs?region=r&access-key-id=A&secret-access-key=S"
		}, "destination: credentials in the URL are not supported"},
		{"s3 bucket", func(j *Job) { j.Destination = "s3://Edge_Logs?region=r&access-key-id=A" }, `destination: bucket "Edge_Logs": only lower-case`},
		{"s3 region", func(j *Job) { j.Destination = "s3://edge-logs?access-key-id=A" }, "destination: region= is missing"},
		{"s3 key id", func(j *Job) { j.Destination = "s3://edge-logs?region=r" }, "destination: access-key-id= is missing"},
		{"s3 endpoint", func(j *Job) { j.Destination = "s3://edge-logs?region=r&access-key-id=A&endpoint=minio:9000" }, `destination: endpoint="minio:9000": expected https://host[:port]`},
		{"s3 sse", func(j *Job) { j.Destination = "s3://edge-logs?region=r&access-key-id=A&sse=aws:kms" }, `destination: sse="aws:kms": only AES256`},
		{"s3 prefix", func(j *Job) { j.Destination = "s3://edge-logs/a/../b?region=r&access-key-id=A" }, `destination: prefix "a/../b"`},
		{"s3 typo", func(j *Job) { j.Destination = "s3://edge-logs?region=r&access-key-id=A&regoin=x" }, `destination: unknown parameter "regoin"`},
		{"no host", func(j *Job) { j.Destination = "splunk:///services/collector/event" }, "destination: expected a host"},
		{"not HEC path", func(j *Job) { j.Destination = "splunk://s:8088/collector" }, `destination: path "/collector" is not a HEC endpoint`},
		{"bad channel", func(j *Job) { j.Destination = "splunk://s:8088/services/collector/event?channel=abc" }, `destination: channel="abc" is not a GUID`},
		{"typo param", func(j *Job) { j.Destination = "splunk://s:8088/services/collector/event?sourcetyp=x" }, `destination: unknown parameter "sourcetyp"`},
		{"bad insecure", func(j *Job) { j.Destination = "splunk://s:8088/services/collector/event?insecure-skip-verify=yes" }, "insecure-skip-verify=\"yes\""},
		{"relative file", func(j *Job) { j.Destination = "file://var/log/x" }, "destination: expected file:///absolute/path"},
		{"file max_size", func(j *Job) { j.Destination = "file:///var/log/x?max_size=lots" }, `destination: max_size="lots"`},
		{"missing token", func(j *Job) { j.TokenFile = "" }, "token_file: missing"},
		{"ack needs channel", func(j *Job) {
			j.IndexerAck, j.Destination = true, "splunk://s:8088/services/collector/event"
		}, "indexer_ack: needs a splunk:// destination with a channel"},
		{"timestamp", func(j *Job) { j.TimestampFormat = "iso" }, `timestamp_format: "iso" is not one of`},
		{"sample rate", func(j *Job) { j.SampleRate = 1.5 }, "sample_rate: must be more than 0 and at most 1, got 1.5"},
		{"records", func(j *Job) { j.MaxUploadRecords = 2_000_000 }, "max_upload_records: must be from 1 to 1000000"},
		{"interval", func(j *Job) { j.MaxUploadInterval = time.Hour }, "max_upload_interval: must be from 1s to 5m"},
		{"spool limit", func(j *Job) { j.SpoolLimit = 10 }, "spool_limit: must be at least max_upload_bytes"},
		{"name", func(j *Job) { j.Name = "../etc" }, `name: "../etc" cannot name a spool directory`},
		{"filter ok", func(j *Job) {
			j.Filter = `ipsourceaddress in {10.0.0.0/8} and destinationport == 22 and outcome == "drop"`
		}, ""},
		{"filter bad field", func(j *Job) { j.Filter = `sourceprot == 22` }, "filter: "},
		{"filter bad type", func(j *Job) { j.Filter = `destinationport == "x"` }, "filter: "},
	}
	for _, tt := range tests {
		t.Run(tt.name, func(t *testing.T) {
			j := validJob()
			tt.mod(&j)
			got := problems(j)
			if tt.want == "" {
				if len(got) > 0 {
					t.Errorf("unexpected problems: %q", got)
				}
				return
			}
			if !slices.ContainsFunc(got, func(p string) bool { return strings.Contains(p, tt.want) }) {
				t.Errorf("problems %q lack %q", got, tt.want)
			}
		})
	}
}

func TestFieldsCatalogue(t *testing.T) {
	for _, ds := range Datasets {
		fs := Fields(ds)
		if len(fs) < 15 {
			t.Errorf("%s: only %d fields", ds, len(fs))
		}
		seen := map[string]bool{}
		for _, f := range fs {
			if seen[f] {
				t.Errorf("%s: %s twice", ds, f)
			}
			seen[f] = true
		}
		if _, err := FilterSchema(ds); err != nil {
			t.Errorf("%s: filter schema: %v", ds, err)
		}
	}
	for _, f := range []string{"Datetime", "ColoCode", "ColoName", "ColoCountry", "Direction", "IPSourceAddress",
		"IPDestinationAddress", "IPSourceSubnet", "IPDestinationSubnet", "IPProtocol", "IPProtocolName", "IPTotalLength",
		"IPTTL", "SourcePort", "DestinationPort", "TCPFlags", "TCPFlagsString", "ICMPType", "ICMPCode", "Outcome",
		"Verdict", "MitigationSystem", "RuleID", "RulesetID", "SampleInterval", "GREKey", "TunnelName", "Email", "DeviceID"} {
		if !knownField("network_analytics_logs", f) {
			t.Errorf("network_analytics_logs lacks %s", f)
		}
	}
	if Fields("nope") != nil {
		t.Error("unknown dataset has fields")
	}
}

func TestParseDestination(t *testing.T) {
	d, err := parseDestination("splunk://h:8088/services/collector/raw?channel=9a1c7b5e-3f2d-4c8e-b1a0-6d5f4e3c2b1a&sourcetype=cf&index=net&host=gw&source=s&insecure-skip-verify=true&header_X-A=1")
	if err != nil {
		t.Fatal(err)
	}
	got := fmt.Sprintf("%s %s raw=%v ch=%s st=%s ix=%s host=%s src=%s insecure=%v hdr=%v", d.scheme, d.url.String(), d.raw,
		d.channel, d.sourcetype, d.index, d.host, d.source, d.insecure, d.headers)
	want := "splunk https://h:8088/services/collector/raw raw=true ch=9a1c7b5e-3f2d-4c8e-b1a0-6d5f4e3c2b1a st=cf ix=net host=gw src=s insecure=true hdr=map[X-A:[1]]"
	if got != want {
		t.Errorf("got  %s\nwant %s", got, want)
	}
	d, err = parseDestination("https://logs.example:8443/in?header_Authorization=Basic%20x&k=v")
	if err != nil || d.url.String() != "https://logs.example:8443/in?k=v" || d.headers.Get("Authorization") != "Basic x" {
		t.Errorf("https: %+v %v", d, err)
	}
	if r := d.redacted("https://logs.example:8443/in?header_Authorization=Basic%20x&k=v"); strings.Contains(r, "Basic") {
		t.Errorf("redacted = %s", r)
	}
}

func TestByteSize(t *testing.T) {
	for in, want := range map[string]ByteSize{"1GiB": 1 << 30, "5MB": 5e6, "512 MiB": 512 << 20, "100": 100} {
		var b ByteSize
		if err := b.UnmarshalText([]byte(in)); err != nil || b != want {
			t.Errorf("%q → %d, %v", in, b, err)
		}
	}
}

// FuzzParseDestination: any destination string is accepted or refused
// with an error, never a panic; an accepted one's redacted form never
// shows a header value, and syslog messages built from it keep their
// header fields printable, as RFC 5424 requires.
func FuzzParseDestination(f *testing.F) {
	for _, s := range []string{
		"splunk://h:8088/services/collector/event?channel=9a1c7b5e-3f2d-4c8e-b1a0-6d5f4e3c2b1a&header_X=secretvalue",
		"https://h/p?header_Authorization=Basic%20secretvalue", "file:///var/log/x?max_size=1MiB&keep=3",
		"syslog+tls://siem:6514?facility=local3&severity=notice&app-name=a&hostname=h&msgid=m",
		"syslog+tcp://[2001:db8::1]:514", "syslog://h?insecure-skip-verify=false",
		"s3://edge-logs/a/{DATE}/b?region=r&access-key-id=A&endpoint=http://127.0.0.1:9000&sse=AES256&path-style=1",
		"s3://x", "syslog+tls://h?app-name=%00", "://", "",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		d, err := parseDestination(s)
		if err != nil {
			return
		}
		for k, vs := range d.headers {
			for _, v := range vs {
				if len(v) >= 8 && strings.Contains(d.redacted(s), v) {
					t.Fatalf("redacted %q shows header %s", d.redacted(s), k)
				}
			}
		}
		if d.sys != nil {
			sd := newSyslogDest(d.sys, nil, nil, "gw", "m", time.Second)
			hdr := strings.Fields(string(sd.appendMessage(nil, nil, time.Unix(0, 0))))
			if len(hdr) != 7 {
				t.Fatalf("syslog header %q has %d fields, want 7", hdr, len(hdr))
			}
		}
		if d.s3 != nil {
			if err := checkBucketName(d.s3.bucket); err != nil || d.s3.accessKeyID == "" || d.s3.region == "" {
				t.Fatalf("accepted s3 destination %+v", d.s3)
			}
		}
	})
}
