// Package auth is the visualization server's login: users with bcrypt
// password hashes and a role (viewer or admin), short-lived HS256 access
// tokens, and refresh tokens that are rotated on use (golang-jwt v5).
//
// Every token is checked the same strict way: the algorithm is pinned to
// HS256 (so alg=none and RS/HS confusion are refused before any key is
// used), exp, iat, iss and aud are required and checked, and the token's
// use (access or refresh) must be the one asked for. A refresh token works
// once: using it marks its id spent and issues a new pair.
//
// Nothing here logs or returns a token or a password in an error.
//
// Concurrency: an Authenticator and a Limiter are safe for concurrent use
// and start no goroutines.
package auth

import (
	"crypto/rand"
	"encoding/base64"
	"errors"
	"fmt"
	"sync"
	"time"

	"github.com/golang-jwt/jwt/v5"
	"golang.org/x/crypto/bcrypt"
)

// Role is what a user may do: a viewer reads, an admin also changes.
type Role string

// The roles.
const (
	RoleViewer Role = "viewer"
	RoleAdmin  Role = "admin"
)

// Valid reports whether r is a known role.
func (r Role) Valid() bool { return r == RoleViewer || r == RoleAdmin }

// Allows reports whether a user of role r may use a route that needs need.
func (r Role) Allows(need Role) bool { return r == RoleAdmin || r == need }

// MinSecretBytes is the shortest HS256 secret accepted: as long as the
// hash, so the key is not the weak part.
const MinSecretBytes = 32

// User is one account.
type User struct {
	Username     string
	PasswordHash string // bcrypt
	Role         Role
}

// Config configures an Authenticator.
type Config struct {
	Secret     []byte        // the HS256 key, at least MinSecretBytes
	Issuer     string        // iss of issued tokens, required on every token
	Audience   string        // aud of issued tokens, required on every token
	AccessTTL  time.Duration // lifetime of an access token
	RefreshTTL time.Duration // lifetime of a refresh token
	Users      []User
	// Now is the clock; nil means time.Now.
	Now func() time.Time
}

// Token uses, the "use" claim.
const (
	useAccess  = "access"
	useRefresh = "refresh"
)

// Claims are the claims of our tokens.
type Claims struct {
	Role Role   `json:"role"`
	Use  string `json:"use"`
	jwt.RegisteredClaims
}

// Validate is called by the parser after the registered claims were
// checked: it makes iat required (the library only checks it when present)
// and refuses an unknown role.
func (c Claims) Validate() error {
	if c.IssuedAt == nil {
		return errors.New("token has no iat claim")
	}
	if c.Subject == "" {
		return errors.New("token has no sub claim")
	}
	if !c.Role.Valid() {
		return fmt.Errorf("token role %q is neither viewer nor admin", c.Role)
	}
	return nil
}

// Tokens is what login and refresh return.
type Tokens struct {
	AccessToken      string    `json:"access_token"`
	TokenType        string    `json:"token_type"` // "Bearer"
	ExpiresIn        int64     `json:"expires_in"` // seconds
	ExpiresAt        time.Time `json:"expires_at"`
	RefreshToken     string    `json:"refresh_token"`
	RefreshExpiresAt time.Time `json:"refresh_expires_at"`
	Username         string    `json:"username"`
	Role             Role      `json:"role"`
}

// Errors callers branch on; their text is safe to show a client.
var (
	// ErrBadCredentials is a login with an unknown user or a wrong password
	// (deliberately not saying which).
	ErrBadCredentials = errors.New("wrong username or password")
	// ErrInvalidToken wraps every refused token.
	ErrInvalidToken = errors.New("invalid token")
)

// dummyHash is compared against when the user does not exist, so an
// unknown name costs the same bcrypt time as a wrong password.
var dummyHash, _ = bcrypt.GenerateFromPassword([]byte("not a password of anyone"), bcrypt.DefaultCost)

// Authenticator issues and checks tokens.
type Authenticator struct {
	cfg    Config
	users  map[string]User
	parser *jwt.Parser

	mu    sync.Mutex
	spent map[string]time.Time // refresh token ids already used → their expiry
}

// New checks cfg and returns an Authenticator.
func New(cfg Config) (*Authenticator, error) {
	if len(cfg.Secret) < MinSecretBytes {
		return nil, fmt.Errorf("auth: the JWT secret has %d bytes; at least %d are needed", len(cfg.Secret), MinSecretBytes)
	}
	if cfg.Issuer == "" || cfg.Audience == "" {
		return nil, errors.New("auth: issuer and audience must be set")
	}
	if cfg.AccessTTL <= 0 || cfg.RefreshTTL <= 0 {
		return nil, fmt.Errorf("auth: access TTL %s and refresh TTL %s must be positive", cfg.AccessTTL, cfg.RefreshTTL)
	}
	if cfg.Now == nil {
		cfg.Now = time.Now
	}
	users := make(map[string]User, len(cfg.Users))
	for _, u := range cfg.Users {
		if err := CheckUser(u); err != nil {
			return nil, fmt.Errorf("auth: %w", err)
		}
		if _, dup := users[u.Username]; dup {
			return nil, fmt.Errorf("auth: user %q is listed twice", u.Username)
		}
		users[u.Username] = u
	}
	a := &Authenticator{cfg: cfg, users: users, spent: map[string]time.Time{}}
	a.parser = jwt.NewParser(
		jwt.WithValidMethods([]string{jwt.SigningMethodHS256.Alg()}),
		jwt.WithExpirationRequired(),
		jwt.WithIssuedAt(),
		jwt.WithIssuer(cfg.Issuer),
		jwt.WithAudience(cfg.Audience),
		jwt.WithTimeFunc(cfg.Now),
		jwt.WithLeeway(5*time.Second),
	)
	return a, nil
}

