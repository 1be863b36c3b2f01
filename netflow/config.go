package netflow

import (
	"fmt"
	"net"
	"net/netip"
	"strconv"
	"time"

	"github.com/edgegw/edgegw/netflow/alert"
	"github.com/edgegw/edgegw/netflow/export"
	"github.com/edgegw/edgegw/netflow/store"
)

// Config is the `netflow:` section.
type Config struct {
	SampleRate int `yaml:"sample_rate"` // 1 in N packets; default 100
	// Ingest receives flows from other routers; nil: none.
	Ingest *IngestConfig `yaml:"ingest"`
	// Analytics keeps flows for /api/v1/flows; nil: no store.
	Analytics *store.Config `yaml:"analytics"`
	// Alerts are volumetric rules on the flows; nil: none.
	Alerts *alert.Config `yaml:"alerts"`
	// Export sends the gateway's own sampled flows to IPFIX collectors;
	// empty: none.
	Export []ExportConfig `yaml:"export"`
}

// ExportConfig is one `netflow.export:` entry: an IPFIX collector (nfdump's
// nfcapd, pmacct's nfacctd, …) that receives the gateway's sampled flows
// over UDP, with the sampling rate announced in an options record.
type ExportConfig struct {
	// Collector is host:port, e.g. "192.0.2.10:4739" or
	// "collector.office.example:2055".
	Collector string `yaml:"collector"`
	// ObservationDomain is the IPFIX observation domain ID; collectors
	// keep templates and sampling per exporter address and domain.
	ObservationDomain uint32 `yaml:"observation_domain"`
	// TemplateRefresh is how often templates are sent again (UDP has no
	// session to learn them from); default 60s.
	TemplateRefresh time.Duration `yaml:"template_refresh"`
}

// IngestConfig is `netflow.ingest:`: flow records other routers export
// (NetFlow v5, v9, IPFIX, sFlow v5) join the gateway's own samples.
type IngestConfig struct {
	// Listen are UDP addresses, host:port with host an IP address or
	// empty (every address), e.g. ":2055" or "10.0.0.1:4739". Each takes
	// every supported version.
	Listen []string `yaml:"listen"`
	// Exporters are the routers allowed to send flows (addresses or
	// prefixes); a datagram from any other source is counted and dropped
	// before it is decoded. Empty: every source is accepted, which a
	// listener off loopback should not do.
	Exporters []netip.Prefix `yaml:"exporters"`
}

// SetDefaults applies the default sampling rate.
func (c *Config) SetDefaults() {
	if c.SampleRate == 0 {
		c.SampleRate = 100
	}
	if c.Analytics != nil {
		c.Analytics.SetDefaults()
	}
	if c.Alerts != nil {
		c.Alerts.SetDefaults()
	}
	for i := range c.Export {
		if c.Export[i].TemplateRefresh == 0 {
			c.Export[i].TemplateRefresh = export.DefaultTemplateRefresh
		}
	}
}

// Validate checks the rate.
func (c *Config) Validate(report func(field, msg string)) {
	if c.SampleRate < 1 || c.SampleRate > 1_000_000 {
		report("sample_rate", fmt.Sprintf("must be from 1 (every packet) to 1000000, got %d", c.SampleRate))
	}
	if c.Ingest != nil {
		c.Ingest.validate(report)
	}
	if c.Analytics != nil {
		c.Analytics.Validate(func(f, msg string) { report("analytics."+f, msg) })
	}
	if c.Alerts != nil {
		c.Alerts.Validate(func(f, msg string) { report("alerts."+f, msg) })
	}
	seen := map[string]bool{}
	for i, e := range c.Export {
		field := fmt.Sprintf("export[%d]", i)
		host, port, err := net.SplitHostPort(e.Collector)
		if err != nil {
			report(field+".collector", fmt.Sprintf("%q is not host:port: %v", e.Collector, err))
		} else if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 || host == "" {
			report(field+".collector", fmt.Sprintf("%q: needs a host and a port from 1 to 65535", e.Collector))
		}
		if e.TemplateRefresh < time.Second || e.TemplateRefresh > time.Hour {
			report(field+".template_refresh", fmt.Sprintf("must be from 1s to 1h, got %v", e.TemplateRefresh))
		}
		if seen[e.Collector] {
			report(field+".collector", fmt.Sprintf("%q is listed twice", e.Collector))
		}
		seen[e.Collector] = true
	}
}

// ExportCollectors returns the collectors netflow.export names.
func (c *Config) ExportCollectors() []export.Collector {
	var cs []export.Collector
	for _, e := range c.Export {
		cs = append(cs, export.Collector{Addr: e.Collector, Domain: e.ObservationDomain, TemplateRefresh: e.TemplateRefresh})
	}
	return cs
}

func (c *IngestConfig) validate(report func(field, msg string)) {
	if len(c.Listen) == 0 {
		report("ingest.listen", "missing: at least one UDP address such as \":2055\"")
	}
	for i, p := range c.Exporters {
		if p.Masked() != p {
			report(fmt.Sprintf("ingest.exporters[%d]", i), fmt.Sprintf("%s has host bits set; did you mean %s?", p, p.Masked()))
		}
	}
	seen := map[string]bool{}
	for i, a := range c.Listen {
		field := fmt.Sprintf("ingest.listen[%d]", i)
		host, port, err := net.SplitHostPort(a)
		if err != nil {
			report(field, fmt.Sprintf("%q is not host:port: %v", a, err))
			continue
		}
		if n, err := strconv.ParseUint(port, 10, 16); err != nil || n == 0 {
			report(field, fmt.Sprintf("%q: port must be from 1 to 65535", a))
		}
		if host != "" {
			if _, err := netip.ParseAddr(host); err != nil {
				report(field, fmt.Sprintf("%q: host must be an IP address or empty: %v", a, err))
			}
		}
		if seen[a] {
			report(field, fmt.Sprintf("%q is listed twice", a))
		}
		seen[a] = true
	}
}
