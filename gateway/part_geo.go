package gateway

import (
	"context"
	"log/slog"
	"sync"

	"github.com/edgegw/edgegw/firewall"
	"github.com/edgegw/edgegw/firewall/geo"
	"github.com/edgegw/edgegw/gateway/config"
)

// geoPart follows the GeoIP databases of firewall.geoip: it loads them,
// hands each snapshot to the firewall's table (whose geo sets change in
// place, without a reload) and watches the files for a replaced
// database. It runs after the firewall part, whose table it updates, and
// stops before it.
type geoPart struct {
	log     *slog.Logger
	metrics *metrics
	fw      *fwPart

	files   geo.Files // what the watcher follows; zero: none
	watcher *geo.Watcher
	cancel  context.CancelFunc
	done    chan struct{}

	mu    sync.Mutex
	table *firewall.Table // the table the watcher updates; guarded by mu
}

func (p *geoPart) name() string { return "firewall.geoip" }

func geoFiles(cfg *config.Config) geo.Files {
	if cfg.Firewall == nil {
		return geo.Files{}
	}
	return cfg.Firewall.GeoIP.Files()
}

func (p *geoPart) apply(ctx context.Context, prev, next *config.Config) error {
	p.mu.Lock()
	p.table = p.fw.table
	p.mu.Unlock()
	files := geoFiles(next)
	if files == p.files {
		return nil // a changed file is the watcher's to notice
	}
	if files == (geo.Files{}) {
		p.stop()
		return p.update(nil) // no rule uses a geo field now: let the snapshot go
	}
	// Load the new files before the old watcher stops: a database that
	// does not load fails this apply and leaves the old one in use.
	w, err := geo.NewWatcher(files, 0, p.log, p.update)
	if err != nil {
		return err
	}
	if err := p.update(w.Current()); err != nil {
		return err
	}
	p.stop()
	wctx, cancel := context.WithCancel(ctx)
	p.files, p.watcher, p.cancel, p.done = files, w, cancel, make(chan struct{})
	go func(done chan struct{}) {
		defer close(done)
		w.Run(wctx)
	}(p.done)
	p.metrics.set("geoip", geo.NewCollector(w))
	return nil
}

// update hands a snapshot to the firewall's table; Run calls it for every
// changed database.
func (p *geoPart) update(db *geo.DB) error {
	p.mu.Lock()
	defer p.mu.Unlock()
	if p.table == nil {
		return nil
	}
	return p.table.UpdateGeo(db)
}

// stop ends the watcher and waits for it.
func (p *geoPart) stop() {
	if p.cancel == nil {
		return
	}
	p.cancel()
	<-p.done
	p.metrics.set("geoip", nil)
	p.files, p.watcher, p.cancel, p.done = geo.Files{}, nil, nil, nil
}

func (p *geoPart) close() {
	p.stop()
	p.mu.Lock()
	p.table = nil
	p.mu.Unlock()
}

func (p *geoPart) ready() error { return nil }

func (p *geoPart) status(*Status) {}
