// Package wspush is the WebSocket transport of the push core
// (visualization/internal/push), served at /api/v1/ws with
// github.com/coder/websocket.
//
// Handshake: the client offers the subprotocols "monitor.v1" and
// "bearer.<access token>" (browsers cannot set an Authorization header on
// a WebSocket); the server checks the token before upgrading and echoes
// only "monitor.v1", so the token is never reflected. A token in the query
// string is refused (URLs end up in logs and histories). The Origin must
// be this server's own or match websocket.allowed_origins; clients that
// send no Origin (not browsers) are allowed, the token being the guard.
//
// Session: the hello message first, then what the hub queues; the client
// may send subscribe commands (push.Client.Handle). The server pings every
// heartbeat and closes a connection whose pong does not come within the
// next heartbeat, whose write stalls that long, that sends a message over
// the read limit, or whose token expires (close code 4001: refresh the
// token and reconnect).
//
// Concurrency: the Handler is safe for concurrent use; each connection
// runs on its request's goroutine plus a reader and a pinger, all ended
// before ServeHTTP returns. Wait waits for every session after the hub was
// closed.
package wspush

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"sync"
	"time"

	"github.com/coder/websocket"

	"github.com/monitorhq/monitor/visualization/internal/push"
)

// Protocol is the subprotocol the server speaks.
const Protocol = "monitor.v1"

// BearerPrefix starts the subprotocol that carries the access token.
const BearerPrefix = "bearer."

// StatusTokenExpired is the close code sent when the session's token
// expires.
const StatusTokenExpired websocket.StatusCode = 4001

// Identity is who a token belongs to.
type Identity struct {
	User    string
	Role    string
	Expires time.Time
}

// Options configure a Handler.
type Options struct {
	Hub *push.Hub
	// Verify checks an access token.
	Verify func(token string) (Identity, error)
	// AllowedOrigins are host patterns (path.Match, e.g. "dash.example.com",
	// "*.example.com", or with a scheme "https://dash.example.com")
	// allowed besides the server's own origin.
	AllowedOrigins []string
	Heartbeat      time.Duration // ping interval; also the pong and write timeout
	ReadLimit      int64         // largest message a client may send, bytes
	Logger         *slog.Logger
}

// Handler serves WebSocket sessions.
type Handler struct {
	opts Options
	log  *slog.Logger
	wg   sync.WaitGroup
}

// New returns a Handler.
func New(opts Options) (*Handler, error) {
	if opts.Hub == nil || opts.Verify == nil {
		return nil, errors.New("wspush: a hub and a token verifier are required")
	}
	if opts.Heartbeat <= 0 || opts.ReadLimit <= 0 {
		return nil, fmt.Errorf("wspush: heartbeat %s and read limit %d must be positive", opts.Heartbeat, opts.ReadLimit)
	}
	log := opts.Logger
	if log == nil {
		log = slog.New(slog.DiscardHandler)
	}
	return &Handler{opts: opts, log: log}, nil
}

// Wait returns when every session has ended (close the hub first).
func (h *Handler) Wait() { h.wg.Wait() }

// queryTokenKeys are query parameters that would carry a token.
var queryTokenKeys = []string{"token", "access_token", "jwt", "bearer", "authorization", "auth"}

func refuse(w http.ResponseWriter, code int, msg string) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	if code == http.StatusUnauthorized {
		w.Header().Set("WWW-Authenticate", `Bearer realm="monitor"`)
	}
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(map[string]string{"error": msg})
}

