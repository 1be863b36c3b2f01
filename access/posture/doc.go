// Package posture is device posture: what an enrolled device reports
// about itself (OS and version, disk encryption, host firewall, client
// version; Collect gathers it on Linux), the `posture:` rules that judge
// it (Policy, in the shape of Cloudflare's device posture checks), and the
// gateway's endpoint (Server, POST /api/v1/posture on the Access listener)
// that authenticates a report by the device's WireGuard key, stores it in
// the device registry and quarantines or releases the device. A
// quarantined device keeps its tunnel; the firewall lets it reach only the
// gateway's DNS, this endpoint and posture.quarantine_allow. Run
// quarantines devices whose reports go stale.
package posture
