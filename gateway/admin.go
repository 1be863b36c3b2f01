package gateway

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/edgegw/edgegw/netflow/logpush"
)

// admin serves /metrics, /healthz, /readyz and /api/v1/* on the admin
// listener. It reads gateway state only through the status function, so it
// never holds the gateway's locks while writing to a slow client.
type admin struct {
	log    *slog.Logger
	reg    *prometheus.Registry
	status func() Status
	ready  func() []string // reasons the gateway is not ready; none means ready
	// devices serves /api/v1/devices (list, show, revoke) while the device
	// registry runs.
	devices http.Handler

	wg  sync.WaitGroup // serving goroutines
	mu  sync.Mutex
	srv *http.Server // current server
	ln  net.Listener
}

func (a *admin) handler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{Registry: a.reg}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		if reasons := a.ready(); len(reasons) > 0 {
			w.WriteHeader(http.StatusServiceUnavailable)
			fmt.Fprintln(w, "not ready:")
			for _, r := range reasons {
				fmt.Fprintln(w, "  "+r)
			}
			return
		}
		fmt.Fprintln(w, "ready")
	})
	mux.Handle("/api/v1/devices", a.devices)
	mux.Handle("/api/v1/devices/", a.devices)
	mux.HandleFunc("GET /api/v1/status", func(w http.ResponseWriter, r *http.Request) {
		writeJSON(w, a.status())
	})
	mux.HandleFunc("GET /api/v1/logpush", func(w http.ResponseWriter, r *http.Request) {
		jobs := a.status().Logpush
		if jobs == nil {
			jobs = []logpush.JobStatus{}
		}
		writeJSON(w, jobs)
	})
	return mux
}

// bind starts serving on addr, then stops the server on the previous
// address, if any: a reload that moves the admin listener never leaves it
// unbound, and a bind failure leaves the old one serving.
func (a *admin) bind(addr string) error {
	ln, err := net.Listen("tcp", addr)
	if err != nil {
		return fmt.Errorf("admin listener: %w", err)
	}
	srv := &http.Server{
		Handler:           a.handler(),
		ReadHeaderTimeout: 10 * time.Second,
		ErrorLog:          slog.NewLogLogger(a.log.Handler(), slog.LevelWarn),
	}
	a.wg.Add(1)
	go func() {
		defer a.wg.Done()
		if err := srv.Serve(ln); err != nil && !errors.Is(err, http.ErrServerClosed) {
			a.log.Error("admin listener failed", "addr", ln.Addr().String(), "err", err)
		}
	}()
	a.mu.Lock()
	old := a.srv
	a.srv, a.ln = srv, ln
	a.mu.Unlock()
	if old != nil {
		shutdown(old)
	}
	a.log.Info("admin listener up", "addr", ln.Addr().String())
	return nil
}

// run owns the serving goroutines: it returns after ctx ends and every
// server has stopped.
func (a *admin) run(ctx context.Context) error {
	<-ctx.Done()
	a.mu.Lock()
	srv := a.srv
	a.mu.Unlock()
	if srv != nil {
		shutdown(srv)
	}
	a.wg.Wait()
	return nil
}

func shutdown(srv *http.Server) {
	ctx, cancel := context.WithTimeout(context.Background(), 5*time.Second)
	defer cancel()
	srv.Shutdown(ctx)
}

func (a *admin) addr() string {
	a.mu.Lock()
	defer a.mu.Unlock()
	if a.ln == nil {
		return ""
	}
	return a.ln.Addr().String()
}

func writeJSON(w http.ResponseWriter, v any) {
	w.Header().Set("Content-Type", "application/json")
	enc := json.NewEncoder(w)
	enc.SetIndent("", "  ")
	enc.Encode(v)
}

func joinReasons(r []string) string { return strings.Join(r, "; ") }
