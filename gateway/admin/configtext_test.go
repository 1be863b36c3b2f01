package admin

import (
	"os"
	"path/filepath"
	"reflect"
	"strings"
	"testing"
	"time"

	"go.yaml.in/yaml/v3"
)

const secretFile = `# the branch office
appliance:
  name: branch   # the name in logs
tunnels:
  gre:
    - name: b1
      psk: "s3cr#t"
      url: https://bob:hunter2@logs.example/x?token=abc&x=1
    - name: b2
      psk: 'it''s'
logpush:
  password: plain-secret
  password_file: /etc/edgegw/pw
admin:
  metrics:
    token: true
`

// TestRedactSourceKeepsLines: every secret of the file is replaced where
// it stands, so line numbers (and comments) are those of the file.
func TestRedactSourceKeepsLines(t *testing.T) {
	got, err := redactSource([]byte(secretFile))
	if err != nil {
		t.Fatal(err)
	}
	for _, s := range []string{"s3cr#t", "hunter2", "abc", "it''s", "plain-secret"} {
		if strings.Contains(string(got), s) {
			t.Errorf("secret %q shown:\n%s", s, got)
		}
	}
	gl, wl := strings.Split(string(got), "\n"), strings.Split(secretFile, "\n")
	if len(gl) != len(wl) {
		t.Fatalf("%d lines, want %d:\n%s", len(gl), len(wl), got)
	}
	for _, want := range []string{"# the branch office", "  name: branch   # the name in logs", "      psk: REDACTED",
		"  password: REDACTED", "  password_file: /etc/edgegw/pw", "    token: true"} {
		if !strings.Contains(string(got), want+"\n") {
			t.Errorf("missing line %q:\n%s", want, got)
		}
	}
	if gl[7] != `      url: https://bob:REDACTED@logs.example/x?token=REDACTED&x=1` {
		t.Errorf("url line: %q", gl[7])
	}
}

// TestRedactSourceBlockSecret: a secret in a block scalar cannot be
// replaced in place; the file is then written anew, still redacted.
func TestRedactSourceBlockSecret(t *testing.T) {
	got, err := redactSource([]byte("a:\n  private_key: |\n    -----BEGIN-----\n    xyz\n"))
	if err != nil {
		t.Fatal(err)
	}
	if strings.Contains(string(got), "xyz") || !strings.Contains(string(got), Redacted) {
		t.Errorf("block secret:\n%s", got)
	}
}

// TestUnredact: a file sent back with REDACTED gets the running file's
// secret at the same place; a REDACTED with no secret there is refused at
// its line, never applied as the literal word.
func TestUnredact(t *testing.T) {
	shown, err := redactSource([]byte(secretFile))
	if err != nil {
		t.Fatal(err)
	}
	edited := strings.Replace(string(shown), "name: branch ", "name: branch2", 1)
	full, probs := unredact([]byte(edited), []byte(secretFile))
	if len(probs) > 0 {
		t.Fatalf("problems: %v", probs)
	}
	want := strings.Replace(secretFile, "name: branch ", "name: branch2", 1)
	// The quoting of a secret may change; its value may not.
	for _, s := range []string{`psk: "s3cr#t"`, `psk: "it's"`, "password: plain-secret", "https://bob:hunter2@logs.example/x?token=abc&x=1"} {
		if !strings.Contains(string(full), s) {
			t.Errorf("%q not put back:\n%s", s, full)
		}
	}
	if strings.Count(string(full), "\n") != strings.Count(want, "\n") || strings.Contains(string(full), Redacted) {
		t.Errorf("unredacted:\n%s", full)
	}

	// Items found by name keep their own secrets when they move.
	moved := "tunnels:\n  gre:\n    - name: b2\n      psk: REDACTED\n    - name: b1\n      psk: REDACTED\n"
	full, probs = unredact([]byte(moved), []byte(secretFile))
	if want := "tunnels:\n  gre:\n    - name: b2\n      psk: \"it's\"\n    - name: b1\n      psk: \"s3cr#t\"\n"; len(probs) > 0 || string(full) != want {
		t.Errorf("moved items: %v\n%s", probs, full)
	}

	for _, tc := range []struct{ name, text, field string }{
		{"new key", "appliance:\n  name: x\nlogpush:\n  token: REDACTED\n", "logpush.token"},
		{"new item", "tunnels:\n  gre:\n    - name: b3\n      psk: REDACTED\n", "tunnels.gre[name=b3].psk"},
		{"changed around the secret", "logpush:\n  password: REDACTED-x\n", "logpush.password"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			_, probs := unredact([]byte(tc.text), []byte(secretFile))
			if len(probs) != 1 || probs[0].Field != tc.field || probs[0].Line == 0 {
				t.Fatalf("problems %+v, want one at %s", probs, tc.field)
			}
		})
	}
}

func TestDiffLines(t *testing.T) {
	for _, tc := range []struct {
		name, a, b string
		want       string // op+text per line
		changed    bool
	}{
		{"same", "a\nb\n", "a\nb\n", "", false},
		{"changed line", "1\n2\n3\n4\n5\n6\n7\n8\n9\n", "1\n2\n3\n4\nX\n6\n7\n8\n9\n", "…| 2| 3| 4|-5|+X| 6| 7| 8|…", true},
		{"added at end", "a\n", "a\nb\n", " a|+b", true},
		{"removed at start", "a\nb\n", "b\n", "-a| b", true},
		{"all new", "", "x\n", "+x", true},
	} {
		t.Run(tc.name, func(t *testing.T) {
			d, changed := diffLines(tc.a, tc.b)
			var parts []string
			for _, l := range d {
				parts = append(parts, l.Op+l.Text)
			}
			if got := strings.Join(parts, "|"); got != tc.want || changed != tc.changed {
				t.Errorf("diff = %q (changed %v), want %q (%v)", got, changed, tc.want, tc.changed)
			}
		})
	}
	// Line numbers name each file's line.
	d, _ := diffLines("a\nb\nc\n", "a\nB\nc\n")
	if d[1].Op != "-" || d[1].Old != 2 || d[2].Op != "+" || d[2].New != 2 {
		t.Errorf("numbers: %+v", d)
	}
}

