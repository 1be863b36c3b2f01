// Command edgegw is the Zero Trust edge gateway: WireGuard remote access,
// site-to-site tunnels, an nftables firewall, identity-aware proxying and
// DNS, and lossless log export, in one binary.
//
// This file only parses the command line; the gateway package does the work.
package main

import (
	"context"
	"errors"
	"flag"
	"fmt"
	"io"
	"os"
	"os/signal"
	"runtime/debug"
	"strings"
	"syscall"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// version is set at build time with -ldflags "-X main.version=…"; otherwise
// it comes from the VCS stamp Go puts in the binary.
var version = ""

func buildVersion() string {
	if version != "" {
		return version
	}
	bi, ok := debug.ReadBuildInfo()
	if !ok {
		return "devel"
	}
	rev, dirty := "", false
	for _, s := range bi.Settings {
		switch s.Key {
		case "vcs.revision":
			rev = s.Value
		case "vcs.modified":
			dirty = s.Value == "true"
		}
	}
	if rev == "" {
		return "devel"
	}
	if len(rev) > 12 {
		rev = rev[:12]
	}
	if dirty {
		rev += "-dirty"
	}
	return "devel-" + rev
}

const usage = `edgegw: a Zero Trust edge gateway.

Usage:
  edgegw run [--config FILE]            run the gateway (no file: the built-in default)
  edgegw run --fallback REASON          the built-in default, forwarding off, admin on loopback
  edgegw check --config FILE [--skip-files] [--pair FILE]
                                        validate a configuration and print every problem;
                                        --pair: also the other node's file of an HA pair
  edgegw peer config NAME --endpoint HOST:PORT [--config FILE] [--private-key-file FILE]
                                        print a wg-quick config for a static WireGuard peer
  edgegw firewall show [--config FILE]  print the compiled nftables ruleset
  edgegw firewall test [--config FILE] 'ip.src == 10.0.0.9 and tcp.dstport == 22'
                                        print the rule a packet matches and the verdict
  edgegw enroll https://GATEWAY [--name NAME] [--out FILE]
                                        enroll this machine: sign in, get a WireGuard config
  edgegw device list|show ID|revoke ID
                                        manage enrolled devices through the admin API
  edgegw posture report https://GATEWAY --config FILE [--every 5m]
                                        report this device's posture, signed with its key
  edgegw posture show                   print what a posture report would say
  edgegw admin token create NAME --role admin|viewer | token list | token revoke NAME
                                        tokens for the admin API over TCP (shown once, stored hashed)
  edgegw access keys --out DIR [--algorithm ES256|RS256]
                                        make the Access key files both nodes of an HA pair share
  edgegw status                         print the running gateway's status (JSON)
  edgegw egress [--json]                who leaves from which egress address, with counters
  edgegw reload                         reload the configuration and say how it went
  edgegw update BUNDLE [--tries N] [--no-reboot] | --status | --verify BUNDLE [--pubkey FILE]
                                        on the appliance: write BUNDLE to the inactive slot, boot it
  edgegw routes [--json]                print the site-to-site routing table: source, health, metric, active path
  edgegw config default                 print the built-in default configuration
  edgegw config example                 print the commented example of a whole office
  edgegw version                        print the version

The commands that talk to a running gateway use its admin socket
(/run/edgegw/admin.sock, root only; --socket PATH or --config FILE), or a remote admin
listener with --admin https://GATEWAY:9100 --token-file FILE [--ca-file FILE].

Signals to "run": SIGHUP reloads the configuration; SIGINT and SIGTERM stop
the gateway, turn forwarding off and remove every interface, route and
nftables table it made. Forwarding is on only while edgegw runs with its
ruleset in the kernel.

Run "edgegw COMMAND --help" for a command's flags.
`

// errUsage marks command-line mistakes: exit status 2, as flag does.
var errUsage = errors.New("usage")

func main() {
	os.Exit(run(os.Args[1:], os.Stdout, os.Stderr))
}

func run(args []string, stdout, stderr io.Writer) int {
	err := dispatch(args, stdout, stderr)
	switch {
	case err == nil:
		return 0
	case errors.Is(err, flag.ErrHelp):
		return 0
	case errors.Is(err, errUsage):
		return 2
	default:
		var cerrs *config.Errors
		if errors.As(err, &cerrs) {
			fmt.Fprintln(stderr, cerrs.Error())
			fmt.Fprintf(stderr, "edgegw: %s: %d problem(s); nothing was applied\n", cerrs.File, len(cerrs.List))
		} else {
			fmt.Fprintln(stderr, "edgegw:", err)
		}
		return 1
	}
}

func dispatch(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 {
		fmt.Fprint(stderr, usage)
		return errUsage
	}
	switch args[0] {
	case "-h", "--help", "help":
		fmt.Fprint(stdout, usage)
		return nil
	case "run":
		return cmdRun(args[1:], stderr)
	case "check":
		return cmdCheck(args[1:], stdout, stderr)
	case "peer":
		if len(args) < 2 || args[1] != "config" {
			fmt.Fprintln(stderr, `edgegw peer: expected "peer config NAME --endpoint HOST:PORT"`)
			return errUsage
		}
		return cmdPeerConfig(args[2:], stdout, stderr)
	case "config":
		text := map[string][]byte{"default": config.DefaultYAML(), "example": config.ExampleYAML()}
		if len(args) != 2 || text[args[1]] == nil {
			fmt.Fprintln(stderr, `edgegw config: expected "config default" or "config example"`)
			return errUsage
		}
		_, err := stdout.Write(text[args[1]])
		return err
	case "firewall":
		return cmdFirewall(args[1:], stdout, stderr)
	case "enroll":
		return cmdEnroll(args[1:], stdout, stderr)
	case "device":
		return cmdDevice(args[1:], stdout, stderr)
	case "posture":
		return cmdPosture(args[1:], stdout, stderr)
	case "admin":
		return cmdAdmin(args[1:], stdout, stderr)
	case "access":
		return cmdAccess(args[1:], stdout, stderr)
	case "status":
		return cmdStatus(args[1:], stdout, stderr)
	case "egress":
		return cmdEgress(args[1:], stdout, stderr)
	case "reload":
		return cmdReload(args[1:], stdout, stderr)
	case "update":
		return cmdUpdate(args[1:], stdout, stderr)
	case "routes":
		return cmdRoutes(args[1:], stdout, stderr)
	case "version", "--version":
		fmt.Fprintln(stdout, "edgegw", buildVersion())
		return nil
	default:
		fmt.Fprintf(stderr, "edgegw: unknown command %q\n\n%s", args[0], usage)
		return errUsage
	}
}

func newFlags(name, synopsis string, stderr io.Writer) *flag.FlagSet {
	fs := flag.NewFlagSet(name, flag.ContinueOnError)
	fs.SetOutput(stderr)
	fs.Usage = func() {
		fmt.Fprintf(stderr, "Usage: %s\n\nFlags:\n", synopsis)
		fs.PrintDefaults()
	}
	return fs
}

// parse parses flags, allowing positional arguments before them, and maps
// flag errors to errUsage.
func parse(fs *flag.FlagSet, args []string) ([]string, error) {
	var pos []string
	for {
		if err := fs.Parse(args); err != nil {
			if errors.Is(err, flag.ErrHelp) {
				return nil, err
			}
			return nil, errUsage
		}
		args = fs.Args()
		if len(args) == 0 {
			return pos, nil
		}
		pos = append(pos, args[0])
		args = args[1:]
	}
}

func cmdRun(args []string, stderr io.Writer) error {
	fs := newFlags("run", "edgegw run [--config FILE | --fallback REASON]", stderr)
	cfgPath := fs.String("config", "", "configuration `file` (default: the built-in default)")
	fallback := fs.String("fallback", "", "run the built-in default with forwarding off and the admin listener on loopback, because of `REASON` (shown in the log and at /readyz)")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		fmt.Fprintf(stderr, "edgegw run: unexpected argument %q\n", pos[0])
		return errUsage
	}
	// --fallback "" still falls back: an empty reason must never turn the
	// permissive default into a forwarding gateway.
	fs.Visit(func(f *flag.Flag) {
		if f.Name == "fallback" && strings.TrimSpace(*fallback) == "" {
			*fallback = "(no reason given)"
		}
	})
	if *fallback != "" && *cfgPath != "" {
		fmt.Fprintln(stderr, "edgegw run: --fallback runs the built-in default; it takes no --config")
		return errUsage
	}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	hup := make(chan os.Signal, 1)
	signal.Notify(hup, syscall.SIGHUP)
	defer signal.Stop(hup)
	reload := make(chan struct{}, 1)
	go func() {
		for range hup {
			select {
			case reload <- struct{}{}:
			default: // a reload is already pending; it will read the newest file
			}
		}
	}()
	return gateway.Run(ctx, gateway.Options{
		ConfigPath: *cfgPath,
		Fallback:   strings.TrimSpace(*fallback),
		Version:    buildVersion(),
		Reload:     reload,
		LogOutput:  stderr,
	})
}

