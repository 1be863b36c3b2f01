package main

// `edgegw egress`: who leaves from where, from the running gateway's
// GET /api/v1/egress.

import (
	"fmt"
	"io"
	"strings"
	"text/tabwriter"

	"github.com/edgegw/edgegw/gateway/admin"
)

const egressSynopsis = "edgegw egress [--json] [--socket PATH | --admin URL --token-file FILE [--ca-file FILE]]"

// cmdEgress prints the egress addresses with the policies and identities
// mapped to each and what connection tracking holds for them, then each
// identity's address and the egress it leaves from.
var cmdEgress = viewCommand("egress", egressSynopsis, admin.PathEgress, "an egress view", printEgress)

// printEgress writes v as two tables.
func printEgress(w io.Writer, v admin.EgressView) error {
	if len(v.Addresses) == 0 {
		_, err := fmt.Fprintln(w, "No egress addresses (firewall.egress): forwarded traffic is masqueraded to the WAN address.")
		return err
	}
	tw := tabwriter.NewWriter(w, 0, 4, 2, ' ', 0)
	fmt.Fprintln(tw, "EGRESS\tADDRESS\tINTERFACE\tLOCATION\tPOLICIES\tIDENTITIES\tCONNECTIONS\tACTIVE\tBYTES OUT\tBYTES IN")
	for _, a := range v.Addresses {
		loc := strings.Join(nonEmpty(a.Country, a.Region, a.City), " ")
		fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%d\t%d\t%d\t%d\n", a.Name, a.Address, orDash(a.Interface), loc,
			orDash(strings.Join(a.Policies, ",")), orDash(strings.Join(a.Identities, ",")),
			a.ConnectionsTotal, a.ActiveConnections, a.BytesOut, a.BytesIn)
	}
	if err := tw.Flush(); err != nil {
		return err
	}
	if len(v.Identities) > 0 {
		fmt.Fprintln(w)
		fmt.Fprintln(tw, "IDENTITY\tSOURCE\tEGRESS\tADDRESS\tCOUNTRY\tPOLICY\tACTIVE NOW")
		for _, id := range v.Identities {
			egress, addr := id.Egress, id.EgressAddress
			if egress == "" {
				egress, addr = "(wan)", "masqueraded"
			}
			var active []string
			for _, a := range id.Active {
				active = append(active, fmt.Sprintf("%d via %s", a.ActiveConnections, a.EgressAddress))
			}
			fmt.Fprintf(tw, "%s\t%s\t%s\t%s\t%s\t%s\t%s\n", orDash(id.Email), id.Source, egress, addr,
				orDash(id.Country), orDash(id.Policy), orDash(strings.Join(active, ", ")))
		}
		if err := tw.Flush(); err != nil {
			return err
		}
	}
	if v.GeofeedPath != "" {
		fmt.Fprintf(w, "\nGeofeed (RFC 8805): %s on the admin listener, open to all.\n", v.GeofeedPath)
	}
	if v.FlowsError != "" {
		fmt.Fprintf(w, "\nActive connections unknown: %s\n", v.FlowsError)
	}
	return nil
}

func nonEmpty(ss ...string) []string {
	var out []string
	for _, s := range ss {
		if s != "" {
			out = append(out, s)
		}
	}
	return out
}
