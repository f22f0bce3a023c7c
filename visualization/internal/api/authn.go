package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"strconv"
	"strings"

	"github.com/monitorhq/monitor/visualization/internal/auth"
)

// maxAuthBody bounds a login or refresh request body.
const maxAuthBody = 8 << 10

type identityKey struct{}

// Identity is the caller of an authenticated route.
type Identity struct {
	User string
	Role auth.Role
}

// IdentityFrom returns the caller of an authenticated route (ok false
// outside one).
func IdentityFrom(ctx context.Context) (Identity, bool) {
	id, ok := ctx.Value(identityKey{}).(Identity)
	return id, ok
}

// authed wraps h: a valid access token in the Authorization header, of a
// role that allows need.
func (a *API) authed(need auth.Role, h http.HandlerFunc) http.HandlerFunc {
	return func(w http.ResponseWriter, r *http.Request) {
		tok, ok := bearer(r)
		if !ok {
			unauthorized(w, "no access token: send \"Authorization: Bearer <token>\" (POST /api/v1/auth/login issues one)")
			return
		}
		c, err := a.cfg.Auth.Verify(tok)
		if err != nil {
			unauthorized(w, err.Error())
			return
		}
		if !c.Role.Allows(need) {
			writeError(w, http.StatusForbidden, fmt.Sprintf("user %q has role %s; %s %s needs %s", c.Subject, c.Role, r.Method, r.URL.Path, need))
			return
		}
		h(w, r.WithContext(context.WithValue(r.Context(), identityKey{}, Identity{User: c.Subject, Role: c.Role})))
	}
}

// bearer returns the token of "Authorization: Bearer <token>".
func bearer(r *http.Request) (string, bool) {
	v := r.Header.Get("Authorization")
	scheme, tok, ok := strings.Cut(v, " ")
	if !ok || !strings.EqualFold(scheme, "Bearer") {
		return "", false
	}
	tok = strings.TrimSpace(tok)
	return tok, tok != ""
}

func unauthorized(w http.ResponseWriter, msg string) {
	w.Header().Set("WWW-Authenticate", `Bearer realm="monitor", error="invalid_token"`)
	writeError(w, http.StatusUnauthorized, msg)
}

// clientAddr is the rate limiter's key: the peer's IP. X-Forwarded-For is
// not trusted (any client can set it); behind a proxy every client shares
// the proxy's bucket, which still bounds guessing.
func clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		return r.RemoteAddr
	}
	return host
}

// limited answers 429 with Retry-After when the client's bucket is empty.
func (a *API) limited(w http.ResponseWriter, r *http.Request) bool {
	ok, wait := a.cfg.LoginLimiter.Allow(clientAddr(r))
	if ok {
		return false
	}
	secs := int(math.Ceil(wait.Seconds()))
	w.Header().Set("Retry-After", strconv.Itoa(max(1, secs)))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("too many login attempts from %s; retry in %d s", clientAddr(r), max(1, secs)))
	return true
}

// decodeBody reads a small JSON body into v, refusing unknown fields.
func decodeBody(w http.ResponseWriter, r *http.Request, v any) error {
	dec := json.NewDecoder(http.MaxBytesReader(w, r.Body, maxAuthBody))
	dec.DisallowUnknownFields()
	if err := dec.Decode(v); err != nil {
		return fmt.Errorf("body: want a JSON object: %v", err)
	}
	return nil
}

type loginBody struct {
	Username string `json:"username"`
	Password string `json:"password"`
}

func (a *API) login(w http.ResponseWriter, r *http.Request) {
	if a.limited(w, r) {
		return
	}
	var b loginBody
	if err := decodeBody(w, r, &b); err != nil {
		writeError(w, http.StatusBadRequest, err.Error()+` such as {"username":"admin","password":"..."}`)
		return
	}
	if b.Username == "" || b.Password == "" {
		writeError(w, http.StatusBadRequest, "username and password are required")
		return
	}
	toks, err := a.cfg.Auth.Login(b.Username, b.Password)
	if err != nil {
		a.logger.Info("login refused", "user", b.Username, "remote", clientAddr(r))
		unauthorized(w, err.Error())
		return
	}
	a.logger.Info("login", "user", b.Username, "role", toks.Role, "remote", clientAddr(r))
	writeJSON(w, http.StatusOK, toks)
}

type refreshBody struct {
	RefreshToken string `json:"refresh_token"`
}

func (a *API) refresh(w http.ResponseWriter, r *http.Request) {
	if a.limited(w, r) {
		return
	}
	var b refreshBody
	if err := decodeBody(w, r, &b); err != nil {
		writeError(w, http.StatusBadRequest, err.Error()+` such as {"refresh_token":"..."}`)
		return
	}
	toks, err := a.cfg.Auth.Refresh(b.RefreshToken)
	if err != nil {
		if !errors.Is(err, auth.ErrInvalidToken) {
			writeError(w, http.StatusInternalServerError, err.Error())
			return
		}
		a.logger.Info("token refresh refused", "remote", clientAddr(r), "err", err)
		unauthorized(w, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, toks)
}
