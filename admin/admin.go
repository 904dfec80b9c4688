// Package admin is streamnode's HTTP admin listener (--admin-addr), for
// operators and their tools rather than clients:
//
//	/metrics        Prometheus metrics of the node's own registry
//	/healthz        200 "ok" while the process serves HTTP at all
//	/readyz         200 "ready", or 503 and the reason the node cannot
//	                serve clients now (draining, no controller known, not
//	                registered in the catalog yet)
//	/debug/pprof/   net/http/pprof, only with Config.Pprof (--pprof)
//
// It carries no stream data and has no authentication: bind it to an
// address only operators reach.
package admin

import (
	"fmt"
	"net/http"
	"net/http/pprof"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	"github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"
)

// Config configures Handler.
type Config struct {
	// Gatherer is what /metrics serves: the node's registry.
	Gatherer prometheus.Gatherer
	// Ready is nil when the node is ready to serve, else why not.
	Ready func() error
	// Pprof serves net/http/pprof under /debug/pprof/.
	Pprof bool
}

// NewRegistry returns a registry of its own for one node, holding the Go
// runtime and process collectors; the node registers its metrics on it.
func NewRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(collectors.NewGoCollector(), collectors.NewProcessCollector(collectors.ProcessCollectorOpts{}))
	return reg
}

// Handler serves the paths of the package comment.
func Handler(cfg Config) http.Handler {
	mux := http.NewServeMux()
	if cfg.Gatherer != nil {
		mux.Handle("GET /metrics", promhttp.HandlerFor(cfg.Gatherer, promhttp.HandlerOpts{Timeout: 10 * time.Second}))
	}
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		fmt.Fprintln(w, "ok")
	})
	mux.HandleFunc("GET /readyz", func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Content-Type", "text/plain; charset=utf-8")
		if cfg.Ready != nil {
			if err := cfg.Ready(); err != nil {
				w.WriteHeader(http.StatusServiceUnavailable)
				fmt.Fprintf(w, "not ready: %v\n", err)
				return
			}
		}
		fmt.Fprintln(w, "ready")
	})
	if cfg.Pprof {
		mux.HandleFunc("/debug/pprof/", pprof.Index)
		mux.HandleFunc("/debug/pprof/cmdline", pprof.Cmdline)
		mux.HandleFunc("/debug/pprof/profile", pprof.Profile)
		mux.HandleFunc("/debug/pprof/symbol", pprof.Symbol)
		mux.HandleFunc("/debug/pprof/trace", pprof.Trace)
	}
	return mux
}

// NewServer is an http.Server for Handler with timeouts fit for a
// listener anyone on its network can open (a CPU profile takes its
// seconds parameter, 30 s by default, so writes may take that long).
func NewServer(h http.Handler) *http.Server {
	return &http.Server{
		Handler:           h,
		ReadHeaderTimeout: 5 * time.Second,
		ReadTimeout:       10 * time.Second,
		WriteTimeout:      2 * time.Minute,
		IdleTimeout:       2 * time.Minute,
	}
}
