package main

import (
	"bytes"
	"context"
	"errors"
	"io"
	"net/netip"
	"os"
	"path/filepath"
	"strings"
	"testing"
	"time"

	"github.com/edgegw/edgegw/access/enroll"
	"github.com/edgegw/edgegw/access/enroll/enrolltest"
	"github.com/edgegw/edgegw/access/identity"
	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// adminServer runs the admin plane over reg on a socket in a temporary
// directory and on a loopback port; it returns the socket and the
// listener's URL.
func adminServer(t *testing.T, reg enroll.Registry) (sock, url string) {
	t.Helper()
	dir := t.TempDir()
	srv, err := admin.New(admin.Options{
		StateDir: dir,
		Devices:  enroll.NewAdmin(reg, enroll.AdminOptions{}),
		Status:   func() any { return map[string]string{"version": "cli-test"} },
		Reload: func(context.Context) (string, error) {
			return "/etc/edgegw/edgegw.yaml", errors.New("edgegw.yaml:3:11: admin.listen: bad")
		},
	})
	if err != nil {
		t.Fatal(err)
	}
	sock = filepath.Join(dir, "admin.sock")
	if err := srv.Set(admin.Config{Listen: "127.0.0.1:0", Socket: sock}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })
	return sock, "http://" + srv.Addr()
}

// TestCmdDevice lists, shows and revokes devices through the admin socket,
// and through the TCP listener with a token made by `edgegw admin token`.
func TestCmdDevice(t *testing.T) {
	reg := enrolltest.NewRegistry(netip.MustParseAddr("100.96.0.2"), 4)
	k, _ := wireguard.GeneratePrivateKey()
	d, err := reg.Enroll(t.Context(), identity.Enrollment{Name: "alice-laptop", Email: "alice@corp.example", Subject: "iss#alice", Groups: []string{"staff"}, PublicKey: k.PublicKey(), Expires: time.Now().Add(time.Hour)})
	if err != nil {
		t.Fatal(err)
	}
	sock, url := adminServer(t, reg)
	run := func(args ...string) (string, error) {
		var out bytes.Buffer
		err := cmdDevice(append(args, "--socket", sock), &out, io.Discard)
		return out.String(), err
	}

	out, err := run("list")
	if err != nil {
		t.Fatal(err)
	}
	lines := strings.Split(strings.TrimSpace(out), "\n")
	if len(lines) != 2 || !strings.HasPrefix(lines[0], "ID ") || !strings.Contains(lines[1], d.ID) ||
		!strings.Contains(lines[1], "alice@corp.example") || !strings.Contains(lines[1], "100.96.0.2") || !strings.Contains(lines[1], "active") {
		t.Fatalf("list:\n%s", out)
	}
	out, err = run("show", d.ID)
	if err != nil || !strings.Contains(out, "public key:  "+k.PublicKey().String()) || !strings.Contains(out, "groups:      staff") {
		t.Fatalf("show: %v\n%s", err, out)
	}

	// Remote use: a viewer token may list but not revoke.
	dir := t.TempDir()
	tokenFile := func(name, role string) string {
		var out, errb bytes.Buffer
		if err := cmdAdmin([]string{"token", "create", name, "--role", role, "--socket", sock}, &out, &errb); err != nil {
			t.Fatalf("admin token create: %v\n%s", err, errb.String())
		}
		if !strings.Contains(errb.String(), "shown only this once") {
			t.Errorf("create does not say the token is shown once: %s", errb.String())
		}
		f := filepath.Join(dir, name)
		if err := os.WriteFile(f, out.Bytes(), 0o600); err != nil {
			t.Fatal(err)
		}
		return f
	}
	viewer, ops := tokenFile("viewer", "viewer"), tokenFile("ops", "admin")
	remote := func(token string, args ...string) (string, error) {
		var out bytes.Buffer
		err := cmdDevice(append(args, "--admin", url, "--token-file", token), &out, io.Discard)
		return out.String(), err
	}
	if out, err := remote(viewer, "list"); err != nil || !strings.Contains(out, d.ID) {
		t.Fatalf("list with a viewer token: %v\n%s", err, out)
	}
	if _, err := remote(viewer, "revoke", d.ID); err == nil || !strings.Contains(err.Error(), "viewer") {
		t.Fatalf("revoke with a viewer token: %v, want refused", err)
	}
	// A device waiting for approval (enrollment.approval: admin): a
	// viewer cannot let it in, an admin can.
	k2, _ := wireguard.GeneratePrivateKey()
	p, err := reg.Enroll(t.Context(), identity.Enrollment{Name: "bob-laptop", Email: "bob@corp.example", Subject: "iss#bob", PublicKey: k2.PublicKey(), Expires: time.Now().Add(time.Hour), Pending: true})
	if err != nil {
		t.Fatal(err)
	}
	if out, err := run("show", p.ID); err != nil || !strings.Contains(out, "status:      pending") {
		t.Fatalf("show pending: %v\n%s", err, out)
	}
	if _, err := remote(viewer, "approve", p.ID); err == nil || !strings.Contains(err.Error(), "viewer") {
		t.Fatalf("approve with a viewer token: %v, want refused", err)
	}
	if out, err := remote(ops, "approve", p.ID); err != nil || !strings.Contains(out, "Approved device "+p.ID) {
		t.Fatalf("approve with an admin token: %v\n%s", err, out)
	}
	if got, _ := reg.Get(t.Context(), p.ID); got.Pending {
		t.Fatal("the device is still pending after approve")
	}
	out, err = remote(ops, "revoke", d.ID)
	if err != nil || !strings.Contains(out, "Revoked device "+d.ID) {
		t.Fatalf("revoke with an admin token: %v\n%s", err, out)
	}
	if err := cmdDevice([]string{"list", "--admin", url}, io.Discard, io.Discard); !errors.Is(err, errUsage) || !strings.Contains(err.Error(), "--token-file") {
		t.Errorf("--admin without a token: %v, want a usage error naming --token-file", err)
	}

	if out, err = run("list", "--json"); err != nil || !strings.Contains(out, `"status": "revoked"`) {
		t.Fatalf("list --json: %v\n%s", err, out)
	}
	if _, err = run("show", "dev_nope"); err == nil || !strings.Contains(err.Error(), `No device has the id "dev_nope"`) {
		t.Fatalf("show unknown: %v", err)
	}
	reg.SetDown(true)
	if _, err = run("list"); err == nil || !strings.Contains(err.Error(), "unavailable") {
		t.Fatalf("list with the registry down: %v", err)
	}
	if err := cmdDevice([]string{"list", "--socket", filepath.Join(dir, "none.sock")}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "cannot reach the admin socket") {
		t.Fatalf("list with no gateway: %v", err)
	}
}

