package gateway

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"log/slog"
	"net/netip"
	"os"
	"path/filepath"
	"sync/atomic"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/gateway/config"
	"github.com/edgegw/edgegw/gateway/dns"
)

// egressPart follows firewall.egress for what reads it besides the nft
// table (which the firewall part applies): Gateway DNS resolves each
// query as from the client's egress address (it is the resolver's
// [dns.EgressSource]), and the RFC 8805 geofeed of the egress addresses
// is published as <state_dir>/egress/geofeed.csv, for the web server or
// the RPSL geofeed: attribute that points at it. It starts no goroutine.
type egressPart struct {
	log  *slog.Logger
	cur  atomic.Pointer[firewall.Egress] // nil: no egress policies
	file string                          // the geofeed written; "" none
}

func (p *egressPart) name() string { return "firewall.egress" }

func (p *egressPart) apply(_ context.Context, _, next *config.Config) error {
	eg, err := firewall.CompileEgress(next.Firewall)
	if err != nil {
		return err // validated already
	}
	file := ""
	if eg != nil {
		file = filepath.Join(next.Appliance.StateDir, "egress", "geofeed.csv")
		if err := writeFileAtomic(file, eg.Geofeed()); err != nil {
			return fmt.Errorf("egress geofeed: %w", err)
		}
	}
	if p.file != "" && p.file != file {
		if err := os.Remove(p.file); err != nil && !errors.Is(err, fs.ErrNotExist) {
			p.log.Warn("remove the old egress geofeed", "file", p.file, "err", err)
		}
	}
	p.cur.Store(eg)
	p.file = file
	if eg != nil {
		p.log.Info("egress policies", "addresses", len(eg.Addresses()), "geofeed", file)
	}
	return nil
}

// writeFileAtomic replaces name with b (mode 0644: a geofeed is public),
// unless it holds b already.
func writeFileAtomic(name string, b []byte) error {
	if old, err := os.ReadFile(name); err == nil && bytes.Equal(old, b) {
		return nil
	}
	if err := os.MkdirAll(filepath.Dir(name), 0o755); err != nil {
		return err
	}
	f, err := os.CreateTemp(filepath.Dir(name), ".geofeed-*")
	if err != nil {
		return err
	}
	_, err = f.Write(b)
	if err == nil {
		err = f.Chmod(0o644)
	}
	if err == nil {
		err = f.Sync()
	}
	if cerr := f.Close(); err == nil {
		err = cerr
	}
	if err == nil {
		err = os.Rename(f.Name(), name)
	}
	if err != nil {
		os.Remove(f.Name())
	}
	return err
}

// close forgets the policies; the geofeed stays published: the addresses
// are where they are whether edgegw runs or not.
func (p *egressPart) close() { p.cur.Store(nil) }

func (p *egressPart) ready() error { return nil }

func (p *egressPart) status(*Status) {}

// Egress implements [dns.EgressSource]: the address of the first egress
// policy that holds for the client and its identity, without a
// destination (firewall.Egress.For).
func (p *egressPart) Egress(src netip.Addr, id dns.Identity, hasID bool) (netip.Addr, bool) {
	c, ok := p.cur.Load().For(src, id.Email, id.Groups, hasID)
	return c.Address.Address, ok
}