func cmdCheck(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("check", "edgegw check --config FILE [--skip-files] [--pair FILE]", stderr)
	cfgPath := fs.String("config", "", "configuration `file` to validate")
	skip := fs.Bool("skip-files", false, "skip the existence and permission checks of files the configuration names")
	pair := fs.String("pair", "", "the other node's configuration `file` of an HA pair: validate it too and compare what must match")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if *cfgPath == "" && len(pos) == 1 {
		*cfgPath = pos[0] // "edgegw check FILE" works too
	} else if *cfgPath == "" || len(pos) > 0 {
		fs.Usage()
		return errUsage
	}
	if *pair != "" {
		return checkPair(*cfgPath, *pair, *skip, stdout)
	}
	cfg, err := config.Load(*cfgPath, config.Options{SkipFiles: *skip})
	if err != nil {
		return err
	}
	// The same compile a start or reload runs first: a configuration
	// that passes here does not fail to compile there.
	if _, err := gateway.Prepare(cfg, gateway.PrepareOptions{SkipFiles: *skip}); err != nil {
		return err
	}
	fmt.Fprintf(stdout, "%s: ok\n", *cfgPath)
	return nil
}

func cmdPeerConfig(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("peer config", "edgegw peer config NAME --endpoint HOST:PORT [--config FILE] [--private-key-file FILE] [--allowed-ips CIDR,…] [--dns ADDR,…]", stderr)
	cfgPath := fs.String("config", "", "the gateway's configuration `file` (default: the built-in default)")
	endpoint := fs.String("endpoint", "", "`HOST:PORT` where clients reach the gateway (required)")
	keyFile := fs.String("private-key-file", "", "the peer's private key `file`, as `wg genkey` writes it; without it the config has a placeholder")
	allowed := fs.String("allowed-ips", "", "comma-separated `prefixes` to route through the tunnel (default: the tunnel network, the LAN networks and the configured routes)")
	dnsAddrs := fs.String("dns", "", "comma-separated DNS server `addresses` for the client")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 || *endpoint == "" {
		fs.Usage()
		return errUsage
	}
	cfg, err := gateway.Load(*cfgPath)
	if err != nil {
		return err
	}
	return gateway.WritePeerConfig(stdout, cfg, wireguard.PeerConfigOptions{
		Peer:           pos[0],
		Endpoint:       *endpoint,
		PrivateKeyFile: *keyFile,
		AllowedIPs:     splitList(*allowed),
		DNS:            splitList(*dnsAddrs),
	})
}

func splitList(s string) []string {
	var out []string
	for _, f := range strings.FieldsFunc(s, func(r rune) bool { return r == ',' || r == ' ' }) {
		out = append(out, f)
	}
	return out
}