// TestConfigHistory: the history keeps the last 20 files (0600), drops
// the oldest, and survives a restart.
func TestConfigHistory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "config-history")
	h, err := openHistory(dir)
	if err != nil {
		t.Fatal(err)
	}
	now := time.Date(2026, 12, 7, 3, 0, 0, 0, time.UTC)
	if err := h.ensureBase([]byte("base\n"), now); err != nil {
		t.Fatal(err)
	}
	for i := range 25 {
		if _, err := h.add([]byte("v"+historyID(i)+"\n"), now.Add(time.Duration(i)*time.Minute), "ops", "apply", ""); err != nil {
			t.Fatal(err)
		}
	}
	if err := h.ensureBase([]byte("not again\n"), now); err != nil {
		t.Fatal(err)
	}
	l := h.list()
	if len(l) != historyKeep || l[0].ID != "26" || l[historyKeep-1].ID != "7" || l[0].Actor != "ops" {
		t.Fatalf("history: %d entries, newest %+v, oldest %+v", len(l), l[0], l[len(l)-1])
	}
	if _, _, err := h.get("1"); err == nil {
		t.Error("the dropped base is still there")
	}
	if _, err := os.Stat(filepath.Join(dir, "1.yaml")); !os.IsNotExist(err) {
		t.Errorf("dropped file: %v", err)
	}
	st, err := os.Stat(filepath.Join(dir, "26.yaml"))
	if err != nil || st.Mode().Perm() != 0o600 {
		t.Errorf("kept file: %v %v", st.Mode(), err)
	}
	h2, err := openHistory(dir)
	if err != nil {
		t.Fatal(err)
	}
	e, data, err := h2.get("26")
	if err != nil || string(data) != "v24\n" || e.SHA256 == "" {
		t.Fatalf("after a restart: %+v %q %v", e, data, err)
	}
	if e, err := h2.add([]byte("next\n"), now, "ops", "rollback", "20"); err != nil || e.ID != "27" {
		t.Errorf("next id after a restart: %+v %v", e, err)
	}
}

// FuzzUnredact: for any running file, what redactSource shows has no
// secret left (redacting it again changes nothing), and unredact of what
// is shown gives back the running file's values exactly, or says why not.
func FuzzUnredact(f *testing.F) {
	f.Add(secretFile, "a: REDACTED\n")
	f.Add(secretFile, "tunnels:\n  gre:\n    - psk: REDACTED\n")
	f.Add("psk: \"x\\\"y\"\n", "psk: REDACTED\n")
	f.Add("k: {token: 'a''b'}\n", "k: {token: REDACTED}\n")
	f.Add("l:\n  - name: a\n    psk: x\n  - name: a\n    psk: y\n", "")
	f.Fuzz(func(t *testing.T, running, shown string) {
		unredact([]byte(shown), []byte(running)) // any text: no panic
		red, err := redactSource([]byte(running))
		if err != nil {
			return
		}
		again, err := redactSource(red)
		if err != nil || string(again) != string(red) {
			t.Fatalf("redacting the shown text again: %v\n%q\n%q", err, red, again)
		}
		full, probs := unredact(red, []byte(running))
		if len(probs) > 0 {
			return
		}
		var want, got any
		if yaml.Unmarshal([]byte(running), &want) != nil {
			return
		}
		if err := yaml.Unmarshal(full, &got); err != nil || !reflect.DeepEqual(want, got) {
			t.Fatalf("round trip: %v\nrunning %q\nshown %q\nback %q", err, running, red, full)
		}
	})
}

// TestKeepReloaded: a file reloaded on a signal joins the history, with
// the file that ran before it as the base when the history is empty; a
// reload of the file the history ends with (an apply through the API
// reloads too) adds nothing.
func TestKeepReloaded(t *testing.T) {
	srv, err := New(Options{StateDir: t.TempDir()})
	if err != nil {
		t.Fatal(err)
	}
	srv.KeepReloaded([]byte("first\n"), []byte("second\n"), "SIGHUP")
	l := srv.history.list()
	if len(l) != 2 || l[1].Action != "base" || l[0].Action != "reload" || l[0].Actor != "SIGHUP" {
		t.Fatalf("after one reload: %+v", l)
	}
	if _, data, err := srv.history.get(l[1].ID); err != nil || string(data) != "first\n" {
		t.Errorf("the base: %q %v", data, err)
	}
	srv.KeepReloaded([]byte("first\n"), []byte("second\n"), "SIGHUP")
	if _, err := srv.history.add([]byte("third\n"), time.Now(), "ops", "apply", ""); err != nil {
		t.Fatal(err)
	}
	srv.KeepReloaded([]byte("second\n"), []byte("third\n"), "ops")
	if l := srv.history.list(); len(l) != 3 {
		t.Errorf("reloads of the newest entry's file added to the history: %+v", l)
	}
	srv.KeepReloaded([]byte("third\n"), []byte("fourth\n"), "ops")
	if l := srv.history.list(); len(l) != 4 || l[0].Action != "reload" || l[0].Actor != "ops" {
		t.Errorf("a reload by the API: %+v", l)
	}
}
