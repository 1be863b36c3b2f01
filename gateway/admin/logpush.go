package admin

import (
	"bytes"
	"encoding/json"
	"maps"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// Logpush is the event as Logpush records: one of audit_logs
// (Cloudflare's classic audit-log field names) and one of audit_logs_v2
// (the v2 shape, which Cloudflare recommends for new work), so a job can
// select either.
func (e Event) Logpush() (v1, v2 logpush.Record) {
	meta := map[string]any{"description": e.Description}
	maps.Copy(meta, e.Metadata)
	if e.Error != "" {
		meta["error"] = e.Error
	}
	meta["actor_context"] = e.Actor.Context
	meta["actor_role"] = string(e.Actor.Role)
	metaJSON := rawJSON(meta)
	v1 = logpush.Record{
		{Name: "ActionResult", Value: logpush.Bool(e.Result)},
		{Name: "ActionType", Value: logpush.String(e.Action)},
		{Name: "ActorEmail", Value: logpush.String("")},
		{Name: "ActorID", Value: logpush.String(e.Actor.ID)},
		{Name: "ActorIP", Value: logpush.String(e.Actor.IP)},
		{Name: "ActorType", Value: logpush.String(e.Actor.Type)},
		{Name: "ID", Value: logpush.String(e.ID)},
		{Name: "Interface", Value: logpush.String(e.Actor.Interface)},
		{Name: "Metadata", Value: metaJSON},
		{Name: "NewValue", Value: objectOrNull(e.NewValue)},
		{Name: "OldValue", Value: objectOrNull(e.OldValue)},
		{Name: "ResourceID", Value: logpush.String(e.ResourceID)},
		{Name: "ResourceType", Value: logpush.String(e.ResourceType)},
		{Name: "When", Value: logpush.Time(e.When)},
	}
	token := logpush.Value{}
	if e.Actor.Context == "api_token" {
		token = rawJSON(map[string]string{"name": e.Actor.ID, "role": string(e.Actor.Role)})
	}
	value := e.NewValue
	if value == nil {
		value = e.OldValue
	}
	v2 = logpush.Record{
		{Name: "ActionDescription", Value: logpush.String(e.Description)},
		{Name: "ActionResult", Value: logpush.String(e.ResultString())},
		{Name: "ActionTimestamp", Value: logpush.Time(e.When)},
		{Name: "ActionType", Value: logpush.String(e.Action)},
		{Name: "ActorContext", Value: logpush.String(e.Actor.Context)},
		{Name: "ActorEmail", Value: logpush.String("")},
		{Name: "ActorID", Value: logpush.String(e.Actor.ID)},
		{Name: "ActorIPAddress", Value: logpush.String(e.Actor.IP)},
		{Name: "ActorTokenDetails", Value: token},
		{Name: "ActorType", Value: logpush.String(e.Actor.Type)},
		{Name: "AuditLogID", Value: logpush.String(e.ID)},
		{Name: "Raw", Value: metaJSON},
		{Name: "ResourceID", Value: logpush.String(e.ResourceID)},
		{Name: "ResourceProduct", Value: logpush.String("edgegw")},
		{Name: "ResourceScope", Value: logpush.String("appliance")},
		{Name: "ResourceType", Value: logpush.String(e.ResourceType)},
		{Name: "ResourceValue", Value: objectOrNull(value)},
	}
	return v1, v2
}

func rawJSON(v any) logpush.Value {
	b, err := json.Marshal(v)
	if err != nil {
		return logpush.Value{}
	}
	return logpush.RawJSON(string(b))
}

// objectOrNull is b compacted to one line (records are NDJSON lines), or
// null when there is none.
func objectOrNull(b json.RawMessage) logpush.Value {
	var out bytes.Buffer
	if len(b) == 0 || json.Compact(&out, b) != nil {
		return logpush.Value{}
	}
	return logpush.RawJSON(out.String())
}
