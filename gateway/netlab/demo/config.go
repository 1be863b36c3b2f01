package main

import (
	"fmt"
	"net/url"

	"github.com/edgegw/edgegw/gateway/netlab/swanbranch"
)

// The demo's names, addresses and secrets in one place: the configuration
// files, the checks and the "try" list all read them from here.
const (
	greTunnel   = "gre-branch"   // the office's GRE tunnel to the GRE branch
	ipsecTunnel = "ipsec-branch" // the office's IPsec tunnel to the IPsec branch
	gwTunnelIP  = "100.96.0.1"   // the gateway's WireGuard address: Gateway DNS listens here

	sshRule      = "ssh-engineering-only"
	blockRule    = "block-ads"
	overrideRule = "intranet-engineering"

	// The provider's users' e-mail addresses (enrolltest's example store).
	aliceEmail = "test-user@zitadel.ch"
	bobEmail   = "test-user2@zitadel.ch"

	blockedName  = "ads.example.com"       // Gateway DNS blocks it for everyone
	overrideName = "intranet.corp.example" // Gateway DNS answers engineering with the office server
	publicName   = "www.example.com"       // the office resolver's answer, through Gateway DNS
	publicAddr   = "192.0.2.80"            // what the office resolver answers for *.example.com

	hecToken = "demo-hec-token-0123456789"
	// ipsecPSK is shared by the gateway and the IPsec branch's strongSwan
	// (edgegw asks for at least 20 characters).
	ipsecPSK   = "demo-ipsec-psk-for-the-branch-0123456789"
	webSecret  = "demo-web-client-secret"
	officeID   = "office.corp.example"
	branchID   = "branch-ipsec.corp.example"
	gatewayTag = "edgegw is up" // the gateway's log line once it runs
)

// gatewayConfig is the office gateway's configuration: enrollment through
// the local OpenID provider (staff and contractors may enroll), a GRE and
// an IPsec branch, an identity firewall rule, Gateway DNS with a block and
// an identity-scoped override, flow sampling, and Logpush to a Splunk HEC
// receiver and to a file.
func (d *demo) gatewayConfig() string {
	hecURL := "splunk://" + d.hec.Addr() + "/services/collector/event?" + url.Values{
		"sourcetype": {"edgegw:network"}, "insecure-skip-verify": {"true"}}.Encode()
	return fmt.Sprintf(`# The office gateway of `+"`make demo`"+` (gateway/netlab/demo).
appliance:
  name: demo-office
  colo: LAB
  country: NL
  state_dir: %[1]s/gw
interfaces:
  wan: eth0
  lan: [eth1]
admin:
  listen: 127.0.0.1:9100%[21]s
log:
  level: info
identity:
  providers:
    - name: corp
      issuer: %[2]s
      client_id: edgegw-web
      client_secret_file: %[1]s/web.secret
      device_client_id: edgegw-cli
access:
  listen: 0.0.0.0:8443          # enrollment from the internet, DNS over HTTPS through the tunnel
tunnels:
  wireguard:
    interface: %[3]s
    listen_port: 51820
    address: %[4]s/12
    enrollment:
      enabled: true
      key_expiry: 24h
      policies:
        - name: staff-and-contractors
          action: allow
          include: [{group: staff}, {group: contractors}]
  gre:
    - name: %[5]s
      local: %[6]s
      remote: %[7]s
      address: 10.200.1.0/31
      health_check:
        rate: high
  ipsec:
    - name: %[8]s
      local: %[6]s
      remote: %[9]s
      local_id: %[10]s
      remote_id: %[11]s
      psk_file: %[1]s/ipsec.psk
      address: 10.200.2.0/31
      health_check:
        rate: high
routes:
  - prefix: %[12]s
    via: %[5]s
  - prefix: %[13]s
    via: %[8]s
firewall:
  rules:
    - id: %[14]s
      description: only engineering may reach SSH on the office server
      expression: ip.dst == %[15]s and tcp.dstport == 22 and not identity.groups contains "engineering"
      action: block
gateway:
  dns:
    listen: [%[4]s:53]
    upstreams: [%[15]s:53]
    policies:
      - id: %[16]s
        expression: dns.fqdn == "%[17]s"
        action: block
      - id: %[20]s
        expression: identity.groups contains "engineering" and dns.fqdn == "%[18]s"
        action: override
        override: [%[15]s]
netflow:
  sample_rate: 1
logpush:
  - name: flows-to-splunk
    dataset: network_analytics_logs
    destination: %[19]s
    token_file: %[1]s/hec-token
    max_upload_interval: 1s
  - name: dns-to-file
    dataset: gateway_dns
    destination: file://%[1]s/dns.ndjson
    max_upload_interval: 1s
`, d.dir, d.op.Issuer, d.wgIf, gwTunnelIP, greTunnel, d.o.GWWANAddr, d.o.GREBranchAddr,
		ipsecTunnel, d.o.IPsecBranchAddr, officeID, branchID, d.o.GRELANNet, d.o.IPsecLANNet,
		sshRule, d.o.ServerAddr, blockRule, blockedName, overrideName, hecURL, overrideRule, d.adminSocketYAML("gw"))
}

// adminSocketYAML is the admin section's socket line for the edgegw
// named name, in the demo's directory: each edgegw of the demo needs its
// own, and none may take the system's (/run/edgegw/admin.sock), which a
// gateway on this machine or another test may hold.
func (d *demo) adminSocketYAML(name string) string {
	return "\n  socket: " + d.adminSocketPath(name)
}

func (d *demo) adminSocketPath(name string) string { return d.path(name + "-admin.sock") }

// greBranchConfig is the GRE branch router's: a second edgegw with the
// other end of the tunnel and a route to the office LAN through it.
func (d *demo) greBranchConfig() string {
	return fmt.Sprintf(`# The GRE branch router of `+"`make demo`"+`.
appliance:
  name: demo-gre-branch
  state_dir: %s/gbr
admin:
  listen: 127.0.0.1:9100%s
interfaces:
  wan: eth0
  lan: [eth1]
tunnels:
  gre:
    - name: gre-office
      local: %s
      remote: %s
      address: 10.200.1.1/31
      health_check:
        rate: high
routes:
  - prefix: %s
    via: gre-office
`, d.dir, d.adminSocketYAML("gbr"), d.o.GREBranchAddr, d.o.GWWANAddr, d.o.LANNet)
}

// ipsecBranchStrongswan is the IPsec branch router's strongswan.conf: a
// stock charon with its ESP where edgegw's is (kernel-libipsec on kernels
// without ESP), routes installed as strongSwan does by default.
func ipsecBranchStrongswan(backend, vici, logFile string) string {
	return swanbranch.Charon{Backend: backend, VICI: vici, Log: logFile, RetransmitTries: 3}.Conf()
}

// ipsecBranchSwanctl is the IPsec branch's swanctl.conf, written as a
// branch router's documentation would: it initiates, offers its LAN and
// its tunnel address, and wants the office LAN and the gateway's end.
func (d *demo) ipsecBranchSwanctl() string {
	return swanbranch.Conn{
		Name: "office", Local: d.o.IPsecBranchAddr.String(), Remote: d.o.GWWANAddr.String(),
		LocalID: branchID, RemoteID: officeID,
		LocalTS:  []string{d.o.IPsecLANNet.String(), "10.200.2.1/32"},
		RemoteTS: []string{d.o.LANNet.String(), "10.200.2.0/32"},
		PSK:      ipsecPSK, Initiate: true,
	}.Swanctl()
}
