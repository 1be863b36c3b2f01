package admin

import (
	"context"
	"crypto/sha256"
	"encoding/hex"
	"encoding/json"
	"errors"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"time"
)

// Paths of the configuration editor: check a proposed file, apply it,
// and the history of applied files with rollback.
const (
	PathConfigSource  = "/api/v1/config/source"
	PathConfigCheck   = "/api/v1/config/check"
	PathConfigApply   = "/api/v1/config/apply"
	PathConfigHistory = "/api/v1/config/history"
)

// maxConfigBody bounds a proposed configuration file.
const maxConfigBody = 1 << 20

// ConfigProblem is one error in a proposed configuration, where it is in
// the text (Line 0: the file as a whole, e.g. an interface the plan
// cannot resolve).
type ConfigProblem struct {
	Line    int    `json:"line,omitempty"`
	Column  int    `json:"column,omitempty"`
	Field   string `json:"field,omitempty"`
	Message string `json:"message"`
}

func (p ConfigProblem) String() string {
	s := p.Message
	if p.Field != "" {
		s = p.Field + ": " + s
	}
	if p.Line > 0 {
		s = fmt.Sprintf("%d:%d: %s", p.Line, p.Column, s)
	}
	return s
}

// ConfigEditor is what the gateway lends the configuration editor.
type ConfigEditor interface {
	// Source returns the configuration file's path and its text as it is
	// on disk now, secrets and all.
	Source() (file string, data []byte, err error)
	// Check validates data as a reload would (decode, validate, prepare
	// the plan) and changes nothing.
	Check(data []byte) ([]ConfigProblem, error)
	// Apply checks data, writes it as the configuration file and reloads
	// it (the path a SIGHUP takes). Problems: refused by the check,
	// nothing changed. An error: the reload failed, the previous file is
	// back in place and the previous configuration keeps running.
	Apply(ctx context.Context, data []byte) ([]ConfigProblem, error)
}

// ConfigRequest is the body of POST …/check and …/apply: the proposed
// file as the console shows it (secrets may be REDACTED where the running
// file has them at the same place).
type ConfigRequest struct {
	YAML string `json:"yaml"`
}

// ConfigCheck answers POST /api/v1/config/check and …/apply.
type ConfigCheck struct {
	// Valid: the proposed file passes every check a reload makes.
	Valid    bool            `json:"valid"`
	Problems []ConfigProblem `json:"problems"`
	// Diff is the change against the running file, both redacted.
	Diff []DiffLine `json:"diff"`
	// Changed: the proposed file differs from the running one.
	Changed bool `json:"changed"`
	// Applied and Error are set by …/apply: whether the reload took
	// effect, or why it was refused.
	Applied bool   `json:"applied"`
	Error   string `json:"error,omitempty"`
	// History is the entry the applied file was kept as.
	History *HistoryEntry `json:"history,omitempty"`
}

// ConfigSource answers GET /api/v1/config/source: the file to edit.
type ConfigSource struct {
	File string `json:"file"`
	// YAML is the file's text with every secret REDACTED, line for line.
	YAML string `json:"yaml"`
}

func (s *Server) configSource(w http.ResponseWriter, r *http.Request) {
	file, data, err := s.opts.Config.Source()
	if err != nil {
		writeError(w, http.StatusConflict, "no_file", err.Error())
		return
	}
	red, err := redactSource(data)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, ConfigSource{File: file, YAML: string(red)})
}

// proposal reads a request's proposed file and puts back the secrets it
// shows REDACTED. It writes the refusal itself when it returns false.
func (s *Server) proposal(w http.ResponseWriter, r *http.Request) (shown, full, running []byte, probs []ConfigProblem, ok bool) {
	var req ConfigRequest
	dec := json.NewDecoder(io.LimitReader(r.Body, maxConfigBody+4096))
	if err := dec.Decode(&req); err != nil {
		writeError(w, http.StatusBadRequest, "bad_request", `Expected {"yaml": TEXT}: `+err.Error())
		return nil, nil, nil, nil, false
	}
	if len(req.YAML) > maxConfigBody {
		writeError(w, http.StatusRequestEntityTooLarge, "too_large", fmt.Sprintf("A configuration file is at most %d bytes.", maxConfigBody))
		return nil, nil, nil, nil, false
	}
	_, running, err := s.opts.Config.Source()
	if err != nil {
		writeError(w, http.StatusConflict, "no_file", err.Error())
		return nil, nil, nil, nil, false
	}
	shown = []byte(req.YAML)
	full, probs = unredact(shown, running)
	return shown, full, running, probs, true
}

// check validates and diffs the proposal; the problems of unredact come
// first.
func (s *Server) check(shown, full, running []byte, probs []ConfigProblem) (ConfigCheck, error) {
	res := ConfigCheck{Problems: probs}
	if len(probs) == 0 {
		p, err := s.opts.Config.Check(full)
		if err != nil {
			return res, err
		}
		res.Problems = p
	}
	if res.Problems == nil {
		res.Problems = []ConfigProblem{}
	}
	res.Valid = len(res.Problems) == 0
	was, err := redactSource(running)
	if err != nil {
		return res, err
	}
	res.Diff, res.Changed = diffLines(string(was), string(shown))
	return res, nil
}

// checkConfig serves POST /api/v1/config/check.
func (s *Server) checkConfig(w http.ResponseWriter, r *http.Request) {
	shown, full, running, probs, ok := s.proposal(w, r)
	if !ok {
		return
	}
	res, err := s.check(shown, full, running, probs)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, res)
}

