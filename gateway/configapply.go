package gateway

import (
	"context"
	"errors"
	"fmt"
	"os"
	"path/filepath"

	"github.com/google/renameio/v2"

	"github.com/edgegw/edgegw/gateway/admin"
	"github.com/edgegw/edgegw/gateway/config"
)

// configEditor lends the admin API's configuration editor the file and
// the reload: a proposed file is checked exactly as `edgegw check` and a
// reload check it (config.Parse, then Prepare), and applied by writing it
// in place of the file and reloading it, the path a SIGHUP takes.
type configEditor struct {
	g *Gateway
	// pctx is the context parts run under.
	pctx context.Context
}

var _ admin.ConfigEditor = configEditor{}

// errNoFile: edgegw runs on its built-in default, and there is no file to
// show or replace.
var errNoFile = errors.New("edgegw runs on its built-in default configuration: there is no file to edit (start it with --config)")

// Source returns the configuration file as it is on disk.
func (e configEditor) Source() (string, []byte, error) {
	path := e.g.opts.ConfigPath
	if path == "" {
		return "", nil, errNoFile
	}
	b, err := os.ReadFile(path)
	if err != nil {
		return path, nil, fmt.Errorf("read the configuration: %w", err)
	}
	return path, b, nil
}

// Check validates data as a reload would, changing nothing.
func (e configEditor) Check(data []byte) ([]admin.ConfigProblem, error) {
	if e.g.opts.ConfigPath == "" {
		return nil, errNoFile
	}
	return e.check(data), nil
}

func (e configEditor) check(data []byte) []admin.ConfigProblem {
	cfg, err := config.Parse(e.g.opts.ConfigPath, data, config.Options{})
	if err == nil {
		_, err = Prepare(cfg, e.g.prepareOptions())
	}
	if err == nil {
		return nil
	}
	var cerrs *config.Errors
	if !errors.As(err, &cerrs) {
		return []admin.ConfigProblem{{Message: err.Error()}}
	}
	probs := make([]admin.ConfigProblem, len(cerrs.List))
	for i, x := range cerrs.List {
		probs[i] = admin.ConfigProblem{Line: x.Line, Column: x.Col, Field: x.Path, Message: x.Msg}
	}
	return probs
}

// Apply checks data, writes it over the configuration file and reloads,
// all under the reload lock, so no SIGHUP reload runs in between. A
// reload that fails puts the previous file back: the file on disk stays
// the one running.
func (e configEditor) Apply(_ context.Context, data []byte) ([]admin.ConfigProblem, error) {
	g := e.g
	if g.opts.ConfigPath == "" {
		return nil, errNoFile
	}
	g.mu.Lock()
	defer g.mu.Unlock()
	if probs := e.check(data); len(probs) > 0 {
		return probs, nil
	}
	// Write through a symlink to the file it names (/etc/edgegw/edgegw.yaml
	// may point at a file a provisioning tool manages).
	path, err := filepath.EvalSymlinks(g.opts.ConfigPath)
	if err != nil {
		return nil, fmt.Errorf("find the configuration file: %w", err)
	}
	st, err := os.Stat(path)
	if err != nil {
		return nil, fmt.Errorf("read the configuration file: %w", err)
	}
	old, err := os.ReadFile(path)
	if err != nil {
		return nil, fmt.Errorf("read the configuration file: %w", err)
	}
	if err := replaceFile(path, data, st.Mode().Perm()); err != nil {
		return nil, fmt.Errorf("write the configuration file: %w", err)
	}
	if err := g.reloadLocked(e.pctx); err != nil {
		if perr := replaceFile(path, old, st.Mode().Perm()); perr != nil {
			g.log.Error("could not put the previous configuration file back", "file", path, "err", perr)
			return nil, errors.Join(err, fmt.Errorf("and the previous file could not be put back in %s: %w", path, perr))
		}
		return nil, err
	}
	return nil, nil
}

// replaceFile writes name through a synced temporary file in its
// directory and a rename: a crash leaves the old file or the new one,
// never half.
func replaceFile(name string, data []byte, perm os.FileMode) error {
	return renameio.WriteFile(name, data, perm, renameio.WithStaticPermissions(perm), renameio.WithTempDir(filepath.Dir(name)))
}
