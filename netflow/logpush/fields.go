package logpush

import (
	"net/netip"
	"slices"
	"strings"
	"sync"

	"github.com/edgegw/edgegw/firewall/rules"
)

// Field types in the catalogue: s string, i integer, ip address (a string
// on the wire), b bool, t timestamp, ss string array, x anything else
// (arrays of numbers, objects). Only the first six can appear in a filter.
var catalogue = map[string]string{
	// Cloudflare network_analytics_logs (packet level), the 2026-03-12
	// additions, and edgegw's own fields where Cloudflare has none.
	"network_analytics_logs": `
Datetime:t
AttackCampaignID:s AttackID:s AttackVector:s ColoCity:s ColoCode:s ColoCountry:s
ColoGeoHash:s ColoName:s DestinationASNName:s DestinationCountry:s
DestinationGeoHash:s Direction:s IPDestinationAddress:ip IPDestinationSubnet:s
IPProtocolName:s IPSourceAddress:ip IPSourceSubnet:s IPv4Options:s
IPv6ExtensionHeaders:s MitigationReason:s MitigationScope:s MitigationSystem:s
Outcome:s ProtocolState:s RuleID:s RuleName:s RulesetID:s RulesetOverrideID:s
SourceASNName:s SourceCountry:s SourceGeoHash:s TCPFlagsString:s TCPOptions:s
TCPSACKBlocks:s Verdict:s
DestinationASN:i DestinationPort:i GREChecksum:i GREEtherType:i GREHeaderLength:i
GREKey:i GRESequenceNumber:i GREVersion:i ICMPChecksum:i ICMPCode:i ICMPType:i
IPFragmentOffset:i IPHeaderLength:i IPMoreFragments:i IPProtocol:i IPTTL:i
IPTTLBuckets:i IPTotalLength:i IPTotalLengthBuckets:i IPv4Checksum:i IPv4DSCP:i
IPv4DontFragment:i IPv4ECN:i IPv4Identification:i IPv6DSCP:i IPv6ECN:i
IPv6FlowLabel:i IPv6Identification:i SampleInterval:i SourceASN:i SourcePort:i
TCPAcknowledgementNumber:i TCPChecksum:i TCPDataOffset:i TCPFlags:i TCPMSS:i
TCPSACKPermitted:i TCPSequenceNumber:i TCPTimestampECR:i TCPTimestampValue:i
TCPUrgentPointer:i TCPWindowScale:i TCPWindowSize:i UDPChecksum:i UDPPayloadLength:i
DNSQueryName:s DNSQueryType:s PFPCustomTag:i
TunnelName:s Email:s DeviceID:s OuterIPSourceAddress:ip OuterIPDestinationAddress:ip
Source:s SamplerAddress:ip ObservationDomainID:i Packets:i Bytes:i FlowStartTime:t FlowEndTime:t`,

	"gateway_dns": `
Datetime:t QueryID:s QueryName:s QueryNameReversed:s QueryType:i QueryTypeName:s
QuerySize:i RCode:i Protocol:s SrcIP:ip SrcPort:i SrcIPCountryCode:s DstIP:ip DstPort:i
DoHSubdomain:s DoTSubdomain:s ResolvedIPs:ss ResolvedIPCountryCodes:ss
ResourceRecords:x ResourceRecordsJSON:s CNAMEs:ss AuthoritativeNameServerIPs:ss
IsResponseCached:b EDEErrors:x PolicyID:s PolicyName:s ResolverDecision:s
InitialCategoryIDs:x InitialCategoryNames:ss MatchedCategoryIDs:x
MatchedCategoryNames:ss QueryCategoryIDs:x QueryCategoryNames:ss
ResolvedIPCategoryIDs:x ResolvedIPCategoryNames:ss CNAMECategoryIDs:x
CNAMECategoryNames:ss MatchedIndicatorFeedIDs:x MatchedIndicatorFeedNames:ss
QueryIndicatorFeedIDs:x QueryIndicatorFeedNames:ss ApplicationID:i
ApplicationName:s CustomResolverAddress:s CustomResolverPolicyID:s
CustomResolverPolicyName:s CustomResolverResponse:s CustomResolveDurationMs:i
Location:s LocationID:s DeviceID:s DeviceName:s Email:s UserID:s ColoCode:s
ColoID:i TimeZone:s EgressIP:ip`,

	"access_requests": `
Action:s Allowed:b AppDomain:s AppUUID:s Connection:s Country:s CreatedAt:t
Email:s IPAddress:ip PurposeJustificationPrompt:s PurposeJustificationResponse:s
RayID:s TemporaryAccessApprovers:ss TemporaryAccessDuration:i UserUID:s`,

	// edgegw's volumetric flow alerts (netflow/alert): Cloudflare's
	// notification webhook fields in Logpush's spelling, and the event's.
	"flow_alerts": `
Datetime:t Name:s Text:s AlertType:s AlertEvent:s AlertCorrelationID:s
PolicyName:s ColoName:s Prefix:s State:s BitsPerSecond:i PacketsPerSecond:i DurationSeconds:i
ThresholdBitsPerSecond:i ThresholdPacketsPerSecond:i`,

	// Cloudflare's audit logs, for edgegw's admin actions (gateway/admin):
	// the classic field names and the v2 shape.
	"audit_logs": `
ActionResult:b ActionType:s ActorEmail:s ActorID:s ActorIP:ip ActorType:s ID:s
Interface:s Metadata:x NewValue:x OldValue:x OwnerID:s ResourceID:s
ResourceType:s When:t`,

	"audit_logs_v2": `
AccountID:s AccountName:s ActionDescription:s ActionResult:s ActionTimestamp:t
ActionType:s ActorContext:s ActorEmail:s ActorID:s ActorIPAddress:ip
ActorTokenDetails:x ActorType:s AuditLogID:s Raw:x ResourceID:s
ResourceProduct:s ResourceRequest:x ResourceResponse:x ResourceScope:s
ResourceType:s ResourceValue:x ZoneID:s ZoneName:s`,
}

