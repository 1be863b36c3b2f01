package main

// `edgegw posture` on an enrolled device: collect what the gateway's
// posture rules judge, and report it, signed with the device's WireGuard
// key, once or on a schedule.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"os"
	"os/signal"
	"strings"
	"syscall"
	"time"

	"github.com/edgegw/edgegw/access/posture"
)

const postureSynopsis = "edgegw posture show [--root DIR] | report https://GATEWAY --config FILE [--every DURATION] [--root DIR] [--ca-file FILE | --insecure]"

func cmdPosture(args []string, stdout, stderr io.Writer) error {
	if len(args) == 0 || (args[0] != "show" && args[0] != "report") {
		fmt.Fprintf(stderr, "usage: %s\n", postureSynopsis)
		return errUsage
	}
	sub := args[0]
	fs := newFlags("posture "+sub, postureSynopsis, stderr)
	root := fs.String("root", "", "read the system's state (proc, sys, etc) under `DIR` instead of / (to check what a report would say about a mounted system)")
	cfgFile := fs.String("config", "", "the device's wg-quick `file` from edgegw enroll: its private key signs the report, the gateway's public key is in it")
	every := fs.Duration("every", 0, "report again after each `interval` (the gateway expects one every 5m) until interrupted; 0: once")
	caFile := fs.String("ca-file", "", "PEM `file` with the CA of the gateway's certificate, trusted besides the system roots")
	insecure := fs.Bool("insecure", false, "do not verify the gateway's certificate (tests only)")
	timeout := fs.Duration("timeout", 30*time.Second, "give up on one report after this long")
	pos, err := parse(fs, args[1:])
	if err != nil {
		return err
	}
	src := posture.Sources{Root: *root, ClientVersion: buildVersion()}
	if sub == "show" {
		if len(pos) != 0 {
			fs.Usage()
			return errUsage
		}
		enc := json.NewEncoder(stdout)
		enc.SetIndent("", "  ")
		return enc.Encode(posture.Collect(src))
	}
	if len(pos) != 1 || *cfgFile == "" {
		fs.Usage()
		return errUsage
	}
	if *caFile != "" && *insecure {
		fmt.Fprintln(stderr, "edgegw posture report: --ca-file and --insecure exclude each other")
		return errUsage
	}
	gw := pos[0]
	if !strings.Contains(gw, "://") {
		gw = "https://" + gw
	}
	priv, gwPub, err := posture.ReadQuickKeys(*cfgFile)
	if err != nil {
		return err
	}
	hc, err := gatewayClient(*caFile, *insecure)
	if err != nil {
		return fmt.Errorf("posture: %w", err)
	}
	c := &posture.Client{Gateway: gw, HTTPClient: hc, PrivateKey: priv, GatewayPublicKey: gwPub}
	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	for {
		err := reportOnce(ctx, c, src, *timeout, stdout)
		if *every <= 0 {
			return err
		}
		if err != nil {
			// Keep going: the next report may get through (a gateway
			// restart, a network change); the gateway quarantines a
			// device that stays silent past its max_age anyway.
			fmt.Fprintln(stderr, "edgegw posture report:", err)
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(*every):
		}
	}
}

func reportOnce(ctx context.Context, c *posture.Client, src posture.Sources, timeout time.Duration, stdout io.Writer) error {
	rctx, cancel := context.WithTimeout(ctx, timeout)
	defer cancel()
	rep := posture.Collect(src)
	resp, err := c.Send(rctx, rep)
	if err != nil {
		return err
	}
	state := "compliant"
	if resp.Quarantined {
		state = "QUARANTINED: only the gateway's DNS and posture endpoint are reachable until a passing report"
	}
	fmt.Fprintf(stdout, "%s: %s %s, disk encrypted %s, firewall %s: %s\n", resp.Device, rep.OS, rep.OSVersion, rep.DiskEncrypted, rep.Firewall, state)
	for _, f := range resp.Failed {
		fmt.Fprintf(stdout, "  failed: %s\n", f)
	}
	return nil
}

// gatewayClient is an HTTPS client that trusts the system roots and
// caFile, or nothing at all with insecure.
func gatewayClient(caFile string, insecure bool) (*http.Client, error) {
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if caFile != "" {
		pem, err := os.ReadFile(caFile)
		if err != nil {
			return nil, err
		}
		if !roots.AppendCertsFromPEM(pem) {
			return nil, fmt.Errorf("%s holds no PEM certificate", caFile)
		}
	}
	tr := http.DefaultTransport.(*http.Transport).Clone()
	tr.TLSClientConfig = &tls.Config{RootCAs: roots, InsecureSkipVerify: insecure, MinVersion: tls.VersionTLS12}
	return &http.Client{Transport: tr, Timeout: 30 * time.Second}, nil
}

// reportAfterEnroll sends the new device's first posture report, so a
// gateway with posture rules judges it at once instead of after its grace.
// A gateway without posture answers 404: nothing to say then.
func reportAfterEnroll(ctx context.Context, c *posture.Client, stdout, stderr io.Writer) {
	err := reportOnce(ctx, c, posture.Sources{ClientVersion: buildVersion()}, 30*time.Second, stdout)
	var re *posture.RefusedError
	switch {
	case err == nil:
	case errors.As(err, &re) && re.Status == http.StatusNotFound:
	default:
		fmt.Fprintf(stderr, "The first posture report failed (%v); report with: edgegw posture report %s --config FILE\n", err, c.Gateway)
	}
}
