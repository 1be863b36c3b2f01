package main

import (
	"fmt"
	"io"
	"strings"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
)

const firewallUsage = `Usage:
  edgegw firewall test [--config FILE] 'PACKET'
        print the rule that matches a packet and the verdict; PACKET is
        field == value conditions joined by and, e.g.
        'ip.src == 10.0.0.9 and tcp.dstport == 22 and ingress == "wan"'
  edgegw firewall show [--config FILE]
        print the nftables program edgegw compiles the configuration to

Without --config, the built-in default configuration is used. Files the
configuration names (keys, certificates) are not checked.
`

// cmdFirewall is `edgegw firewall test|show`.
func cmdFirewall(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, firewallUsage)
		return errUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, firewallUsage)
		return nil
	case "test":
		return cmdFirewallTest(args[1:], stdout, stderr)
	case "show":
		return cmdFirewallShow(args[1:], stdout, stderr)
	}
	fmt.Fprintf(stderr, "edgegw firewall: unknown command %q\n\n%s", args[0], firewallUsage)
	return errUsage
}

// loadFirewall reads the configuration and compiles its rules. Files the
// configuration names are not checked: the rules do not need them.
func loadFirewall(path string) (*config.Config, firewall.Spec, error) {
	var cfg *config.Config
	var err error
	if path == "" {
		cfg, err = config.Default()
	} else {
		cfg, err = config.Load(path, config.Options{SkipFiles: true})
	}
	if err != nil {
		return nil, firewall.Spec{}, err
	}
	// The gateway's own plan builder: what is shown is what it applies.
	pl, err := gateway.Prepare(cfg, gateway.PrepareOptions{SkipFiles: true})
	if err != nil {
		return nil, firewall.Spec{}, err
	}
	return cfg, pl.Firewall, nil
}

func cmdFirewallShow(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("firewall show", "edgegw firewall show [--config FILE]", stderr)
	cfgPath := fs.String("config", "", "configuration `file` (default: the built-in default)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "edgegw firewall show: unexpected argument %q\n", pos[0])
		return errUsage
	}
	_, spec, err := loadFirewall(*cfgPath)
	if err != nil {
		return err
	}
	if spec.WAN == "" {
		fmt.Fprintln(stdout, "# interfaces.wan is not set: edgegw masquerades on the interface of the default route, found at start")
	}
	_, err = io.WriteString(stdout, firewall.Compile(spec).String())
	return err
}

func cmdFirewallTest(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("firewall test", "edgegw firewall test [--config FILE] 'PACKET'", stderr)
	cfgPath := fs.String("config", "", "configuration `file` (default: the built-in default)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) == 0 {
		fs.Usage()
		return errUsage
	}
	desc := strings.Join(pos, " ") // unquoted words are one description too
	cfg, spec, err := loadFirewall(*cfgPath)
	if err != nil {
		return err
	}
	pkt, err := firewall.ParsePacket(desc)
	if err != nil {
		fmt.Fprintf(stderr, "edgegw firewall test: packet %s\n", strings.TrimRight(err.Error(), "\n"))
		return errUsage
	}
	gateway.CompletePacket(cfg, pkt) // the console's "test a packet" shares it
	rule, ok := spec.Match(pkt)
	// Print the flags byte only; the flag fields follow from it.
	for _, f := range []string{"fin", "syn", "reset", "push", "ack", "urg", "ecn", "cwr"} {
		pkt.Clear("tcp.flags." + f)
	}
	fmt.Fprintf(stdout, "packet:  %s\n", pkt)
	if !ok {
		fmt.Fprintln(stdout, "rule:    none matched (the default allows)")
		fmt.Fprintln(stdout, "verdict: allow")
		return nil
	}
	fmt.Fprintf(stdout, "rule:    %s (rules[%d])", rule.ID, rule.Position-1)
	if rule.Description != "" {
		fmt.Fprintf(stdout, " %q", rule.Description)
	}
	fmt.Fprintln(stdout)
	switch rule.Action {
	case "rate_limit":
		fmt.Fprintf(stdout, "verdict: rate_limit %s (allowed up to the rate per source address, dropped above it)\n", rule.Rate)
	default:
		fmt.Fprintf(stdout, "verdict: %s\n", rule.Action)
	}
	return nil
}
