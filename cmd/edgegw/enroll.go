package main

// The device commands: `edgegw enroll` on a user's machine, and `edgegw
// device` for the admin, which talks to a running gateway's admin API.

import (
	"context"
	"crypto/tls"
	"crypto/x509"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"net/url"
	"os"
	"os/signal"
	"path/filepath"
	"strings"
	"syscall"
	"text/tabwriter"
	"time"

	"golang.org/x/oauth2"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/posture"
	"github.com/edgegw/edgegw/gateway/admin"
)

const enrollSynopsis = "edgegw enroll https://GATEWAY [--name NAME] [--out FILE] [--force] [--provider NAME] [--browser] [--ca-file FILE | --insecure]"

func cmdEnroll(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("enroll", enrollSynopsis, stderr)
	name := fs.String("name", "", "device `name` the admin sees (default: this machine's host name)")
	out := fs.String("out", "edgegw.conf", "wg-quick configuration `file` to write, mode 0600; wg-quick names the interface after it")
	force := fs.Bool("force", false, "replace the --out file if it exists")
	provider := fs.String("provider", "", "identity `provider` to sign in with (default: the gateway's first)")
	caFile := fs.String("ca-file", "", "PEM `file` with the CA of the gateway's certificate, trusted besides the system roots")
	insecure := fs.Bool("insecure", false, "do not verify the gateway's certificate (tests only; the identity provider is always verified)")
	browser := fs.Bool("browser", false, "sign in with a browser on this machine (loopback redirect) instead of the device code; used anyway when the provider has no device grant")
	timeout := fs.Duration("timeout", 15*time.Minute, "give up after this long")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) != 1 {
		fs.Usage()
		return errUsage
	}
	if *caFile != "" && *insecure {
		fmt.Fprintln(stderr, "edgegw enroll: --ca-file and --insecure exclude each other")
		return errUsage
	}
	gateway := pos[0]
	if !strings.Contains(gateway, "://") {
		gateway = "https://" + gateway
	}
	if *name == "" {
		if *name, err = os.Hostname(); err != nil || *name == "" {
			return errors.New("enroll: no host name to name the device after; give one with --name")
		}
	}
	// Fail before the sign-in, not after it, when the file cannot be written.
	if _, err := os.Stat(*out); err == nil && !*force {
		return fmt.Errorf("enroll: %s exists; choose another file with --out or replace it with --force", *out)
	}
	roots, err := x509.SystemCertPool()
	if err != nil {
		roots = x509.NewCertPool()
	}
	if *caFile != "" {
		pem, err := os.ReadFile(*caFile)
		if err != nil {
			return fmt.Errorf("enroll: %w", err)
		}
		if !roots.AppendCertsFromPEM(pem) {
			return fmt.Errorf("enroll: %s holds no PEM certificate", *caFile)
		}
	}
	client := func(skipVerify bool) *http.Client {
		tr := http.DefaultTransport.(*http.Transport).Clone()
		tr.TLSClientConfig = &tls.Config{RootCAs: roots, InsecureSkipVerify: skipVerify, MinVersion: tls.VersionTLS12}
		return &http.Client{Transport: tr, Timeout: 30 * time.Second}
	}
	c := &enroll.Client{Gateway: gateway, HTTPClient: client(*insecure), ProviderClient: client(false), Provider: *provider}

	ctx, cancel := signal.NotifyContext(context.Background(), syscall.SIGINT, syscall.SIGTERM)
	defer cancel()
	ctx, cancelTimeout := context.WithTimeout(ctx, *timeout)
	defer cancelTimeout()
	priv, resp, err := c.Enroll(ctx, *name, *browser, func(da *oauth2.DeviceAuthResponse, browserURL string) {
		if da == nil {
			fmt.Fprintf(stderr, "To enroll %q, open this in a browser on this machine and sign in:\n\n    %s\n\nWaiting for the sign-in…\n", *name, browserURL)
			return
		}
		fmt.Fprintf(stderr, "To enroll %q, sign in at\n\n    %s\n\nand enter the code\n\n    %s\n\n", *name, da.VerificationURI, da.UserCode)
		if da.VerificationURIComplete != "" {
			fmt.Fprintf(stderr, "(or open %s)\n", da.VerificationURIComplete)
		}
		if !da.Expiry.IsZero() {
			fmt.Fprintf(stderr, "The code expires at %s. Waiting for the sign-in…\n", da.Expiry.Local().Format("15:04:05"))
		}
	})
	if err != nil {
		return fmt.Errorf("enroll: %w", err)
	}
	cc := resp.ClientConfig(priv)
	if err := enroll.WriteConfig(*out, cc, *force); err != nil {
		return fmt.Errorf("enroll: device %s is registered but its configuration could not be written (enroll again, and ask the admin to revoke it): %w", resp.Device.ID, err)
	}
	abs, _ := filepath.Abs(*out)
	d := resp.Device
	fmt.Fprintf(stdout, "Enrolled %q as device %s for %s: address %s, valid until %s.\n", d.Name, d.ID, d.Email, d.Address, d.Expires.Local().Format(time.DateTime))
	fmt.Fprintf(stdout, "Wrote %s. Start the tunnel with: wg-quick up %s\n", abs, abs)
	if !d.Pending {
		reportAfterEnroll(ctx, &posture.Client{Gateway: gateway, HTTPClient: client(*insecure), PrivateKey: priv, GatewayPublicKey: cc.GatewayPublicKey}, stdout, stderr)
	}
	if d.Pending {
		fmt.Fprintf(stdout, "The device waits for an administrator's approval; the tunnel carries nothing until then (the admin runs: edgegw device approve %s, or POST /api/v1/devices/%s/approve).\n", d.ID, d.ID)
	}
	return nil
}

