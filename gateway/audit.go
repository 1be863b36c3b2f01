package gateway

import (
	"github.com/edgegw/edgegw/access"
	"github.com/edgegw/edgegw/gateway/admin"
)

// AuditRecord hands an admin audit event to Logpush in both audit
// datasets (admin.Event.Logpush), so a job can select either. Datasets no
// job selects cost nothing.
func (s *recordSink) AuditRecord(e admin.Event) {
	if m := s.mgr.Load(); m != nil {
		v1, v2 := e.Logpush()
		m.Push("audit_logs", v1)
		m.Push("audit_logs_v2", v2)
	}
}

// AccessRecord implements access.RecordSink.
func (s *recordSink) AccessRecord(r access.Record) {
	if m := s.mgr.Load(); m != nil {
		m.Push("access_requests", r.Logpush())
	}
}