// CheckUser checks one account's fields: a name, a bcrypt hash and a role.
func CheckUser(u User) error {
	if u.Username == "" || len(u.Username) > 64 {
		return fmt.Errorf("username %q must have 1 … 64 characters", u.Username)
	}
	if _, err := bcrypt.Cost([]byte(u.PasswordHash)); err != nil {
		return fmt.Errorf("user %q: password_hash is not a bcrypt hash (make one with `htpasswd -nbBC 10 '' PASSWORD | cut -c2-`): %v", u.Username, err)
	}
	if !u.Role.Valid() {
		return fmt.Errorf("user %q: role %q must be viewer or admin", u.Username, u.Role)
	}
	return nil
}

// HashPassword returns the bcrypt hash of password (the standalone
// server's admin user).
func HashPassword(password string) (string, error) {
	h, err := bcrypt.GenerateFromPassword([]byte(password), bcrypt.DefaultCost)
	if err != nil {
		return "", fmt.Errorf("hash password: %w", err)
	}
	return string(h), nil
}

// Login checks username and password and issues a token pair.
func (a *Authenticator) Login(username, password string) (Tokens, error) {
	u, ok := a.users[username]
	hash := dummyHash
	if ok {
		hash = []byte(u.PasswordHash)
	}
	if err := bcrypt.CompareHashAndPassword(hash, []byte(password)); err != nil || !ok {
		return Tokens{}, ErrBadCredentials
	}
	return a.issue(u)
}

// Refresh spends a refresh token and issues a new pair for its user, with
// the user's current role. A spent, expired or foreign token, or one of a
// user no longer configured, is refused.
func (a *Authenticator) Refresh(refreshToken string) (Tokens, error) {
	c, err := a.parse(refreshToken, useRefresh)
	if err != nil {
		return Tokens{}, err
	}
	u, ok := a.users[c.Subject]
	if !ok {
		return Tokens{}, fmt.Errorf("%w: user %q no longer exists", ErrInvalidToken, c.Subject)
	}
	if c.ID == "" {
		return Tokens{}, fmt.Errorf("%w: refresh token has no jti", ErrInvalidToken)
	}
	now := a.cfg.Now()
	a.mu.Lock()
	for id, exp := range a.spent {
		if now.After(exp.Add(time.Minute)) {
			delete(a.spent, id)
		}
	}
	if _, used := a.spent[c.ID]; used {
		a.mu.Unlock()
		return Tokens{}, fmt.Errorf("%w: refresh token was already used", ErrInvalidToken)
	}
	a.spent[c.ID] = c.ExpiresAt.Time
	a.mu.Unlock()
	return a.issue(u)
}

// Verify checks an access token and returns its claims.
func (a *Authenticator) Verify(accessToken string) (*Claims, error) {
	return a.parse(accessToken, useAccess)
}

func (a *Authenticator) parse(token, use string) (*Claims, error) {
	if token == "" {
		return nil, fmt.Errorf("%w: empty", ErrInvalidToken)
	}
	var c Claims
	_, err := a.parser.ParseWithClaims(token, &c, func(*jwt.Token) (any, error) { return a.cfg.Secret, nil })
	if err != nil {
		return nil, fmt.Errorf("%w: %v", ErrInvalidToken, err)
	}
	if c.Use != use {
		return nil, fmt.Errorf("%w: a %q token where an %q token is needed", ErrInvalidToken, c.Use, use)
	}
	return &c, nil
}

func (a *Authenticator) issue(u User) (Tokens, error) {
	now := a.cfg.Now()
	access, accessExp, err := a.sign(u, useAccess, now, a.cfg.AccessTTL)
	if err != nil {
		return Tokens{}, err
	}
	refresh, refreshExp, err := a.sign(u, useRefresh, now, a.cfg.RefreshTTL)
	if err != nil {
		return Tokens{}, err
	}
	return Tokens{
		AccessToken: access, TokenType: "Bearer", ExpiresIn: int64(a.cfg.AccessTTL / time.Second), ExpiresAt: accessExp,
		RefreshToken: refresh, RefreshExpiresAt: refreshExp, Username: u.Username, Role: u.Role,
	}, nil
}

func (a *Authenticator) sign(u User, use string, now time.Time, ttl time.Duration) (string, time.Time, error) {
	id := make([]byte, 16)
	_, _ = rand.Read(id) // never fails (Go ≥1.24)
	exp := now.Add(ttl).Truncate(time.Second)
	c := Claims{Role: u.Role, Use: use, RegisteredClaims: jwt.RegisteredClaims{
		Issuer:    a.cfg.Issuer,
		Subject:   u.Username,
		Audience:  jwt.ClaimStrings{a.cfg.Audience},
		ExpiresAt: jwt.NewNumericDate(exp),
		IssuedAt:  jwt.NewNumericDate(now),
		ID:        base64.RawURLEncoding.EncodeToString(id),
	}}
	s, err := jwt.NewWithClaims(jwt.SigningMethodHS256, c).SignedString(a.cfg.Secret)
	if err != nil {
		return "", time.Time{}, fmt.Errorf("sign %s token for %q: %w", use, u.Username, err)
	}
	return s, exp, nil
}
