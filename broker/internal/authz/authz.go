// Package authz authenticates and authorizes the broker's gRPC calls, as
// server interceptors in front of the MonitorService and ClusterService:
//
//   - writers (Register, Heartbeat, Ingest) are agents. An agent proves a
//     host id with a token (pkg/grpcauth, "authorization: Bearer v1...."),
//     or, when cert_identity is set, with its verified TLS client
//     certificate (URI SAN monitor://host/<id>, or the CommonName). Every
//     host id it sends — Register's, Heartbeat's, each snapshot of each
//     Ingest batch — must be that host; a batch naming another host ends
//     the stream with PermissionDenied and is not stored (the Ingest check
//     wraps the stream's RecvMsg, so the service never sees the batch).
//   - readers (ListHosts, Latest, QueryRange, Subscribe) present the cluster
//     secret ("Bearer <secret>", what the visualization server sends) or the
//     admin's Basic credentials.
//   - ClusterService Status and Watch take any valid credential (agents
//     follow the member list); its other methods check the cluster secret or
//     admin themselves (broker/internal/control).
//
// With no agent secret and no cert_identity the Authorizer is off and lets
// every call through (the behaviour before authentication existed).
// Failures are counted by reason. Comparisons of secrets are constant-time;
// no credential is ever logged.
//
// An Authorizer is safe for concurrent use.
package authz

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"iter"
	"log/slog"
	"net/url"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/peer"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/pkg/grpcauth"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// Certificate identity modes of Config.CertIdentity.
const (
	CertIdentityNone = "none"
	CertIdentityURI  = "uri" // URI SAN monitor://host/<host id>
	CertIdentityCN   = "cn"  // Subject CommonName
)

// Failure reasons, the label of monitor_broker_auth_failures_total.
const (
	ReasonMissing      = "missing"       // no credential at all
	ReasonInvalid      = "invalid"       // a token or secret that does not verify
	ReasonRevoked      = "revoked"       // a valid token of a host in revoked_hosts
	ReasonHostMismatch = "host_mismatch" // an agent naming another host
	ReasonNotReader    = "not_reader"    // an agent credential on a read
	ReasonUnknown      = "unknown_method"
)

// Reasons lists every failure reason (for exporting zeros).
var Reasons = []string{ReasonMissing, ReasonInvalid, ReasonRevoked, ReasonHostMismatch, ReasonNotReader, ReasonUnknown}

// Config is what the Authorizer checks against.
type Config struct {
	AgentSecrets  []string // any of them signs valid agent tokens; empty with CertIdentity none: off
	RevokedHosts  []string
	CertIdentity  string // none (default), uri or cn
	ClusterSecret string
	AdminUser     string
	AdminPassword string
}

// Authorizer holds the credentials and the failure counters.
type Authorizer struct {
	secrets  [][]byte
	revoked  map[string]bool
	certMode string
	cluster  []byte
	user     []byte
	password []byte
	log      *slog.Logger

	failures map[string]*atomic.Uint64
	logMu    sync.Mutex
	logged   map[string]time.Time // reason → last logged (one line per reason per minute)
}

// New returns an Authorizer; logger receives one warning per failure
// reason per minute (without credentials).
func New(cfg Config, logger *slog.Logger) *Authorizer {
	a := &Authorizer{revoked: map[string]bool{}, certMode: cfg.CertIdentity, cluster: []byte(cfg.ClusterSecret),
		user: []byte(cfg.AdminUser), password: []byte(cfg.AdminPassword), log: logger,
		failures: map[string]*atomic.Uint64{}, logged: map[string]time.Time{}}
	if a.certMode == "" {
		a.certMode = CertIdentityNone
	}
	for _, s := range cfg.AgentSecrets {
		a.secrets = append(a.secrets, []byte(s))
	}
	for _, h := range cfg.RevokedHosts {
		a.revoked[h] = true
	}
	for _, r := range Reasons {
		a.failures[r] = new(atomic.Uint64)
	}
	if a.log == nil {
		a.log = slog.New(slog.DiscardHandler)
	}
	return a
}

