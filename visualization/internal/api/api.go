// Package api is the visualization server's HTTP surface: the JSON API under
// /api/v1, /healthz and the dashboard at / (embedded from web/ by make ui;
// a minimal page saying how to build it otherwise). Every read goes through
// the brokers over gRPC (brokerclient); nothing is cached here yet.
//
// Every response of /api/ and /healthz is JSON; errors are {"error": "..."}
// with a status code chosen at this edge: a bad parameter is 400 naming the
// parameter and what is allowed, broker errors map by gRPC code
// (InvalidArgument 400, NotFound 404, Unavailable 503, DeadlineExceeded 504,
// anything else 502).
//
// Authentication (see docs/api.md): POST /api/v1/auth/login and
// /api/v1/auth/refresh issue tokens (rate-limited per client address, and
// failed logins per user name);
// every other /api/v1 route needs "Authorization: Bearer <access token>"
// (401 without a valid one), admin routes an admin token (403 for a
// viewer). /api/v1/ws takes its token in Sec-WebSocket-Protocol. /healthz
// and the page's static files are open.
//
// Concurrency: the handler is safe for concurrent use and starts no
// goroutines.
package api

import (
	"bytes"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"net/netip"
	"net/url"
	"strings"
	"sync/atomic"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/visualization/internal/auth"
	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
)

// Options are what the handlers need: the server's settings and the parts
// they serve from.
type Options struct {
	PullInterval time.Duration // the page's refresh interval
	OfflineAfter time.Duration // no heartbeat for this long: offline
	StaleAfter   time.Duration // newest data older than this: not fresh
	MaxRange     time.Duration // longest range a query may ask for
	MaxPoints    int           // most points per series of one query
	// HealthTimeout bounds the broker probe of /healthz.
	HealthTimeout time.Duration
	// Now is the clock; nil means time.Now. Tests inject a fixed one.
	Now func() time.Time

	// Brokers is the broker client every read goes through.
	Brokers *brokerclient.Client
	// Auth checks logins and tokens; required.
	Auth *auth.Authenticator
	// LoginLimiter rate-limits login and refresh per client address;
	// required.
	LoginLimiter *auth.Limiter
	// UserLimiter rate-limits failed logins per user name, from any
	// address: a user whose bucket is empty is answered 429 before the
	// password is checked. Nil: no per-user limit.
	UserLimiter *auth.Limiter
	// TrustedProxies are the reverse proxies whose X-Forwarded-For names
	// the client (for the login limiter and the logs). Empty: the header
	// is ignored.
	TrustedProxies []netip.Prefix
	// WebSocket serves /api/v1/ws; it authenticates on its own (the token
	// travels in Sec-WebSocket-Protocol). Nil: no route.
	WebSocket http.Handler
	// Members returns the brokers followed, for /api/v1/cluster. Nil: the
	// broker client's list.
	Members func() []Member
	// Stats returns the live path's and the push core's counters for
	// /api/v1/stats. Nil: no route.
	Stats func() any
	// Routes are extra routes (Top-K, anomalies, alerts, ...), served
	// behind the same authentication: a viewer token, or an admin token
	// for Admin routes.
	Routes []Route
}

// Route is an extra API route. Path is a net/http pattern path such as
// "/api/v1/topk" or "/api/v1/alerts/{id}"; Method is GET, POST, PUT or
// DELETE. The handler runs after the token was checked; Identity tells it
// who called.
type Route struct {
	Method  string
	Path    string
	Admin   bool
	Handler http.HandlerFunc
}

// API serves the HTTP routes.
type API struct {
	cfg     Options
	brokers *brokerclient.Client
	logger  *slog.Logger
	mux     *http.ServeMux
	page    []byte              // the rendered status page
	allow   map[string][]string // methods per path, for 405 answers

	// refusals of login and refresh (AuthStats)
	limitedAddr, limitedUser, badCredentials, badRefresh atomic.Uint64
}

