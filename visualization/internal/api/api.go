// Package api is the visualization server's HTTP surface: the JSON API under
// /api/v1, /healthz and the minimal status page at /. Every read goes through
// the brokers over gRPC (brokerclient); nothing is cached here yet.
//
// Every response of /api/ and /healthz is JSON; errors are {"error": "..."}
// with a status code chosen at this edge: a bad parameter is 400 naming the
// parameter and what is allowed, broker errors map by gRPC code
// (InvalidArgument 400, NotFound 404, Unavailable 503, DeadlineExceeded 504,
// anything else 502).
//
// The API is unauthenticated until JWT auth lands; the server refuses to
// listen on anything but loopback meanwhile (see visualization.Config).
//
// Concurrency: the handler is safe for concurrent use and starts no
// goroutines.
package api

import (
	"bytes"
	"encoding/json"
	"fmt"
	"log/slog"
	"net/http"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
)

// Config is what the handlers need from the server's configuration.
type Config struct {
	PullInterval time.Duration // the page's refresh interval
	OfflineAfter time.Duration // no heartbeat for this long: offline
	StaleAfter   time.Duration // newest data older than this: not fresh
	MaxRange     time.Duration // longest range a query may ask for
	MaxPoints    int           // most points per series of one query
	// HealthTimeout bounds the broker probe of /healthz.
	HealthTimeout time.Duration
	// Now is the clock; nil means time.Now. Tests inject a fixed one.
	Now func() time.Time
}

// API serves the HTTP routes.
type API struct {
	cfg     Config
	brokers *brokerclient.Client
	logger  *slog.Logger
	mux     *http.ServeMux
	page    []byte // the rendered status page
}

// New builds the routes on brokers.
func New(cfg Config, brokers *brokerclient.Client, logger *slog.Logger) (*API, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxPoints < 2 {
		return nil, fmt.Errorf("api: max points %d is below 2", cfg.MaxPoints)
	}
	if cfg.PullInterval <= 0 || cfg.HealthTimeout <= 0 || cfg.MaxRange <= 0 {
		return nil, fmt.Errorf("api: pull interval %s, health timeout %s and max range %s must be positive", cfg.PullInterval, cfg.HealthTimeout, cfg.MaxRange)
	}
	page, err := renderPage(cfg.PullInterval)
	if err != nil {
		return nil, err
	}
	a := &API{cfg: cfg, brokers: brokers, logger: logger, mux: http.NewServeMux(), page: page}
	a.route("GET", "/api/v1/hosts", a.hosts)
	a.route("GET", "/api/v1/hosts/{id}/latest", a.latest)
	a.route("GET", "/api/v1/hosts/{id}/metrics", a.metrics)
	a.route("GET", "/healthz", a.healthz)
	a.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API route %s %s", r.Method, r.URL.Path))
	})
	a.mux.HandleFunc("GET /{$}", a.index)
	a.mux.HandleFunc("GET /ui/app.js", asset(appJS, "text/javascript; charset=utf-8"))
	a.mux.HandleFunc("GET /ui/style.css", asset(styleCSS, "text/css; charset=utf-8"))
	return a, nil
}

// route registers h for method and path, and a JSON 405 for other methods
// (the mux's own 405 is plain text).
func (a *API) route(method, path string, h http.HandlerFunc) {
	a.mux.HandleFunc(method+" "+path, h)
	a.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		w.Header().Set("Allow", method+", HEAD")
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, method))
	})
}

// ServeHTTP serves a request and logs it at debug level.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	a.mux.ServeHTTP(rec, r)
	a.logger.LogAttrs(r.Context(), slog.LevelDebug, "http request",
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("query", r.URL.RawQuery),
		slog.Int("status", rec.status), slog.Int64("bytes", rec.bytes),
		slog.Duration("took", time.Since(start)), slog.String("remote", r.RemoteAddr))
}

// recorder notes the status and size of a response for the request log.
type recorder struct {
	http.ResponseWriter
	status      int
	bytes       int64
	wroteHeader bool
}

func (r *recorder) WriteHeader(code int) {
	if !r.wroteHeader {
		r.status, r.wroteHeader = code, true
	}
	r.ResponseWriter.WriteHeader(code)
}

func (r *recorder) Write(p []byte) (int, error) {
	r.wroteHeader = true
	n, err := r.ResponseWriter.Write(p)
	r.bytes += int64(n)
	return n, err
}

// Unwrap lets http.ResponseController reach the connection (flush, hijack).
func (r *recorder) Unwrap() http.ResponseWriter { return r.ResponseWriter }

// writeJSON encodes v before writing anything, so an encoding failure is a
// clean 500 rather than a truncated 200.
func writeJSON(w http.ResponseWriter, code int, v any) {
	var buf bytes.Buffer
	enc := json.NewEncoder(&buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		writeError(w, http.StatusInternalServerError, "encode response: "+err.Error())
		return
	}
	h := w.Header()
	h.Set("Content-Type", "application/json")
	h.Set("Cache-Control", "no-store")
	h.Set("X-Content-Type-Options", "nosniff")
	w.WriteHeader(code)
	_, _ = w.Write(buf.Bytes())
}

type errorBody struct {
	Error string `json:"error"`
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, errorBody{Error: msg})
}

// brokerError answers a failed broker call, mapping its gRPC code. For an
// answer about the request (400, 404) the broker's own message is shown; for
// a broker that could not answer, the whole error with every broker tried.
func (a *API) brokerError(w http.ResponseWriter, r *http.Request, err error) {
	st := status.Convert(err)
	code, msg := http.StatusBadGateway, err.Error()
	switch st.Code() {
	case codes.InvalidArgument, codes.OutOfRange:
		code, msg = http.StatusBadRequest, st.Message()
	case codes.NotFound:
		code, msg = http.StatusNotFound, st.Message()
	case codes.Unavailable:
		code = http.StatusServiceUnavailable
	case codes.DeadlineExceeded:
		code = http.StatusGatewayTimeout
	case codes.Canceled:
		if r.Context().Err() != nil {
			// The client went away; nobody reads the answer.
			a.logger.Debug("request canceled by the client", "path", r.URL.Path, "err", err)
			return
		}
	}
	if code >= 500 {
		a.logger.Warn("broker call failed", "path", r.URL.Path, "status", code, "err", err)
	}
	writeError(w, code, msg)
}

// paramErr is a bad query parameter: its text names the parameter and what
// is allowed, and becomes a 400.
func paramErr(name, format string, args ...any) error {
	return fmt.Errorf("%s: %s", name, fmt.Sprintf(format, args...))
}
