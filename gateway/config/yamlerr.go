package config

import (
	"regexp"
	"strconv"
	"strings"
)

var yamlLine = regexp.MustCompile(`^yaml: line (\d+): `)

// syntaxPos pulls the line out of a go-yaml syntax error ("yaml: line 5:
// mapping values are not allowed in this context"); go-yaml gives no column.
func syntaxPos(err error) Pos {
	m := yamlLine.FindStringSubmatch(err.Error())
	if m == nil {
		return Pos{}
	}
	n, _ := strconv.Atoi(m[1])
	return Pos{Line: n, Col: 1}
}

func cleanYAMLError(err error) string {
	s := yamlLine.ReplaceAllString(err.Error(), "")
	return "YAML syntax: " + strings.TrimPrefix(s, "yaml: ")
}