// New builds the routes.
func New(cfg Options, logger *slog.Logger) (*API, error) {
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	if cfg.MaxPoints < 2 {
		return nil, fmt.Errorf("api: max points %d is below 2", cfg.MaxPoints)
	}
	if cfg.PullInterval <= 0 || cfg.HealthTimeout <= 0 || cfg.MaxRange <= 0 {
		return nil, fmt.Errorf("api: pull interval %s, health timeout %s and max range %s must be positive", cfg.PullInterval, cfg.HealthTimeout, cfg.MaxRange)
	}
	if cfg.Brokers == nil || cfg.Auth == nil || cfg.LoginLimiter == nil {
		return nil, errors.New("api: a broker client, an authenticator and a login limiter are required")
	}
	page, err := renderPage(cfg.PullInterval)
	if err != nil {
		return nil, err
	}
	a := &API{cfg: cfg, brokers: cfg.Brokers, logger: logger, mux: http.NewServeMux(), page: page, allow: map[string][]string{}}
	a.route("POST", "/api/v1/auth/login", a.login)
	a.route("POST", "/api/v1/auth/refresh", a.refresh)
	a.route("GET", "/api/v1/hosts", a.authed(auth.RoleViewer, a.hosts))
	a.route("GET", "/api/v1/hosts/{id}/latest", a.authed(auth.RoleViewer, a.latest))
	a.route("GET", "/api/v1/hosts/{id}/metrics", a.authed(auth.RoleViewer, a.metrics))
	a.route("GET", "/api/v1/cluster", a.authed(auth.RoleViewer, a.cluster))
	if cfg.Stats != nil {
		a.route("GET", "/api/v1/stats", a.authed(auth.RoleViewer, a.stats))
	}
	if cfg.WebSocket != nil {
		a.route("GET", "/api/v1/ws", cfg.WebSocket.ServeHTTP)
	}
	for _, r := range cfg.Routes {
		if !strings.HasPrefix(r.Path, "/api/v1/") || r.Handler == nil {
			return nil, fmt.Errorf("api: extra route %s %q must be under /api/v1/ and have a handler", r.Method, r.Path)
		}
		switch r.Method {
		case "GET", "POST", "PUT", "DELETE":
		default:
			return nil, fmt.Errorf("api: extra route %s %q: method must be GET, POST, PUT or DELETE", r.Method, r.Path)
		}
		need := auth.RoleViewer
		if r.Admin {
			need = auth.RoleAdmin
		}
		if err := a.safeRoute(r.Method, r.Path, a.authed(need, r.Handler)); err != nil {
			return nil, err
		}
	}
	a.route("GET", "/healthz", a.healthz)
	a.mux.HandleFunc("/api/", func(w http.ResponseWriter, r *http.Request) {
		writeError(w, http.StatusNotFound, fmt.Sprintf("no API route %s %s", r.Method, r.URL.Path))
	})
	a.mux.HandleFunc("GET /{$}", a.index)
	a.mux.HandleFunc("GET /ui/app.js", asset(appJS, "text/javascript; charset=utf-8"))
	a.mux.HandleFunc("GET /ui/style.css", asset(styleCSS, "text/css; charset=utf-8"))
	return a, nil
}

// safeRoute is route for a caller's pattern: a pattern the mux refuses
// (a conflict) is an error instead of a panic.
func (a *API) safeRoute(method, path string, h http.HandlerFunc) (err error) {
	defer func() {
		if p := recover(); p != nil {
			err = fmt.Errorf("api: extra route %s %s: %v", method, path, p)
		}
	}()
	a.route(method, path, h)
	return nil
}

// route registers h for method and path, and a JSON 405 for other methods
// (the mux's own 405 is plain text).
func (a *API) route(method, path string, h http.HandlerFunc) {
	a.mux.HandleFunc(method+" "+path, h)
	methods, seen := a.allow[path]
	a.allow[path] = append(methods, method)
	if seen {
		return
	}
	a.mux.HandleFunc(path, func(w http.ResponseWriter, r *http.Request) {
		allowed := strings.Join(a.allow[path], ", ")
		w.Header().Set("Allow", allowed)
		writeError(w, http.StatusMethodNotAllowed, fmt.Sprintf("method %s is not allowed on %s; use %s", r.Method, r.URL.Path, allowed))
	})
}

// ServeHTTP serves a request and logs it at debug level.
func (a *API) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	start := time.Now()
	rec := &recorder{ResponseWriter: w, status: http.StatusOK}
	a.mux.ServeHTTP(rec, r)
	a.logger.LogAttrs(r.Context(), slog.LevelDebug, "http request",
		slog.String("method", r.Method), slog.String("path", r.URL.Path), slog.String("query", redactQuery(r.URL.Query())),
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

// redactQuery renders a query for the request log with the values of
// anything that may carry a secret replaced.
func redactQuery(q url.Values) string {
	for k := range q {
		switch strings.ToLower(k) {
		case "token", "access_token", "refresh_token", "jwt", "password", "auth", "authorization", "bearer":
			q[k] = []string{"REDACTED"}
		}
	}
	return q.Encode()
}