type fieldInfo struct{ name, typ string }

var parseCatalogue = sync.OnceValue(func() map[string][]fieldInfo {
	out := make(map[string][]fieldInfo, len(catalogue))
	for ds, text := range catalogue {
		for tok := range strings.FieldsSeq(text) {
			name, typ, _ := strings.Cut(tok, ":")
			out[ds] = append(out[ds], fieldInfo{name, typ})
		}
	}
	return out
})

// Fields returns the field names of a dataset in catalogue order, or nil
// for an unknown dataset.
func Fields(dataset string) []string {
	infos := parseCatalogue()[dataset]
	if infos == nil {
		return nil
	}
	names := make([]string, len(infos))
	for i, f := range infos {
		names[i] = f.name
	}
	return names
}

// FilterSchema returns the rules schema that a job's filter is compiled
// against: each filterable field of the dataset under its name in lower
// case (IPSourceAddress → ipsourceaddress), typed int, IP, string, bool or
// string array; timestamps are integers of Unix seconds.
func FilterSchema(dataset string) (*rules.Schema, error) {
	s, _, err := filterSchema(dataset)
	return s, err
}

type schemaEntry struct {
	schema *rules.Schema
	names  []string // rules field index → record field name
	err    error
}

var schemaCache sync.Map // dataset → *schemaEntry

func filterSchema(dataset string) (*rules.Schema, []string, error) {
	if e, ok := schemaCache.Load(dataset); ok {
		se := e.(*schemaEntry)
		return se.schema, se.names, se.err
	}
	var fields []rules.Field
	var names []string
	for _, f := range parseCatalogue()[dataset] {
		t := map[string]rules.Type{"s": rules.TypeString, "i": rules.TypeInt, "t": rules.TypeInt,
			"ip": rules.TypeIP, "b": rules.TypeBool, "ss": rules.TypeStrings}[f.typ]
		if t == rules.TypeInvalid {
			continue
		}
		fields = append(fields, rules.Field{Name: strings.ToLower(f.name), Type: t})
		names = append(names, f.name)
	}
	s, err := rules.NewSchema(fields...)
	schemaCache.Store(dataset, &schemaEntry{s, names, err})
	return s, names, err
}

// compiledFilter is a job's filter ready to run against records.
type compiledFilter struct {
	prog  *rules.Program
	names []string
}

func compileFilter(dataset, src string) (*compiledFilter, error) {
	s, names, err := filterSchema(dataset)
	if err != nil {
		return nil, err
	}
	p, err := rules.Compile(src, s, nil)
	if err != nil {
		return nil, err
	}
	return &compiledFilter{prog: p, names: names}, nil
}

func (c *compiledFilter) match(r Record) bool {
	return c.prog.Eval(&recordValues{r: r, names: c.names})
}

// recordValues adapts a Record to rules.Values.
type recordValues struct {
	r     Record
	names []string
}

func (rv *recordValues) Get(f *rules.Field) (rules.Value, bool) {
	v, ok := rv.r.Get(rv.names[f.Index()])
	if !ok {
		return rules.Value{}, false
	}
	switch f.Type {
	case rules.TypeInt:
		switch v.kind {
		case KindInt, KindUint:
			return rules.IntValue(v.num), true
		case KindTime:
			return rules.IntValue(uint64(floorDiv(int64(v.num), 1e9))), true
		}
	case rules.TypeString:
		if v.kind == KindString {
			return rules.StringValue(v.str), true
		}
	case rules.TypeIP:
		if v.kind == KindString {
			if a, err := netip.ParseAddr(v.str); err == nil {
				return rules.IPValue(a), true
			}
		}
	case rules.TypeBool:
		if v.kind == KindBool {
			return rules.BoolValue(v.num != 0), true
		}
	case rules.TypeStrings:
		if v.kind == KindStrings {
			return rules.StringsValue(*v.strs...), true
		}
	}
	return rules.Value{}, false
}

// knownField reports whether name is a field of dataset.
func knownField(dataset, name string) bool {
	return slices.ContainsFunc(parseCatalogue()[dataset], func(f fieldInfo) bool { return f.name == name })
}
