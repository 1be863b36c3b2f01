package main

import (
	"encoding/json"
	"fmt"
	"io"
	"net/http"
	"strconv"
	"text/tabwriter"

	"github.com/edgegw/edgegw/gateway/admin"
)

const routesSynopsis = "edgegw routes [--json] [--socket PATH | --admin URL --token-file FILE [--ca-file FILE]]"

// cmdRoutes prints the running gateway's site-to-site routing table:
// every route with its source (static, bgp:NEIGHBOR, connected, fallback,
// bgp guard), its tunnel's health, its metric, and a * on the rows each
// prefix uses now.
func cmdRoutes(args []string, stdout, stderr io.Writer) error {
	fs := newFlags("routes", routesSynopsis, stderr)
	af := addAdminFlags(fs)
	asJSON := fs.Bool("json", false, "print the API's JSON answer")
	pos, err := parse(fs, args)
	if err != nil {
		return err
	}
	if len(pos) > 0 {
		fs.Usage()
		return errUsage
	}
	c, err := af.client("routes", stderr)
	if err != nil {
		return err
	}
	out, err := call(c, http.MethodGet, admin.PathRoutes, nil)
	if err != nil {
		return fmt.Errorf("routes: %w", err)
	}
	if *asJSON {
		_, err := stdout.Write(out)
		return err
	}
	var v admin.RoutesView
	if err := json.Unmarshal(out, &v); err != nil {
		return fmt.Errorf("routes: the answer is not a routing table: %w", err)
	}
	return printRoutes(stdout, v)
}

// printRoutes writes the table, one row per route: active rows marked
// with *, unset columns as -.
func printRoutes(w io.Writer, v admin.RoutesView) error {
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, " \tPREFIX\tVIA\tSOURCE\tPRIORITY\tSTATE\tSTEERING\tMETRIC")
	for _, r := range v.Routes {
		mark, prio := " ", "-"
		if r.Active {
			mark = "*"
		}
		if r.Source != "fallback" && r.Source != "bgp guard" && r.Source != "connected" {
			prio = strconv.Itoa(r.Priority)
		}
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\t%d\n", mark, r.Prefix, orDash(r.Via), r.Source, prio, orDash(r.State), orDash(r.Steering), r.Metric)
	}
	if len(v.Routes) == 0 {
		fmt.Fprintln(tw, " \t(no site-to-site routes)\t\t\t\t\t\t")
	}
	return tw.Flush()
}
