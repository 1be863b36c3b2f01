package access

import (
	"context"
	"net/http"
	"slices"
	"sync"
	"testing"
	"time"
)

// TestEndSessions: ending a user's sessions by address (what a SCIM
// deactivation does) makes their cookie fail on the very next request on
// every app, whatever the address's case; another user's session goes
// on; the ended user can sign in again.
func TestEndSessions(t *testing.T) {
	e, f := standardEnv(t)
	alice := e.login("wiki.test")
	if resp, _ := e.get(alice, e.url("docs.test", "/start")); resp.StatusCode != 200 {
		t.Fatalf("alice's docs login: %d", resp.StatusCode)
	}
	f.set(func(f *fakeIdP) { f.claims["email"] = "bob@corp.example" })
	bob := e.login("wiki.test")
	noFollow := func(c *http.Client) *http.Client {
		nf := e.client(false)
		nf.Jar = c.Jar
		return nf
	}
	for who, c := range map[string]*http.Client{"alice": alice, "bob": bob} {
		if resp, _ := e.get(noFollow(c), e.url("wiki.test", "/")); resp.StatusCode != 200 {
			t.Fatalf("%s before: %d", who, resp.StatusCode)
		}
	}
	if resp, _ := e.get(noFollow(alice), e.url("docs.test", "/")); resp.StatusCode != 200 {
		t.Fatalf("alice on docs before: %d", resp.StatusCode)
	}
	e.srv.EndSessions([]string{"Alice@Corp.Example"})
	if resp, _ := e.get(noFollow(alice), e.url("wiki.test", "/")); resp.StatusCode != http.StatusFound {
		t.Errorf("alice's session after EndSessions: %d, want a redirect to sign in", resp.StatusCode)
	}
	if resp, _ := e.get(noFollow(alice), e.url("docs.test", "/")); resp.StatusCode != http.StatusFound {
		t.Errorf("alice on another app after EndSessions: %d", resp.StatusCode)
	}
	if resp, _ := e.get(noFollow(bob), e.url("wiki.test", "/")); resp.StatusCode != 200 {
		t.Errorf("bob's session after alice's ended: %d", resp.StatusCode)
	}
	// A new sign-in (as the provider would allow a reactivated user) works.
	e.clock.Advance(time.Second)
	f.set(func(f *fakeIdP) { f.claims["email"] = "alice@corp.example" })
	if resp, _ := e.get(alice, e.url("wiki.test", "/again")); resp.StatusCode != 200 {
		t.Fatalf("alice signs in again: %d", resp.StatusCode)
	}
}

// TestSignedInTellsGroups: every confirmed sign-in hands the provider's
// issuer, the subject and the fresh groups to Options.SignedIn, also when
// the app's policy then refuses the user.
func TestSignedInTellsGroups(t *testing.T) {
	dir := t.TempDir()
	f := newFakeIdP(t)
	up := newUpstream(t)
	var (
		mu  sync.Mutex
		got [][]string
	)
	e := startEnv(t, defaultConfig(t, up.URL, dir), idpConfig(t, f, dir), dir, up, func(o *Options) {
		o.SignedIn = func(_ context.Context, iss, sub string, groups []string) {
			mu.Lock()
			defer mu.Unlock()
			got = append(got, append([]string{iss, sub}, groups...))
		}
	})
	e.login("wiki.test")
	f.set(func(f *fakeIdP) { f.claims["groups"] = []string{"finance"} })
	e.get(e.client(true), e.url("wiki.test", "/")) // a fresh browser signs in again
	mu.Lock()
	defer mu.Unlock()
	want := [][]string{{f.issuer, "user-1", "engineering"}, {f.issuer, "user-1", "finance"}}
	if len(got) != len(want) || !slices.Equal(got[0], want[0]) || !slices.Equal(got[1], want[1]) {
		t.Errorf("SignedIn calls %q, want %q", got, want)
	}
}
