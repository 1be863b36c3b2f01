package wireguard

import (
	"fmt"
	"net"

	"golang.zx2c4.com/wireguard/ipc"
)

// startUAPI serves wireguard-go's configuration protocol on the standard
// socket, /var/run/wireguard/<interface>.sock, for stock `wg`. A socket left
// by a crashed process is replaced. Changes made through it last until the
// next Set, which restores the configuration.
func (d *Device) startUAPI() error {
	f, err := ipc.UAPIOpen(d.name)
	if err != nil {
		return fmt.Errorf("open UAPI socket: %w", err)
	}
	l, err := ipc.UAPIListen(d.name, f)
	f.Close() // the listener holds its own copy
	if err != nil {
		return fmt.Errorf("listen on UAPI socket: %w", err)
	}
	d.uapi = l
	d.uapiWG.Add(1)
	go d.serveUAPI(l)
	return nil
}

func (d *Device) serveUAPI(l net.Listener) {
	defer d.uapiWG.Done()
	for {
		c, err := l.Accept()
		if err != nil {
			return
		}
		d.uapiMu.Lock()
		if d.uapiConns == nil {
			d.uapiMu.Unlock()
			c.Close()
			return
		}
		d.uapiConns[c] = struct{}{}
		d.uapiWG.Add(1)
		d.uapiMu.Unlock()
		go func() {
			defer d.uapiWG.Done()
			d.wg.IpcHandle(c) // closes c
			d.uapiMu.Lock()
			delete(d.uapiConns, c)
			d.uapiMu.Unlock()
		}()
	}
}

// stopUAPI closes the listener (which removes the socket file) and every
// open connection, and waits for their goroutines.
func (d *Device) stopUAPI() {
	d.uapiMu.Lock()
	conns := d.uapiConns
	d.uapiConns = nil
	d.uapiMu.Unlock()
	if d.uapi != nil {
		d.uapi.Close()
	}
	for c := range conns {
		c.Close()
	}
	d.uapiWG.Wait()
}
