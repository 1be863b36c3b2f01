package admin

import (
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"os"
	"path/filepath"
	"slices"
	"strconv"
	"sync"
	"time"

	"github.com/google/renameio/v2"
)

// historyKeep is how many applied configurations the history keeps.
const historyKeep = 20

// HistoryEntry is one configuration file applied through the API or by
// a reload on a signal.
type HistoryEntry struct {
	ID   string    `json:"id"`
	When time.Time `json:"when"`
	// Actor applied it: an API token's or user's id, the signal's name
	// ("SIGHUP") for a reload, "" for the base (the file that ran before
	// the first change the history saw).
	Actor string `json:"actor,omitempty"`
	// Action: "apply", "rollback", "reload" (the file changed on disk and
	// reloaded on a signal), or "base".
	Action string `json:"action"`
	// From is the entry a rollback went back to.
	From   string `json:"from,omitempty"`
	SHA256 string `json:"sha256"`
	Bytes  int    `json:"bytes"`
}

var errNoEntry = errors.New("no such configuration in the history")

// configHistory keeps the last historyKeep applied files on disk, in
// <state_dir>/admin/config-history: each file as <id>.yaml and the list
// in index.json. The files hold secrets: the directory is 0700 and every
// file 0600, as the configuration file itself should be.
type configHistory struct {
	dir string

	mu      sync.Mutex
	entries []HistoryEntry // oldest first
	next    int
}

// openHistory reads the history's index, if there is one.
func openHistory(dir string) (*configHistory, error) {
	h := &configHistory{dir: dir, next: 1}
	b, err := os.ReadFile(filepath.Join(dir, "index.json"))
	switch {
	case errors.Is(err, os.ErrNotExist):
		return h, nil
	case err != nil:
		return nil, fmt.Errorf("configuration history: %w", err)
	}
	if err := json.Unmarshal(b, &h.entries); err != nil {
		return nil, fmt.Errorf("configuration history %s: %w", filepath.Join(dir, "index.json"), err)
	}
	for _, e := range h.entries {
		if n, err := strconv.Atoi(e.ID); err == nil && n >= h.next {
			h.next = n + 1
		}
	}
	return h, nil
}

// list returns the entries, newest first.
func (h *configHistory) list() []HistoryEntry {
	h.mu.Lock()
	defer h.mu.Unlock()
	out := slices.Clone(h.entries)
	slices.Reverse(out)
	if out == nil {
		out = []HistoryEntry{}
	}
	return out
}

// get returns an entry and its file.
func (h *configHistory) get(id string) (HistoryEntry, []byte, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	i := slices.IndexFunc(h.entries, func(e HistoryEntry) bool { return e.ID == id })
	if i < 0 {
		return HistoryEntry{}, nil, fmt.Errorf("%w: %q", errNoEntry, id)
	}
	b, err := os.ReadFile(h.file(id))
	if err != nil {
		return HistoryEntry{}, nil, fmt.Errorf("configuration history: %w", err)
	}
	return h.entries[i], b, nil
}

// ensureBase keeps data as the base entry when the history is empty.
func (h *configHistory) ensureBase(data []byte, now time.Time) error {
	h.mu.Lock()
	empty := len(h.entries) == 0
	h.mu.Unlock()
	if !empty {
		return nil
	}
	_, err := h.add(data, now, "", "base", "")
	return err
}

// newest returns the newest entry's SHA-256, "" when there is none.
func (h *configHistory) newest() string {
	h.mu.Lock()
	defer h.mu.Unlock()
	if len(h.entries) == 0 {
		return ""
	}
	return h.entries[len(h.entries)-1].SHA256
}

// add keeps an applied file, dropping the oldest beyond historyKeep.
func (h *configHistory) add(data []byte, now time.Time, actor, action, from string) (HistoryEntry, error) {
	h.mu.Lock()
	defer h.mu.Unlock()
	if err := os.MkdirAll(h.dir, 0o700); err != nil {
		return HistoryEntry{}, fmt.Errorf("configuration history: %w", err)
	}
	sum := sha256.Sum256(data)
	e := HistoryEntry{ID: strconv.Itoa(h.next), When: now.UTC(), Actor: actor, Action: action, From: from,
		SHA256: hex.EncodeToString(sum[:]), Bytes: len(data)}
	if err := writeFileAtomic(h.file(e.ID), data); err != nil {
		return HistoryEntry{}, fmt.Errorf("configuration history: %w", err)
	}
	entries := append(slices.Clone(h.entries), e)
	var drop []HistoryEntry
	if n := len(entries) - historyKeep; n > 0 {
		drop, entries = entries[:n], entries[n:]
	}
	b, err := json.MarshalIndent(entries, "", "  ")
	if err == nil {
		err = writeFileAtomic(filepath.Join(h.dir, "index.json"), b)
	}
	if err != nil {
		os.Remove(h.file(e.ID))
		return HistoryEntry{}, fmt.Errorf("configuration history: %w", err)
	}
	h.entries = entries
	h.next++
	for _, d := range drop {
		// Out of the index already; a file left behind is only disk.
		os.Remove(h.file(d.ID))
	}
	return e, nil
}

func (h *configHistory) file(id string) string { return filepath.Join(h.dir, id+".yaml") }

// writeFileAtomic writes a 0600 file through a synced temporary file and
// a rename, so a crash leaves the old file or the new one, never half.
func writeFileAtomic(name string, data []byte) error {
	return renameio.WriteFile(name, data, 0o600, renameio.WithStaticPermissions(0o600), renameio.WithTempDir(filepath.Dir(name)))
}