// Enabled reports whether agents must authenticate.
func (a *Authorizer) Enabled() bool { return len(a.secrets) > 0 || a.certMode != CertIdentityNone }

// Failures returns the refusals so far by reason.
func (a *Authorizer) Failures() map[string]uint64 {
	out := make(map[string]uint64, len(a.failures))
	for r, c := range a.failures {
		out[r] = c.Load()
	}
	return out
}

func (a *Authorizer) fail(ctx context.Context, reason string, code codes.Code, format string, args ...any) error {
	a.failures[reason].Add(1)
	msg := fmt.Sprintf(format, args...)
	a.logMu.Lock()
	last := a.logged[reason]
	now := time.Now()
	logIt := now.Sub(last) >= time.Minute
	if logIt {
		a.logged[reason] = now
	}
	a.logMu.Unlock()
	if logIt {
		from := ""
		if p, ok := peer.FromContext(ctx); ok && p.Addr != nil {
			from = p.Addr.String()
		}
		a.log.Warn("gRPC call refused (further refusals for this reason are only counted for a minute)", "reason", reason, "peer", from, "detail", msg)
	}
	return status.Error(code, msg)
}

// credential is what the caller presented.
type credential struct {
	bearer, basic string
	hasAuth       bool
}

func credentialOf(ctx context.Context) credential {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return credential{}
	}
	c := credential{hasAuth: true}
	if v, ok := strings.CutPrefix(vals[0], "Bearer "); ok {
		c.bearer = v
	} else if v, ok := strings.CutPrefix(vals[0], "Basic "); ok {
		c.basic = v
	}
	return c
}

// isReader reports whether c is the cluster secret or the admin's.
func (a *Authorizer) isReader(c credential) bool {
	if c.bearer != "" && len(a.cluster) > 0 && subtle.ConstantTimeCompare([]byte(c.bearer), a.cluster) == 1 {
		return true
	}
	if c.basic != "" && len(a.password) > 0 {
		raw, err := base64.StdEncoding.DecodeString(c.basic)
		if err != nil {
			return false
		}
		user, pass, _ := strings.Cut(string(raw), ":")
		u := subtle.ConstantTimeCompare([]byte(user), a.user)
		p := subtle.ConstantTimeCompare([]byte(pass), a.password)
		return u&p == 1
	}
	return false
}

var errNoAgent = errors.New("no agent credential")

// agent returns the host the caller is, from its token or certificate.
// errNoAgent means it presented neither (it may still be a reader).
func (a *Authorizer) agent(ctx context.Context, c credential) (string, error) {
	if strings.HasPrefix(c.bearer, "v1.") && len(a.secrets) > 0 {
		host, err := grpcauth.Verify(c.bearer, a.secrets)
		if err != nil {
			return "", a.fail(ctx, ReasonInvalid, codes.Unauthenticated, "agent token refused: %v", err)
		}
		if a.revoked[host] {
			return "", a.fail(ctx, ReasonRevoked, codes.PermissionDenied, "host %q is revoked (auth.revoked_hosts)", host)
		}
		return host, nil
	}
	if host := a.certHost(ctx); host != "" {
		if a.revoked[host] {
			return "", a.fail(ctx, ReasonRevoked, codes.PermissionDenied, "host %q is revoked (auth.revoked_hosts)", host)
		}
		return host, nil
	}
	return "", errNoAgent
}

// certHost is the host named by the caller's verified client certificate
// under the cert_identity mode ("" when none).
func (a *Authorizer) certHost(ctx context.Context) string {
	if a.certMode == CertIdentityNone {
		return ""
	}
	p, ok := peer.FromContext(ctx)
	if !ok {
		return ""
	}
	ti, ok := p.AuthInfo.(credentials.TLSInfo)
	if !ok || len(ti.State.VerifiedChains) == 0 || len(ti.State.VerifiedChains[0]) == 0 {
		return ""
	}
	leaf := ti.State.VerifiedChains[0][0]
	var host string
	switch a.certMode {
	case CertIdentityURI:
		for _, u := range leaf.URIs {
			if id, ok := HostFromURI(u); ok {
				host = id
				break
			}
		}
	case CertIdentityCN:
		host = leaf.Subject.CommonName
	}
	if storage.ValidateHostID(host) != nil {
		return ""
	}
	return host
}

