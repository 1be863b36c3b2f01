package scim

import "github.com/prometheus/client_golang/prometheus"

// metrics counts what the server refused and what it changed.
type metrics struct {
	refused *prometheus.CounterVec
	writes  *prometheus.CounterVec
	devices *prometheus.CounterVec
	users   *prometheus.Desc
	groups  *prometheus.Desc
}

func newMetrics() *metrics {
	return &metrics{
		refused: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_scim_requests_refused_total",
			Help: "SCIM requests refused, by reason: unauthorized, the RFC 7644 scimType of a 400 (invalidFilter, invalidSyntax, ...), or the HTTP status.",
		}, []string{"reason"}),
		writes: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_scim_writes_total",
			Help: "SCIM changes stored, by resource (User, Group) and method.",
		}, []string{"resource", "method"}),
		devices: prometheus.NewCounterVec(prometheus.CounterOpts{
			Name: "edgegw_scim_device_changes_total",
			Help: "Devices changed in the registry by SCIM: revoked (user deactivated or deleted) or regrouped (group memberships changed).",
		}, []string{"change"}),
		users:  prometheus.NewDesc("edgegw_scim_users", "Users provisioned by SCIM.", nil, nil),
		groups: prometheus.NewDesc("edgegw_scim_groups", "Groups provisioned by SCIM.", nil, nil),
	}
}

// Collector returns the server's Prometheus metrics for the owner to
// register.
func (s *Server) Collector() prometheus.Collector { return collector{s} }

type collector struct{ s *Server }

func (c collector) Describe(ch chan<- *prometheus.Desc) {
	m := c.s.metrics
	m.refused.Describe(ch)
	m.writes.Describe(ch)
	m.devices.Describe(ch)
	ch <- m.users
	ch <- m.groups
}

func (c collector) Collect(ch chan<- prometheus.Metric) {
	m := c.s.metrics
	m.refused.Collect(ch)
	m.writes.Collect(ch)
	m.devices.Collect(ch)
	users, groups := c.s.Counts()
	ch <- prometheus.MustNewConstMetric(m.users, prometheus.GaugeValue, float64(users))
	ch <- prometheus.MustNewConstMetric(m.groups, prometheus.GaugeValue, float64(groups))
}
