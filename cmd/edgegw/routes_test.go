package main

import (
	"bytes"
	"context"
	"encoding/json"
	"io"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/admin"
)

// TestCmdRoutes prints the routing table the admin API serves: a header,
// one row per route with its source, state and metric, * on the active
// rows, - for what a row does not have; --json passes the answer on.
func TestCmdRoutes(t *testing.T) {
	view := admin.RoutesView{Routes: []admin.RouteRow{
		{Prefix: "10.20.0.0/24", Via: "fra", Source: "bgp:branch", Priority: 100, Weight: 1, State: "healthy", Metric: 100, Active: true},
		{Prefix: "10.20.0.0/24", Via: "gre1", Source: "static", Priority: 200, Weight: 1, State: "down", Metric: 1000200},
		{Prefix: "10.20.0.0/24", Source: "fallback", Metric: 2000000000},
		{Prefix: "10.40.0.0/16", Via: "gre1", Source: "static", Priority: 100, Weight: 1, State: "healthy", Steering: "chosen", Metric: 100, Active: true},
	}}
	dir := t.TempDir()
	srv, err := admin.New(admin.Options{StateDir: dir, Routes: func() (admin.RoutesView, error) { return view, nil }})
	if err != nil {
		t.Fatal(err)
	}
	sock := filepath.Join(dir, "admin.sock")
	if err := srv.Set(admin.Config{Listen: "127.0.0.1:0", Socket: sock}); err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() { cancel(); <-done })

	var out bytes.Buffer
	if err := cmdRoutes([]string{"--socket", sock}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var got []string
	for _, l := range strings.Split(strings.TrimRight(out.String(), "\n"), "\n") {
		got = append(got, strings.Join(strings.Fields(l), " "))
	}
	want := []string{
		"PREFIX VIA SOURCE PRIORITY STATE STEERING METRIC",
		"* 10.20.0.0/24 fra bgp:branch 100 healthy - 100",
		"10.20.0.0/24 gre1 static 200 down - 1000200",
		"10.20.0.0/24 - fallback - - - 2000000000",
		"* 10.40.0.0/16 gre1 static 100 healthy chosen 100",
	}
	if !slices.Equal(got, want) {
		t.Errorf("got\n%s\nwant\n%s", strings.Join(got, "\n"), strings.Join(want, "\n"))
	}

	out.Reset()
	if err := cmdRoutes([]string{"--json", "--socket", sock}, &out, io.Discard); err != nil {
		t.Fatal(err)
	}
	var back admin.RoutesView
	if err := json.Unmarshal(out.Bytes(), &back); err != nil || !slices.Equal(back.Routes, view.Routes) {
		t.Errorf("--json: %v\n%s", err, out.String())
	}
	if err := cmdRoutes([]string{"extra", "--socket", sock}, io.Discard, io.Discard); err != errUsage {
		t.Errorf("an extra argument: %v, want a usage error", err)
	}
}
