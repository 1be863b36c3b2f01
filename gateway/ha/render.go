package ha

import (
	"fmt"
	"net/netip"
	"strconv"
	"strings"
	"text/template"
)

// Links names the interfaces the virtual addresses go on: the gateway's
// WAN and its (first) LAN.
type Links struct {
	WAN, LAN string
}

// instance is the VRRP instance name, which the notify FIFO reports.
const instance = "edgegw"

var confTemplate = template.Must(template.New("keepalived.conf").Parse(`# Written by edgegw for its own keepalived; replaced at every start.
global_defs {
	router_id {{.RouterID}}
	# State changes go to edgegw, which reads this FIFO.
	notify_fifo {{.FIFO}}
	# No scripts run: edgegw acts on the FIFO.
	enable_script_security
	script_user root
}

{{- if .YieldFile}}

# edgegw writes 1 here when this node must give the addresses up (a
# split brain, see gateway/ha/splitbrain.go): weight 0 makes a non-zero
# value a fault.
track_file edgegw_yield {
	file "{{.YieldFile}}"
	weight 0
}
{{- end}}

vrrp_instance {{.Instance}} {
	state BACKUP
	interface {{.Interface}}
	version {{.Version}}
	virtual_router_id {{.VRID}}
	priority {{.Priority}}
	advert_int {{.Advert}}
{{- if not .Preempt}}
	nopreempt
{{- end}}
	# Adverts go to the peer over the sync link, never multicast.
	unicast_peer {
		{{.Peer}}
	}
{{- if .Track}}
	# A node that loses its WAN or LAN link gives the addresses up.
	track_interface {
{{- range .Track}}
		{{.}}
{{- end}}
	}
{{- end}}
{{- if .AuthPass}}
	authentication {
		auth_type PASS
		auth_pass {{.AuthPass}}
	}
{{- end}}
{{- if .YieldFile}}
	track_file {
		edgegw_yield
	}
{{- end}}
	virtual_ipaddress {
{{- range .VIPs}}
		{{.}}
{{- end}}
	}
{{- if .VIPs6}}
	# IPv6 addresses move with the IPv4 ones: one instance, one state.
	virtual_ipaddress_excluded {
{{- range .VIPs6}}
		{{.}}
{{- end}}
	}
{{- end}}
}
`))

// Render returns keepalived.conf for c: one VRRP instance advertised by
// unicast to the peer on the sync link, carrying the WAN and LAN virtual
// addresses together (so they cannot end up on different nodes) and
// tracking both links. authKey is the content of c.AuthKeyFile ("" for
// none); fifo is where keepalived reports state changes; yieldFile ("" for
// none) is the track file that puts the instance in FAULT when it holds a
// non-zero value.
func Render(c Config, l Links, authKey, fifo, yieldFile string) (string, error) {
	type params struct {
		RouterID, FIFO, Instance, Interface, AuthPass, YieldFile, Advert string
		VRID, Priority, Version                                          int
		Preempt                                                          bool
		Peer                                                             netip.Addr
		Track, VIPs, VIPs6                                               []string
	}
	if strings.ContainsAny(yieldFile, "\"\n") {
		return "", fmt.Errorf("yield file: unusable path %q", yieldFile)
	}
	p := params{RouterID: "edgegw_" + c.Interface, FIFO: fifo, YieldFile: yieldFile, Instance: instance, Interface: c.Interface,
		VRID: c.VRID, Priority: c.Priority, Preempt: c.Preempt, Peer: c.Peer, Version: c.VRRPVersion,
		Advert: strconv.FormatFloat(c.AdvertInterval.Seconds(), 'f', -1, 64)}
	if p.Version == 0 {
		p.Version = 2
	}
	if c.AdvertInterval == 0 {
		p.Advert = "1"
	}
	if authKey != "" && p.Version == 3 {
		return "", fmt.Errorf("auth key: VRRPv3 has no authentication")
	}
	if authKey != "" {
		k := strings.TrimSpace(authKey)
		if len(k) > 8 { // VRRPv2 keeps 8 characters; say so rather than let keepalived cut it
			k = k[:8]
		}
		if strings.ContainsAny(k, " \t\"{}#!") || k == "" {
			return "", fmt.Errorf("auth key: must be printable without spaces, quotes, braces, # or !")
		}
		p.AuthPass = k
	}
	add := func(side, dev string, ps []netip.Prefix) error {
		if len(ps) == 0 {
			return nil
		}
		if !validIfname(dev) {
			return fmt.Errorf("%s virtual addresses: no usable %s interface (%q)", side, side, dev)
		}
		for _, v := range ps {
			if v.Addr().Is4() {
				p.VIPs = append(p.VIPs, v.String()+" dev "+dev)
			} else {
				p.VIPs6 = append(p.VIPs6, v.String()+" dev "+dev)
			}
		}
		if dev != c.Interface && !containsStr(p.Track, dev) {
			p.Track = append(p.Track, dev)
		}
		return nil
	}
	if err := add("wan", l.WAN, c.VirtualAddresses.WAN); err != nil {
		return "", err
	}
	if err := add("lan", l.LAN, c.VirtualAddresses.LAN); err != nil {
		return "", err
	}
	var b strings.Builder
	if err := confTemplate.Execute(&b, p); err != nil {
		return "", err
	}
	return b.String(), nil
}

func containsStr(s []string, v string) bool {
	for _, x := range s {
		if x == v {
			return true
		}
	}
	return false
}
