// Package tunnel holds what every tunnel kind shares: the identity of the
// routes edgegw installs ([RouteProtocol]), tunnel and route
// configuration, the health [State] a tunnel is in, and the
// [RouteManager], which installs routes through tunnels as ECMP multipath
// routes and penalises those through unhealthy tunnels ([Plan]).
//
// Tunnel kinds live in subpackages (gre, wireguard, ipsec); the health
// checks that feed the route manager are in tunnel/health and reach a
// tunnel through its health.Path (Inject, SetProbeHandler).
package tunnel

// RouteProtocol is the rtnetlink protocol number (rtm_protocol) stamped on
// every route edgegw installs. Values above RTPROT_STATIC (4) are free for
// routing daemons (bird uses 12, zebra 11); 237 is listed as "edgegw" in
// nothing else, so a start after a crash can find and delete exactly the
// routes a previous edgegw left behind, and `ip route show proto 237` shows
// them to an operator.
const RouteProtocol = 237
