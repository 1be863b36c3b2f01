package main

import (
	"cmp"
	"fmt"
	"io"
	"os"
	"slices"

	"github.com/edgegw/edgegw/gateway"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/ha"
)

// checkPair is `edgegw check --config A --pair B`: both files of an HA
// pair validated as `check` does each, then compared. How an admin keeps
// the halves in step: one template rendered per node, with only the
// per-node values (ha.priority, ha.peer, interface names, the appliance's
// name) filled in differently, and this check run in CI on the rendered
// pair and on a node before `systemctl reload edgegw`. A running node
// shows the digest of the same facts as ha.config_digest in its status:
// the two nodes agree when their digests are equal.
//
// Every problem is printed as `file:line:col: field: message`, the other
// file's position in the message; the exit status is 1 when there is any.
func checkPair(pathA, pathB string, skip bool, stdout io.Writer) error {
	if pathA == pathB {
		return fmt.Errorf("check --pair: %s is both halves: name the other node's file", pathA)
	}
	all := &config.Errors{File: pathA + " + " + pathB}
	var halves [2]ha.Half
	var digests [2]string
	for i, path := range []string{pathA, pathB} {
		h, digest, err := loadHalf(path, skip)
		if err != nil {
			ce, ok := err.(*config.Errors)
			if !ok {
				return err
			}
			all.List = append(all.List, ce.List...)
			continue
		}
		halves[i], digests[i] = h, digest
	}
	if len(all.List) > 0 {
		return all // each file's own problems first: a comparison of broken files says little
	}
	for _, m := range ha.ComparePair(halves[0], halves[1]) {
		all.List = append(all.List, config.Error{File: m.File, Pos: config.Pos{Line: m.Line, Col: m.Col}, Path: m.Path, Msg: m.Msg})
	}
	if len(all.List) > 0 {
		slices.SortStableFunc(all.List, func(a, b config.Error) int {
			return cmp.Or(cmp.Compare(fileRank(a.File, pathA), fileRank(b.File, pathA)),
				cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
		})
		return all
	}
	note := ""
	if skip {
		note = ", file contents not compared (--skip-files)"
	}
	fmt.Fprintf(stdout, "%s: ok\n%s: ok\npair: the halves agree (digest %s%s)\n", pathA, pathB, digests[0], note)
	return nil
}

func fileRank(file, first string) int {
	if file == first {
		return 0
	}
	return 1
}

// loadHalf validates and compiles one node's file as `edgegw check` does,
// and collects what the pair check compares. A file without ha: is an
// error: it cannot be half of a pair.
func loadHalf(path string, skip bool) (ha.Half, string, error) {
	cfg, err := config.Load(path, config.Options{SkipFiles: skip})
	if err != nil {
		return ha.Half{}, "", err
	}
	if cfg.HA == nil {
		return ha.Half{}, "", &config.Errors{File: path, List: []config.Error{{File: path, Path: "ha",
			Msg: "missing: a file checked with --pair is one node of an HA pair and needs the ha: section"}}}
	}
	plan, err := gateway.Prepare(cfg, gateway.PrepareOptions{SkipFiles: skip})
	if err != nil {
		return ha.Half{}, "", err
	}
	facts, err := gateway.PairFacts(plan, skip)
	if err != nil {
		return ha.Half{}, "", fmt.Errorf("%s: %w", path, err)
	}
	data, err := os.ReadFile(path)
	if err != nil {
		return ha.Half{}, "", fmt.Errorf("read config: %w", err)
	}
	return ha.Half{File: path, HA: *cfg.HA, Facts: facts, Pos: ha.Positions(data)}, ha.Digest(facts), nil
}
