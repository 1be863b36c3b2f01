package netflow

import (
	"strings"
	"testing"
	"time"
)

func TestExportDefaults(t *testing.T) {
	c := Config{Export: []ExportConfig{{Collector: "h:1"}}}
	c.SetDefaults()
	if c.Export[0].TemplateRefresh != time.Minute {
		t.Errorf("template_refresh default %v, want 1m", c.Export[0].TemplateRefresh)
	}
	if cs := c.ExportCollectors(); len(cs) != 1 || cs[0].Addr != "h:1" || cs[0].TemplateRefresh != time.Minute {
		t.Errorf("collectors %+v", cs)
	}
}

func TestConfigValidate(t *testing.T) {
	for _, tc := range []struct {
		name string
		cfg  Config
		want string // a substring of the report; "" for valid
	}{
		{"sampling only", Config{SampleRate: 100}, ""},
		{"rate 0", Config{SampleRate: 0}, "sample_rate"},
		{"ingest", Config{SampleRate: 1, Ingest: &IngestConfig{Listen: []string{":2055", "10.0.0.1:4739", "[::1]:6343"}}}, ""},
		{"ingest without listen", Config{SampleRate: 1, Ingest: &IngestConfig{}}, "ingest.listen: missing"},
		{"no port", Config{SampleRate: 1, Ingest: &IngestConfig{Listen: []string{"10.0.0.1"}}}, "ingest.listen[0]"},
		{"port 0", Config{SampleRate: 1, Ingest: &IngestConfig{Listen: []string{":0"}}}, "port must be"},
		{"port too big", Config{SampleRate: 1, Ingest: &IngestConfig{Listen: []string{":70000"}}}, "port must be"},
		{"host name", Config{SampleRate: 1, Ingest: &IngestConfig{Listen: []string{"router.example:2055"}}}, "IP address"},
		{"twice", Config{SampleRate: 1, Ingest: &IngestConfig{Listen: []string{":2055", ":2055"}}}, "ingest.listen[1]: \":2055\" is listed twice"},
		{"export", Config{SampleRate: 1, Export: []ExportConfig{{Collector: "192.0.2.10:4739", TemplateRefresh: time.Minute}, {Collector: "nfcapd.office.example:2055", TemplateRefresh: time.Second}}}, ""},
		{"export without port", Config{SampleRate: 1, Export: []ExportConfig{{Collector: "192.0.2.10", TemplateRefresh: time.Minute}}}, "export[0].collector: \"192.0.2.10\" is not host:port"},
		{"export without host", Config{SampleRate: 1, Export: []ExportConfig{{Collector: ":4739", TemplateRefresh: time.Minute}}}, "export[0].collector: \":4739\": needs a host"},
		{"export port 0", Config{SampleRate: 1, Export: []ExportConfig{{Collector: "h:0", TemplateRefresh: time.Minute}}}, "port from 1 to 65535"},
		{"export refresh", Config{SampleRate: 1, Export: []ExportConfig{{Collector: "h:1", TemplateRefresh: time.Millisecond}}}, "export[0].template_refresh: must be from 1s to 1h"},
		{"export twice", Config{SampleRate: 1, Export: []ExportConfig{{Collector: "h:1", TemplateRefresh: time.Minute}, {Collector: "h:1", TemplateRefresh: time.Minute}}}, "export[1].collector: \"h:1\" is listed twice"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			var got []string
			tc.cfg.Validate(func(field, msg string) { got = append(got, field+": "+msg) })
			all := strings.Join(got, "; ")
			if tc.want == "" && len(got) > 0 {
				t.Fatalf("valid config reported: %s", all)
			}
			if tc.want != "" && !strings.Contains(all, tc.want) {
				t.Fatalf("report %q does not contain %q", all, tc.want)
			}
		})
	}
}