// TestCmdAdminToken creates, lists and revokes tokens, and runs status
// and reload, over the socket.
func TestCmdAdminToken(t *testing.T) {
	sock, url := adminServer(t, enrolltest.NewRegistry(netip.MustParseAddr("100.96.0.2"), 4))
	cmd := func(f func([]string, io.Writer, io.Writer) error, args ...string) (string, error) {
		var out bytes.Buffer
		err := f(append(args, "--socket", sock), &out, io.Discard)
		return out.String(), err
	}
	secret, err := cmd(cmdAdmin, "token", "create", "grafana", "--role", "viewer")
	if err != nil || !strings.HasPrefix(secret, admin.TokenPrefix) || strings.Count(secret, "\n") != 1 {
		t.Fatalf("create: %v %q", err, secret)
	}
	if _, err := cmd(cmdAdmin, "token", "create", "grafana", "--role", "admin"); err == nil || !strings.Contains(err.Error(), "exists") {
		t.Errorf("create twice: %v", err)
	}
	out, err := cmd(cmdAdmin, "token", "list")
	if err != nil || !strings.Contains(out, "grafana") || !strings.Contains(out, "viewer") || !strings.Contains(out, "uid:0") || strings.Contains(out, secret[:20]) {
		t.Errorf("list: %v\n%s", err, out)
	}
	tf := filepath.Join(t.TempDir(), "tok")
	os.WriteFile(tf, []byte(secret), 0o600)
	var sout bytes.Buffer
	if err := cmdStatus([]string{"--admin", url, "--token-file", tf}, &sout, io.Discard); err != nil || !strings.Contains(sout.String(), "cli-test") {
		t.Errorf("status with the token: %v %s", err, sout.String())
	}
	if out, err := cmd(cmdAdmin, "token", "revoke", "grafana"); err != nil || !strings.Contains(out, "Revoked token") {
		t.Errorf("revoke: %v %s", err, out)
	}
	if err := cmdStatus([]string{"--admin", url, "--token-file", tf}, io.Discard, io.Discard); err == nil || !strings.Contains(err.Error(), "admin token is required") {
		t.Errorf("status with the revoked token: %v", err)
	}
	if _, err := cmd(cmdAdmin, "token", "revoke", "grafana"); err == nil || !strings.Contains(err.Error(), "No token") {
		t.Errorf("revoke twice: %v", err)
	}
	if out, err := cmd(cmdStatus); err != nil || !strings.Contains(out, `"version": "cli-test"`) {
		t.Errorf("status: %v %s", err, out)
	}
	// --config finds the socket in the file.
	cfgFile := filepath.Join(t.TempDir(), "edgegw.yaml")
	os.WriteFile(cfgFile, []byte("admin:\n  socket: "+sock+"\n"), 0o600)
	sout.Reset()
	if err := cmdStatus([]string{"--config", cfgFile}, &sout, io.Discard); err != nil || !strings.Contains(sout.String(), "cli-test") {
		t.Errorf("status --config: %v %s", err, sout.String())
	}
	if err := cmdStatus([]string{"--config", cfgFile, "--socket", sock}, io.Discard, io.Discard); !errors.Is(err, errUsage) {
		t.Errorf("status --config --socket: %v, want a usage error", err)
	}
	if _, err := cmd(cmdReload); err == nil || !strings.Contains(err.Error(), "reload rejected") || !strings.Contains(err.Error(), "admin.listen: bad") {
		t.Errorf("reload: %v", err)
	}
	for _, args := range [][]string{{}, {"token"}, {"token", "create", "x"}, {"token", "create", "x", "--role", "root"}, {"token", "list", "x"}, {"token", "revoke"}, {"token", "list", "--role", "admin"}, {"user", "list"}} {
		if err := cmdAdmin(args, io.Discard, io.Discard); !errors.Is(err, errUsage) {
			t.Errorf("admin %q: %v, want a usage error", args, err)
		}
	}
}
