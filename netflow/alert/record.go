package alert

import (
	"math"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// Dataset is the Logpush dataset of alert events: the alert history
// (/api/v1/flows/alerts) as records, one per firing and one per resolve.
// Cloudflare has no Logpush dataset for its notifications; the fields are
// its notification webhook's (alert_type, alert_event,
// alert_correlation_id, policy_name) in Logpush's spelling, plus the
// event's prefix, rates and the rule's thresholds.
const Dataset = "flow_alerts"

// Alert events (AlertEvent), as Cloudflare's webhook payload names them.
const (
	EventStart = "ALERT_STATE_EVENT_START"
	EventEnd   = "ALERT_STATE_EVENT_END"
)

// Logpush returns the event as a flow_alerts record; coloName names the
// appliance, as network_analytics_logs' ColoName does ("" leaves it out).
// Name and Text are the webhook's. Rates are rounded to whole bits and
// packets per second; a threshold the rule does not set is left out.
func (ev Event) Logpush(coloName string) logpush.Record {
	p := newPayload(ev)
	r := logpush.Record{
		{Name: "Datetime", Value: logpush.Time(ev.Time)},
		{Name: "Name", Value: logpush.String(p.Name)},
		{Name: "Text", Value: logpush.String(p.Text)},
		{Name: "AlertType", Value: logpush.String(AlertType)},
		{Name: "AlertEvent", Value: logpush.String(p.AlertEvent)},
		{Name: "AlertCorrelationID", Value: logpush.String(ev.ID)},
		{Name: "PolicyName", Value: logpush.String(ev.Rule)},
		{Name: "Prefix", Value: logpush.String(ev.Prefix)},
		{Name: "State", Value: logpush.String(string(ev.State))},
		{Name: "BitsPerSecond", Value: logpush.Uint(uint64(math.Round(max(ev.BitsPerSecond, 0))))},
		{Name: "PacketsPerSecond", Value: logpush.Uint(uint64(math.Round(max(ev.PacketsPerSecond, 0))))},
		{Name: "DurationSeconds", Value: logpush.Uint(uint64(math.Round(ev.DurationSeconds)))},
	}
	if coloName != "" {
		r = append(r, logpush.Field{Name: "ColoName", Value: logpush.String(coloName)})
	}
	if ev.ThresholdBitsPerSecond > 0 {
		r = append(r, logpush.Field{Name: "ThresholdBitsPerSecond", Value: logpush.Uint(ev.ThresholdBitsPerSecond)})
	}
	if ev.ThresholdPacketsPerSecond > 0 {
		r = append(r, logpush.Field{Name: "ThresholdPacketsPerSecond", Value: logpush.Uint(ev.ThresholdPacketsPerSecond)})
	}
	return r
}