const deviceSynopsis = "edgegw device list|show ID|revoke ID|approve ID [--json] [--socket PATH | --admin URL --token-file FILE [--ca-file FILE]]"

func cmdDevice(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("device", deviceSynopsis, stderr)
	asJSON := fs.Bool("json", false, "print the admin API's JSON")
	af := addAdminFlags(fs)
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	var method, path string
	switch {
	case len(pos) == 1 && pos[0] == "list":
		method, path = http.MethodGet, enroll.PathDevices
	case len(pos) == 2 && pos[0] == "show":
		method, path = http.MethodGet, enroll.PathDevices+"/"+url.PathEscape(pos[1])
	case len(pos) == 2 && (pos[0] == "revoke" || pos[0] == "approve"):
		method, path = http.MethodPost, enroll.PathDevices+"/"+url.PathEscape(pos[1])+"/"+pos[0]
	default:
		fs.Usage()
		return errUsage
	}
	c, err := af.client("device", stderr)
	if err != nil {
		return err
	}
	body, err := call(c, method, path, nil)
	if err != nil {
		var se *admin.StatusError
		if errors.As(err, &se) && se.Status == http.StatusNotFound && se.Code == "" {
			return fmt.Errorf("device: %w (does this gateway have device enrollment?)", err)
		}
		return fmt.Errorf("device: %w", err)
	}
	if *asJSON {
		_, err := stdout.Write(body)
		return err
	}
	if pos[0] == "list" {
		var devs []enroll.Device
		if err := json.Unmarshal(body, &devs); err != nil {
			return fmt.Errorf("device: the admin API's answer is not a device list: %w", err)
		}
		tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
		fmt.Fprintln(tw, "ID\tNAME\tEMAIL\tADDRESS\tSTATUS\tEXPIRES\tLAST SEEN")
		for _, d := range devs {
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", d.ID, d.Name, d.Email, d.Address, d.Status, stamp(d.Expires), stamp(d.LastSeen))
		}
		return tw.Flush()
	}
	var d enroll.Device
	if err := json.Unmarshal(body, &d); err != nil {
		return fmt.Errorf("device: the admin API's answer is not a device: %w", err)
	}
	if pos[0] == "revoke" {
		fmt.Fprintf(stdout, "Revoked device %s (%q, %s, %s).\n", d.ID, d.Name, d.Email, d.Address)
		return nil
	}
	if pos[0] == "approve" {
		fmt.Fprintf(stdout, "Approved device %s (%q, %s, %s): its tunnel works now.\n", d.ID, d.Name, d.Email, d.Address)
		return nil
	}
	tw := tabwriter.NewWriter(stdout, 0, 4, 2, ' ', 0)
	rows := [][2]string{
		{"id", d.ID}, {"name", d.Name}, {"email", d.Email}, {"subject", d.Subject},
		{"groups", strings.Join(d.Groups, ", ")}, {"public key", d.PublicKey.String()}, {"address", d.Address.String()},
		{"status", d.Status}, {"created", stamp(d.Created)}, {"last seen", stamp(d.LastSeen)}, {"expires", stamp(d.Expires)},
	}
	if d.RevokedAt != nil {
		rows = append(rows, [2]string{"revoked at", stamp(*d.RevokedAt)})
	}
	for _, r := range rows {
		fmt.Fprintf(tw, "%s:\t%s\n", r[0], r[1])
	}
	return tw.Flush()
}

func stamp(t time.Time) string {
	if t.IsZero() {
		return "-"
	}
	return t.UTC().Format("2006-01-02 15:04:05Z")
}
