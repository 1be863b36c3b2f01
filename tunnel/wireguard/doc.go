// Package wireguard runs edgegw's remote-access WireGuard device: the
// userspace implementation wireguard-go, in process, on a kernel TUN
// interface (with its segmentation offloads), so no WireGuard kernel module
// is needed.
//
// New creates the interface, configures wireguard-go and the interface's
// address, MTU and routes; Set applies a changed Config peer by peer so that
// unchanged peers keep their sessions; Close removes the interface, and with
// it every address and route. Nothing outlives the process: the TUN goes
// when its file descriptor closes, its routes with it, and a stale UAPI
// socket is replaced at the next start.
//
// Received datagrams are checked against WireGuard's message formats before
// wireguard-go parses them; malformed ones are dropped and counted, as are
// the drops wireguard-go reports in its log and the interface's kernel drop
// counters (see Device.Collector).
//
// The package also owns the keys (Key, LoadOrCreatePrivateKey) and writes
// wg-quick files for stock clients (WriteClientConfig).
package wireguard
