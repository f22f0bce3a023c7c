package api

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"math"
	"net"
	"net/http"
	"net/netip"
	"strconv"
	"strings"
	"time"

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

// clientAddr is the login limiter's key and the address logged: the
// peer's IP, or, when the peer is one of Options.TrustedProxies, the
// client that X-Forwarded-For names: the right-most address in it that is
// not itself a trusted proxy (the left part of the header is whatever the
// client sent, so it is never believed). Without trusted proxies the
// header is ignored: any client can set it.
func (a *API) clientAddr(r *http.Request) string {
	host, _, err := net.SplitHostPort(r.RemoteAddr)
	if err != nil {
		host = r.RemoteAddr
	}
	if len(a.cfg.TrustedProxies) == 0 || !a.trusted(host) {
		return host
	}
	hops := r.Header.Values("X-Forwarded-For")
	for i := len(hops) - 1; i >= 0; i-- {
		parts := strings.Split(hops[i], ",")
		for j := len(parts) - 1; j >= 0; j-- {
			hop := strings.TrimSpace(parts[j])
			ip, err := netip.ParseAddr(hop)
			if err != nil {
				return host // a malformed hop: stop believing the header there
			}
			if !a.trusted(hop) {
				return ip.Unmap().String()
			}
			host = hop
		}
	}
	return host
}

// trusted reports whether addr (an IP) is one of the trusted proxies.
func (a *API) trusted(addr string) bool {
	ip, err := netip.ParseAddr(addr)
	if err != nil {
		return false
	}
	ip = ip.Unmap()
	for _, p := range a.cfg.TrustedProxies {
		if p.Contains(ip) {
			return true
		}
	}
	return false
}

// AuthStats counts refused logins and refreshes, by reason.
type AuthStats struct {
	// LimitedAddr: refused with 429 because the client address' bucket was
	// empty; LimitedUser: because the user name's bucket was (failed logins
	// of that user from anywhere).
	LimitedAddr uint64 `json:"limited_addr"`
	LimitedUser uint64 `json:"limited_user"`
	// BadCredentials: a wrong user name or password (401); BadRefresh: an
	// invalid, expired or reused refresh token (401).
	BadCredentials uint64 `json:"bad_credentials"`
	BadRefresh     uint64 `json:"bad_refresh"`
}

// AuthStats returns the refusal counters.
func (a *API) AuthStats() AuthStats {
	return AuthStats{
		LimitedAddr: a.limitedAddr.Load(), LimitedUser: a.limitedUser.Load(),
		BadCredentials: a.badCredentials.Load(), BadRefresh: a.badRefresh.Load(),
	}
}

// limited answers 429 with Retry-After when the client's bucket is empty.
func (a *API) limited(w http.ResponseWriter, r *http.Request) bool {
	client := a.clientAddr(r)
	ok, wait := a.cfg.LoginLimiter.Allow(client)
	if ok {
		return false
	}
	a.limitedAddr.Add(1)
	tooMany(w, wait, fmt.Sprintf("too many login attempts from %s", client))
	return true
}

// userLimited answers 429 when user has had too many failed logins lately
// (from any address); it takes no token: failures are charged by
// chargeUser.
func (a *API) userLimited(w http.ResponseWriter, user string) bool {
	if a.cfg.UserLimiter == nil {
		return false
	}
	ok, wait := a.cfg.UserLimiter.Peek(user)
	if ok {
		return false
	}
	a.limitedUser.Add(1)
	tooMany(w, wait, fmt.Sprintf("too many failed logins of user %q", user))
	return true
}

// chargeUser takes a token from user's bucket after a failed login.
func (a *API) chargeUser(user string) {
	if a.cfg.UserLimiter != nil {
		a.cfg.UserLimiter.Allow(user)
	}
}

func tooMany(w http.ResponseWriter, wait time.Duration, msg string) {
	secs := max(1, int(math.Ceil(wait.Seconds())))
	w.Header().Set("Retry-After", strconv.Itoa(secs))
	writeError(w, http.StatusTooManyRequests, fmt.Sprintf("%s; retry in %d s", msg, secs))
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
	if a.userLimited(w, b.Username) {
		return
	}
	toks, err := a.cfg.Auth.Login(b.Username, b.Password)
	if err != nil {
		a.badCredentials.Add(1)
		a.chargeUser(b.Username)
		a.logger.Info("login refused", "user", b.Username, "remote", a.clientAddr(r))
		unauthorized(w, err.Error())
		return
	}
	a.logger.Info("login", "user", b.Username, "role", toks.Role, "remote", a.clientAddr(r))
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
		a.badRefresh.Add(1)
		a.logger.Info("token refresh refused", "remote", a.clientAddr(r), "err", err)
		unauthorized(w, err.Error())
		return
	}
	writeJSON(w, http.StatusOK, toks)
}