// ServeHTTP authenticates, upgrades and runs one session.
func (h *Handler) ServeHTTP(w http.ResponseWriter, r *http.Request) {
	for key, vals := range r.URL.Query() {
		looksLikeJWT := false
		for _, v := range vals {
			looksLikeJWT = looksLikeJWT || strings.HasPrefix(v, "eyJ")
		}
		for _, k := range queryTokenKeys {
			if strings.EqualFold(key, k) || looksLikeJWT {
				refuse(w, http.StatusBadRequest, "a token in the URL is refused; send it as the subprotocol \""+BearerPrefix+"<token>\" next to \""+Protocol+"\"")
				return
			}
		}
	}
	var token string
	offered := false
	for _, p := range websocketProtocols(r) {
		if t, ok := strings.CutPrefix(p, BearerPrefix); ok {
			token = t
		}
		offered = offered || p == Protocol
	}
	if !offered {
		refuse(w, http.StatusBadRequest, "offer the subprotocol \""+Protocol+"\" (and \""+BearerPrefix+"<token>\")")
		return
	}
	if token == "" {
		refuse(w, http.StatusUnauthorized, "no access token: offer the subprotocol \""+BearerPrefix+"<token>\"")
		return
	}
	id, err := h.opts.Verify(token)
	if err != nil {
		refuse(w, http.StatusUnauthorized, err.Error())
		return
	}
	// The HTTP server's read and write deadlines would end the session.
	rc := http.NewResponseController(w)
	_ = rc.SetReadDeadline(time.Time{})
	_ = rc.SetWriteDeadline(time.Time{})
	cw := &corkingWriter{ResponseWriter: w, timeout: h.opts.Heartbeat}
	conn, err := websocket.Accept(cw, r, &websocket.AcceptOptions{
		Subprotocols:   []string{Protocol},
		OriginPatterns: h.opts.AllowedOrigins,
	})
	if err != nil {
		// Accept answered (403 for a foreign Origin).
		h.log.Info("websocket refused", "remote", r.RemoteAddr, "origin", r.Header.Get("Origin"), "user", id.User, "err", err)
		return
	}
	h.wg.Add(1)
	defer h.wg.Done()
	defer conn.CloseNow()
	conn.SetReadLimit(h.opts.ReadLimit)
	if cw.conn == nil {
		h.log.Error("websocket accepted without hijacking through the corking writer", "remote", r.RemoteAddr)
		return
	}
	h.session(r.Context(), conn, cw.conn, id, r.RemoteAddr)
}

// websocketProtocols returns the offered subprotocols.
func websocketProtocols(r *http.Request) []string {
	var out []string
	for _, v := range r.Header.Values("Sec-WebSocket-Protocol") {
		for p := range strings.SplitSeq(v, ",") {
			if p = strings.TrimSpace(p); p != "" {
				out = append(out, p)
			}
		}
	}
	return out
}

func (h *Handler) session(parent context.Context, conn *websocket.Conn, cc *corkConn, id Identity, remote string) {
	c, err := h.opts.Hub.Join(push.Filter{}, push.ClientInfo{User: id.User, Role: id.Role, Transport: "websocket", Remote: remote})
	if err != nil {
		code := websocket.StatusTryAgainLater
		if errors.Is(err, push.ErrClosed) {
			code = websocket.StatusGoingAway
		}
		_ = conn.Close(code, err.Error())
		return
	}
	defer c.Close()
	ctx, cancel := context.WithCancelCause(context.WithoutCancel(parent))
	defer cancel(nil)
	log := h.log.With("client", c.ID(), "user", id.User, "remote", remote)
	log.Debug("websocket session started")

	var wg sync.WaitGroup
	defer wg.Wait()
	defer cancel(nil)
	wg.Go(func() { // reader: subscribe commands
		for {
			_, data, err := conn.Read(ctx)
			if err != nil {
				cancel(fmt.Errorf("read: %w", err))
				return
			}
			if err := c.Handle(data); err != nil {
				log.Debug("refused a client command", "err", err)
			}
		}
	})
	wg.Go(func() { // pinger
		t := time.NewTicker(h.opts.Heartbeat)
		defer t.Stop()
		for {
			select {
			case <-ctx.Done():
				return
			case <-t.C:
			}
			pctx, pcancel := context.WithTimeout(ctx, h.opts.Heartbeat)
			err := conn.Ping(pctx)
			pcancel()
			if err != nil {
				cancel(fmt.Errorf("ping: %w", err))
				return
			}
		}
	})
	expiry := time.NewTimer(time.Until(id.Expires))
	defer expiry.Stop()
	wg.Go(func() {
		select {
		case <-ctx.Done():
		case <-expiry.C:
			cancel(errTokenExpired)
		}
	})

	for {
		msgs, err := c.Next(ctx)
		if err != nil {
			break
		}
		// The batch leaves in one write (cork.go); every socket write has
		// the heartbeat as its deadline, so no context is needed here.
		cc.cork()
		for _, m := range msgs {
			if err = conn.Write(context.Background(), websocket.MessageText, m); err != nil {
				break
			}
		}
		if uerr := cc.uncork(); err == nil {
			err = uerr
		}
		if err != nil {
			cancel(fmt.Errorf("write: %w", err))
			break
		}
	}
	cause := context.Cause(ctx)
	switch {
	case errors.Is(cause, errTokenExpired):
		_ = conn.Close(StatusTokenExpired, "token expired; refresh it and reconnect")
	case cause == nil:
		// The client or the hub closed: the server is shutting down.
		_ = conn.Close(websocket.StatusGoingAway, "server shutting down")
	default:
		log.Debug("websocket session ended", "err", cause)
	}
}

var errTokenExpired = errors.New("token expired")
