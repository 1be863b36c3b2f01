// Package tunnel holds what every tunnel kind shares: the identity of the
// routes edgegw installs, and (as GRE and IPsec land) the tunnel interface,
// health checks and the route manager.
package tunnel

// RouteProtocol is the rtnetlink protocol number (rtm_protocol) stamped on
// every route edgegw installs. Values above RTPROT_STATIC (4) are free for
// routing daemons (bird uses 12, zebra 11); 237 is listed as "edgegw" in
// nothing else, so a start after a crash can find and delete exactly the
// routes a previous edgegw left behind, and `ip route show proto 237` shows
// them to an operator.
const RouteProtocol = 237
