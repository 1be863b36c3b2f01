package gateway

import (
	"context"
	"encoding/json"
	"net/http"
	"path/filepath"
	"slices"
	"strings"
	"testing"

	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/config"
)

// TestConsoleViews: what the console shows of a running gateway, over the
// admin API on its socket: the example configuration (every section) as
// YAML with nothing secret in it, and the firewall part's rules in
// evaluation order with their counters (zero before any table exists) and
// the lists' sizes.
func TestConsoleViews(t *testing.T) {
	cfg, err := config.Parse("edgegw.yaml", config.ExampleYAML(), config.Options{SkipFiles: true})
	mustNil(t, err)
	fp := &fwPart{rules: cfg.Firewall}
	dir := t.TempDir()
	srv, err := admin.New(admin.Options{StateDir: dir,
		RunningConfig: func() (string, any) { return cfg.File, cfg },
		Firewall:      fp.view})
	mustNil(t, err)
	sock := filepath.Join(dir, "run", "admin.sock")
	mustNil(t, srv.Set(admin.Config{Listen: "127.0.0.1:0", Socket: sock}))
	ctx, cancel := context.WithCancel(t.Context())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }() // owned by the test: stopped below
	defer func() { cancel(); <-done }()
	client, err := admin.NewClient(admin.ClientOptions{Socket: sock})
	mustNil(t, err)

	body, err := client.Do(t.Context(), http.MethodGet, admin.PathConfig, nil)
	mustNil(t, err)
	var view admin.ConfigView
	mustNil(t, json.Unmarshal(body, &view))
	if view.File != "edgegw.yaml" || !strings.Contains(view.YAML, "appliance:") || !strings.Contains(view.YAML, "firewall:") {
		t.Errorf("config view: %s\n%.2000s", view.File, view.YAML)
	}
	if strings.Contains(view.YAML, "s3cret") || strings.Contains(view.YAML, "password=") {
		t.Errorf("a secret is shown:\n%s", view.YAML)
	}

	body, err = client.Do(t.Context(), http.MethodGet, admin.PathFirewall, nil)
	mustNil(t, err)
	var fw admin.FirewallView
	mustNil(t, json.Unmarshal(body, &fw))
	var want []string
	for _, r := range cfg.Firewall.Rules {
		if r.Enabled == nil || *r.Enabled {
			want = append(want, r.ID)
		}
	}
	var got []string
	for _, r := range fw.Rules {
		got = append(got, r.ID)
		if r.Packets != 0 || r.Expression == "" || r.Action == "" {
			t.Errorf("rule %+v", r)
		}
	}
	if len(want) == 0 || !slices.Equal(got, want) {
		t.Errorf("rules %v, want %v (the configuration's order)", got, want)
	}
	if len(fw.Lists) != len(cfg.Firewall.Lists) {
		t.Errorf("lists %+v, want %d", fw.Lists, len(cfg.Firewall.Lists))
	}
	for _, l := range fw.Lists {
		if l.Entries != len(cfg.Firewall.Lists[l.Name]) {
			t.Errorf("list %s: %d entries, want %d", l.Name, l.Entries, len(cfg.Firewall.Lists[l.Name]))
		}
	}
}

func mustNil(t *testing.T, err error) {
	t.Helper()
	if err != nil {
		t.Fatal(err)
	}
}
