// Package grpcauth holds what the clients and the broker share about
// authenticating on the gRPC links: agent tokens bound to a host id, the
// per-RPC credentials that carry a token or secret, and the dial options
// (TLS from a pkg/tlsconfig block plus those credentials) every client of
// the broker uses.
//
// An agent token is
//
//	"v1." + base64url(host_id) + "." + base64url(HMAC-SHA256(secret, "monitor-agent-v1:" + host_id))
//
// (unpadded base64url). It names its host, so the broker needs no other
// field to know who is speaking, and it is checked against every configured
// secret, so a secret can be rotated by listing the new one first, moving
// the agents to new tokens, then dropping the old one. Tokens never expire;
// revoke one by listing its host under the broker's auth.revoked_hosts or
// by rotating the secret.
//
// Everything here is safe for concurrent use.
package grpcauth

import (
	"context"
	"crypto/hmac"
	"crypto/sha256"
	"encoding/base64"
	"errors"
	"fmt"
	"net"
	"net/url"
	"strings"

	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/tlsconfig"
)

// MinSecretLen is the shortest agent secret accepted (bytes).
const MinSecretLen = 16

const (
	tokenVersion = "v1"
	macContext   = "monitor-agent-v1:"
)

// Errors of Verify; callers branch on them (and count them by reason).
var (
	ErrMalformed = errors.New("agent token is malformed")
	ErrBadMAC    = errors.New("agent token is not signed by a configured secret")
)

var b64 = base64.RawURLEncoding

func mac(secret []byte, hostID string) []byte {
	m := hmac.New(sha256.New, secret)
	m.Write([]byte(macContext))
	m.Write([]byte(hostID))
	return m.Sum(nil)
}

// Mint returns the token of hostID under secret.
func Mint(secret []byte, hostID string) (string, error) {
	if len(secret) < MinSecretLen {
		return "", fmt.Errorf("agent secret is %d bytes; use at least %d", len(secret), MinSecretLen)
	}
	if err := storage.ValidateHostID(hostID); err != nil {
		return "", err
	}
	return tokenVersion + "." + b64.EncodeToString([]byte(hostID)) + "." + b64.EncodeToString(mac(secret, hostID)), nil
}

// Verify returns the host id a token was minted for when one of secrets
// signed it. Every secret is tried (in constant time each) so the time
// taken does not say which one matched.
func Verify(token string, secrets [][]byte) (string, error) {
	host, err := TokenHost(token)
	if err != nil {
		return "", err
	}
	sum, err := b64.DecodeString(token[strings.LastIndexByte(token, '.')+1:])
	if err != nil || len(sum) != sha256.Size {
		return "", ErrMalformed
	}
	ok := false
	for _, s := range secrets {
		if hmac.Equal(sum, mac(s, host)) {
			ok = true
		}
	}
	if !ok {
		return "", ErrBadMAC
	}
	return host, nil
}

// Bearer is per-RPC credentials sending "authorization: Bearer <token>".
// Unless AllowInsecureLoopback is set they are sent only over TLS; with it,
// also in clear text to a loopback address (a broker on the same machine,
// as `monitor standalone` runs), never to another machine.
type Bearer struct {
	Token                 string
	AllowInsecureLoopback bool
}

// GetRequestMetadata implements credentials.PerRPCCredentials.
func (b Bearer) GetRequestMetadata(ctx context.Context, uri ...string) (map[string]string, error) {
	if b.AllowInsecureLoopback {
		ri, _ := credentials.RequestInfoFromContext(ctx)
		secure := false
		if ri.AuthInfo != nil {
			if ci, ok := ri.AuthInfo.(interface {
				GetCommonAuthInfo() credentials.CommonAuthInfo
			}); ok {
				secure = ci.GetCommonAuthInfo().SecurityLevel >= credentials.PrivacyAndIntegrity
			}
		}
		if !secure && !loopbackURI(uri) {
			return nil, fmt.Errorf("refusing to send a token in clear text to %v: only loopback brokers may be reached without TLS", uri)
		}
	}
	return map[string]string{"authorization": "Bearer " + b.Token}, nil
}

// RequireTransportSecurity implements credentials.PerRPCCredentials.
func (b Bearer) RequireTransportSecurity() bool { return !b.AllowInsecureLoopback }

func loopbackURI(uris []string) bool {
	if len(uris) == 0 {
		return false
	}
	for _, s := range uris {
		u, err := url.Parse(s)
		if err != nil || !IsLoopback(u.Host) {
			return false
		}
	}
	return true
}

// IsLoopback reports whether addr (host or host:port) names this machine
// only: localhost, 127.0.0.0/8 or ::1.
func IsLoopback(addr string) bool {
	host := addr
	if h, _, err := net.SplitHostPort(addr); err == nil {
		host = h
	}
	if host == "localhost" {
		return true
	}
	ip := net.ParseIP(strings.Trim(host, "[]"))
	return ip != nil && ip.IsLoopback()
}

// Client is how a client reaches the broker: TLS (from a tlsconfig block)
// and an optional bearer token (an agent token, or the cluster secret for
// readers and brokers).
type Client struct {
	TLS                   tlsconfig.Config
	Token                 string
	AllowInsecureLoopback bool // send Token without TLS to loopback brokers
}

// DialOptions returns the transport and per-RPC credentials for
// grpc.NewClient.
func (c Client) DialOptions() ([]grpc.DialOption, error) {
	tc, err := c.TLS.Client()
	if err != nil {
		return nil, err
	}
	var opts []grpc.DialOption
	if tc != nil {
		opts = append(opts, grpc.WithTransportCredentials(credentials.NewTLS(tc)))
	} else {
		opts = append(opts, grpc.WithTransportCredentials(insecure.NewCredentials()))
	}
	if c.Token != "" {
		opts = append(opts, grpc.WithPerRPCCredentials(Bearer{Token: c.Token, AllowInsecureLoopback: c.AllowInsecureLoopback}))
	}
	return opts, nil
}

// TokenHost returns the host id a token claims, without verifying it (an
// agent checks its configuration with it; only the broker can verify).
func TokenHost(token string) (string, error) {
	parts := strings.Split(token, ".")
	if len(parts) != 3 || parts[0] != tokenVersion {
		return "", ErrMalformed
	}
	host, err := b64.DecodeString(parts[1])
	if err != nil || storage.ValidateHostID(string(host)) != nil {
		return "", ErrMalformed
	}
	return string(host), nil
}
