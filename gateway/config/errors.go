package config

import (
	"cmp"
	"fmt"
	"slices"
	"strings"
)

// Pos is a position in the configuration file, 1-based.
type Pos struct {
	Line, Col int
}

// Error is one problem in a configuration file.
type Error struct {
	File string
	Pos
	Path string // dotted field path, e.g. tunnels.wireguard.peers[1].public_key
	Msg  string
}

func (e Error) Error() string {
	loc := e.File
	if e.Line > 0 {
		loc = fmt.Sprintf("%s:%d:%d", e.File, e.Line, e.Col)
	}
	if e.Path == "" {
		return loc + ": " + e.Msg
	}
	return fmt.Sprintf("%s: %s: %s", loc, e.Path, e.Msg)
}

// Errors is every problem found in one file, in file order. A configuration
// is applied only when it has none.
type Errors struct {
	File string
	List []Error
}

func (e *Errors) add(p Pos, path, msg string) {
	e.List = append(e.List, Error{File: e.File, Pos: p, Path: path, Msg: msg})
}

func (e *Errors) err() error {
	if len(e.List) == 0 {
		return nil
	}
	slices.SortStableFunc(e.List, func(a, b Error) int {
		return cmp.Or(cmp.Compare(a.Line, b.Line), cmp.Compare(a.Col, b.Col))
	})
	return e
}

// Error prints one problem a line, as `file:line:col: path: message`.
func (e *Errors) Error() string {
	lines := make([]string, len(e.List))
	for i, x := range e.List {
		lines[i] = x.Error()
	}
	return strings.Join(lines, "\n")
}
