package gateway

import (
	"fmt"
	"io"

	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/tunnel/wireguard"
)

// WritePeerConfig writes the wg-quick file of a static peer of cfg
// (`edgegw peer config`): the client routes the office prefixes
// (OfficePrefixes) through the tunnel unless o says otherwise.
func WritePeerConfig(w io.Writer, cfg *config.Config, o wireguard.PeerConfigOptions) error {
	wg := cfg.Tunnels.WireGuard
	if wg == nil {
		return fmt.Errorf("the configuration has no tunnels.wireguard section")
	}
	return wireguard.WritePeerConfig(w, &wg.Config, cfg.Appliance.StateDir, OfficePrefixes(cfg), o)
}