// HostFromURI returns the host id of a URI SAN monitor://host/<id>.
func HostFromURI(u *url.URL) (string, bool) {
	if u == nil || u.Scheme != "monitor" || u.Host != "host" {
		return "", false
	}
	id := strings.TrimPrefix(u.Path, "/")
	return id, id != "" && !strings.Contains(id, "/")
}

// requireAgent authenticates an agent call.
func (a *Authorizer) requireAgent(ctx context.Context) (string, error) {
	c := credentialOf(ctx)
	host, err := a.agent(ctx, c)
	if errors.Is(err, errNoAgent) {
		if c.hasAuth {
			return "", a.fail(ctx, ReasonInvalid, codes.Unauthenticated, "agent calls need an agent token (authorization: Bearer v1....) or a client certificate naming the host")
		}
		return "", a.fail(ctx, ReasonMissing, codes.Unauthenticated, "agent calls need credentials: an agent token (authorization: Bearer v1....) or a client certificate naming the host")
	}
	return host, err
}

// requireReader authenticates a read.
func (a *Authorizer) requireReader(ctx context.Context) error {
	c := credentialOf(ctx)
	if a.isReader(c) {
		return nil
	}
	if !c.hasAuth {
		if a.certHost(ctx) != "" {
			return a.fail(ctx, ReasonNotReader, codes.PermissionDenied, "an agent may not read; reads need the cluster secret or admin credentials")
		}
		return a.fail(ctx, ReasonMissing, codes.Unauthenticated, "reads need the cluster secret (authorization: Bearer <secret>) or admin credentials")
	}
	if strings.HasPrefix(c.bearer, "v1.") && len(a.secrets) > 0 {
		if _, err := grpcauth.Verify(c.bearer, a.secrets); err == nil {
			return a.fail(ctx, ReasonNotReader, codes.PermissionDenied, "an agent token may not read; reads need the cluster secret or admin credentials")
		}
	}
	return a.fail(ctx, ReasonInvalid, codes.Unauthenticated, "credentials refused; reads need the cluster secret or admin credentials")
}

// requireAny accepts a reader or an agent.
func (a *Authorizer) requireAny(ctx context.Context) error {
	c := credentialOf(ctx)
	if a.isReader(c) {
		return nil
	}
	_, err := a.agent(ctx, c)
	if errors.Is(err, errNoAgent) {
		if c.hasAuth {
			return a.fail(ctx, ReasonInvalid, codes.Unauthenticated, "credentials refused")
		}
		return a.fail(ctx, ReasonMissing, codes.Unauthenticated, "this call needs credentials: an agent token, the cluster secret or admin credentials")
	}
	return err
}

func (a *Authorizer) mismatch(ctx context.Context, identity, named, where string) error {
	return a.fail(ctx, ReasonHostMismatch, codes.PermissionDenied, "agent authenticated as host %q may not write host %q (%s)", identity, named, where)
}

