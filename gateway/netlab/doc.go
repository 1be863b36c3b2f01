// Package netlab builds throw-away network topologies out of Linux network
// namespaces for end-to-end tests and for `make demo`.
//
// A [Lab] owns a set of namespaces. Each namespace ([NS]) gets a unique name
// "<id>-<name>", where id is the lab's prefix plus six random hex digits
// (for example "eg3f9a1b-gw"), so tests and parallel `go test` processes
// never collide. Links are veth pairs with one end in each namespace.
// Plumbing is done with iproute2 (`ip netns add`, `ip -n NS link|addr|route`,
// `ip netns exec`); when a command fails, the error carries the command line
// and its output.
//
// Code runs inside a namespace in three ways:
//   - [NS.Exec] and [NS.Start] run programs through `ip netns exec`;
//   - [NS.Do] runs a Go function on an OS thread switched into the namespace;
//   - [NS.DialContext], [NS.Listen], [NS.ListenPacket] and [NS.ServeHTTP]
//     create sockets inside the namespace that any goroutine may then use.
//
// [Lab.Close] stops every process and server started through the lab and
// deletes its namespaces; [NewT] registers it with t.Cleanup so it runs even
// when a test fails or panics. If the owning process dies before Close
// (a crash, `go test -timeout`), [Sweep] removes the leftovers later: each lab
// records its owner's pid and start time in /run/netlab/<id>, and Sweep only
// touches labs whose owner is gone, so it is safe next to running tests.
// [NewT] sweeps [DefaultPrefix] before it builds anything.
//
// [Lab.RemoteAccess] builds the user — wan — gw — lan topology shared by the
// WireGuard end-to-end test, the demo and the benchmark. [Lab.Office] adds
// a second remote user and a GRE and an IPsec branch office to it: the
// whole office of `make demo`.
//
// netlab needs root (CAP_SYS_ADMIN and CAP_NET_ADMIN) and the iproute2
// package; the package's own tests also need `ping` (iputils-ping). It is for
// tests and the demo only: production code must not import it.
package netlab
