package main

import (
	"fmt"
	"io"
	"strconv"
	"text/tabwriter"

	"github.com/edgegw/edgegw/gateway/admin"
)

const routesSynopsis = "edgegw routes [--json] [--socket PATH | --admin URL --token-file FILE [--ca-file FILE]]"

// cmdRoutes prints the running gateway's site-to-site routing table:
// every route with its source (static, bgp:NEIGHBOR, connected, fallback,
// bgp guard), its tunnel's health, its metric, and a * on the rows each
// prefix uses now.
var cmdRoutes = viewCommand("routes", routesSynopsis, admin.PathRoutes, "a routing table", printRoutes)

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