// Unary is the unary server interceptor.
func (a *Authorizer) Unary() grpc.UnaryServerInterceptor {
	return func(ctx context.Context, req any, info *grpc.UnaryServerInfo, handler grpc.UnaryHandler) (any, error) {
		if !a.Enabled() {
			return handler(ctx, req)
		}
		switch info.FullMethod {
		case monitorpb.MonitorService_Register_FullMethodName:
			host, err := a.requireAgent(ctx)
			if err != nil {
				return nil, err
			}
			if r, _ := req.(*monitorpb.RegisterRequest); r.GetHost().GetHostId() != host {
				return nil, a.mismatch(ctx, host, r.GetHost().GetHostId(), "Register")
			}
		case monitorpb.MonitorService_Heartbeat_FullMethodName:
			host, err := a.requireAgent(ctx)
			if err != nil {
				return nil, err
			}
			if r, _ := req.(*monitorpb.HeartbeatRequest); r.GetHostId() != host {
				return nil, a.mismatch(ctx, host, r.GetHostId(), "Heartbeat")
			}
		case monitorpb.MonitorService_ListHosts_FullMethodName, monitorpb.MonitorService_Latest_FullMethodName,
			monitorpb.MonitorService_QueryRange_FullMethodName:
			if err := a.requireReader(ctx); err != nil {
				return nil, err
			}
		case monitorpb.ClusterService_Status_FullMethodName:
			if err := a.requireAny(ctx); err != nil {
				return nil, err
			}
		default:
			if !strings.HasPrefix(info.FullMethod, "/monitor.v1.ClusterService/") {
				return nil, a.fail(ctx, ReasonUnknown, codes.PermissionDenied, "method %s is not open to any credential", info.FullMethod)
			}
			// The other ClusterService methods authorize themselves.
		}
		return handler(ctx, req)
	}
}

// Stream is the stream server interceptor.
func (a *Authorizer) Stream() grpc.StreamServerInterceptor {
	return func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, handler grpc.StreamHandler) error {
		if !a.Enabled() {
			return handler(srv, ss)
		}
		ctx := ss.Context()
		switch info.FullMethod {
		case monitorpb.MonitorService_Ingest_FullMethodName:
			host, err := a.requireAgent(ctx)
			if err != nil {
				return err
			}
			return handler(srv, &ingestStream{ServerStream: ss, a: a, host: host})
		case monitorpb.MonitorService_Subscribe_FullMethodName:
			if err := a.requireReader(ctx); err != nil {
				return err
			}
		case monitorpb.ClusterService_Watch_FullMethodName:
			if err := a.requireAny(ctx); err != nil {
				return err
			}
		default:
			if !strings.HasPrefix(info.FullMethod, "/monitor.v1.ClusterService/") {
				return a.fail(ctx, ReasonUnknown, codes.PermissionDenied, "method %s is not open to any credential", info.FullMethod)
			}
		}
		return handler(srv, ss)
	}
}

// ingestStream checks every received batch's host ids.
type ingestStream struct {
	grpc.ServerStream
	a    *Authorizer
	host string
}

func (s *ingestStream) RecvMsg(m any) error {
	if err := s.ServerStream.RecvMsg(m); err != nil {
		return err
	}
	switch req := m.(type) {
	case *monitorpb.IngestRequest:
		b := req.GetBatch()
		for i, snap := range b.GetSnapshots() {
			if snap.GetHostId() != s.host {
				return s.a.mismatch(s.Context(), s.host, snap.GetHostId(), fmt.Sprintf("snapshot %d of batch %d; the batch is not stored", i, b.GetSeq()))
			}
		}
	case HostBatch:
		seq, ok := req.BatchSeq()
		if !ok {
			return nil // a Hello
		}
		for i, host := range req.SnapshotHosts() {
			if host != s.host {
				return s.a.mismatch(s.Context(), s.host, host, fmt.Sprintf("snapshot %d of batch %d; the batch is not stored", i, seq))
			}
		}
	default:
		// A message type this check cannot read would pass unchecked: refuse
		// it, so a new decoder cannot silently turn host binding off.
		return status.Errorf(codes.Internal, "authz: ingest message type %T is not checked for its host ids; refusing it", m)
	}
	return nil
}

// HostBatch is an ingest message decoded by the broker's own decoder
// (ingest.Request) rather than the generated type: the stream check reads
// its snapshots' host ids through it.
type HostBatch interface {
	// BatchSeq is the batch's sequence number; false when the message
	// carries no batch (a Hello).
	BatchSeq() (uint64, bool)
	// SnapshotHosts yields each snapshot's index and host id.
	SnapshotHosts() iter.Seq2[int, string]
}