// applyConfig serves POST /api/v1/config/apply: check, then write and
// reload; audited either way.
func (s *Server) applyConfig(w http.ResponseWriter, r *http.Request) {
	shown, full, running, probs, ok := s.proposal(w, r)
	if !ok {
		return
	}
	s.applyProposal(w, r, "apply", "", shown, full, running, probs)
}

// applyProposal applies a checked proposal (a pasted file, or a kept one
// rolled back to) and answers with the outcome.
func (s *Server) applyProposal(w http.ResponseWriter, r *http.Request, act, from string, shown, full, running []byte, probs []ConfigProblem) {
	a, _ := ActorFrom(r.Context())
	file, _, _ := s.opts.Config.Source()
	start := time.Now()
	e := Event{
		Action: act, Actor: a, ResourceType: "configuration", ResourceID: file,
		Metadata: map[string]any{"method": r.Method, "path": r.URL.Path},
	}
	if from != "" {
		e.Metadata["history_id"] = from
	}
	res, err := s.check(shown, full, running, probs)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	if !res.Valid {
		e.Error = fmt.Sprintf("%d problems, first %s", len(res.Problems), res.Problems[0])
		e.Description = "configuration " + act + " refused: it does not validate; nothing changed"
		s.Audit(e)
		writeJSON(w, http.StatusUnprocessableEntity, res)
		return
	}
	// Keep the file that ran before the first change made here, so the
	// history can always go back to it.
	if err := s.history.ensureBase(running, s.opts.Now()); err != nil {
		s.log.Warn("admin: keep the running configuration in the history", "err", err)
	}
	p, err := s.opts.Config.Apply(r.Context(), full)
	e.Metadata["duration_ms"] = time.Since(start).Milliseconds()
	switch {
	case len(p) > 0:
		// Checked above; the file changed between the check and the apply?
		res.Valid, res.Problems = false, p
		e.Error = p[0].String()
		e.Description = "configuration " + act + " refused: it does not validate; nothing changed"
		s.Audit(e)
		writeJSON(w, http.StatusUnprocessableEntity, res)
		return
	case err != nil:
		res.Error = err.Error()
		e.Error = err.Error()
		e.Description = "configuration " + act + " refused by the reload; the previous configuration keeps running"
		s.Audit(e)
		writeJSON(w, http.StatusUnprocessableEntity, res)
		return
	}
	res.Applied = true
	h, herr := s.history.add(full, s.opts.Now(), a.ID, act, from)
	if herr != nil {
		s.log.Error("admin: keep the applied configuration in the history", "err", herr)
	} else {
		res.History = &h
		e.Metadata["history_id"] = h.ID
	}
	e.Result = true
	e.Description = "configuration applied"
	if act == "rollback" {
		e.Description = "configuration rolled back to history entry " + from
	}
	s.Audit(e)
	writeJSON(w, http.StatusOK, res)
}

// KeepReloaded adds a file reloaded on a signal (an edit on disk and a
// SIGHUP, `edgegw reload`) to the history, so that the console lists it
// and can roll back to it or to what ran before: previous, the file that
// ran before the reload, becomes the base when the history is empty. A
// reload that left the file as the newest entry has it (an apply through
// the API reloads too) adds nothing. Errors are logged: the reload has
// happened either way.
func (s *Server) KeepReloaded(previous, applied []byte, actor string) {
	if s.history == nil {
		return
	}
	sum := sha256.Sum256(applied)
	if s.history.newest() == hex.EncodeToString(sum[:]) {
		return
	}
	now := s.opts.Now()
	if previous != nil {
		if err := s.history.ensureBase(previous, now); err != nil {
			s.log.Warn("admin: keep the configuration that ran before the reload in the history", "err", err)
		}
	}
	if _, err := s.history.add(applied, now, actor, "reload", ""); err != nil {
		s.log.Error("admin: keep the reloaded configuration in the history", "err", err)
	}
}

// HistoryView answers GET /api/v1/config/history/{id}.
type HistoryView struct {
	HistoryEntry
	// YAML is the kept file, secrets REDACTED.
	YAML string `json:"yaml"`
}

func (s *Server) listHistory(w http.ResponseWriter, r *http.Request) {
	writeJSON(w, http.StatusOK, s.history.list())
}

func (s *Server) showHistory(w http.ResponseWriter, r *http.Request) {
	h, data, err := s.history.get(r.PathValue("id"))
	if err != nil {
		s.historyError(w, err)
		return
	}
	red, err := redactSource(data)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	writeJSON(w, http.StatusOK, HistoryView{HistoryEntry: h, YAML: string(red)})
}

// rollback serves POST /api/v1/config/history/{id}/rollback: apply a
// kept file again, checked like a pasted one.
func (s *Server) rollback(w http.ResponseWriter, r *http.Request) {
	id := r.PathValue("id")
	_, data, err := s.history.get(id)
	if err != nil {
		s.historyError(w, err)
		return
	}
	_, running, err := s.opts.Config.Source()
	if err != nil {
		writeError(w, http.StatusConflict, "no_file", err.Error())
		return
	}
	shown, err := redactSource(data)
	if err != nil {
		writeError(w, http.StatusInternalServerError, "internal", err.Error())
		return
	}
	s.applyProposal(w, r, "rollback", id, shown, data, running, nil)
}

func (s *Server) historyError(w http.ResponseWriter, err error) {
	if errors.Is(err, errNoEntry) {
		writeError(w, http.StatusNotFound, "not_found", err.Error())
		return
	}
	writeError(w, http.StatusInternalServerError, "internal", err.Error())
}

// historyID is how entries are named: a sequence number.
func historyID(n int) string { return strconv.Itoa(n) }
