package control

import (
	"context"
	"crypto/rand"
	"crypto/subtle"
	"encoding/base64"
	"encoding/hex"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"slices"
	"strings"
	"sync"
	"time"

	"github.com/monitorhq/monitor/pkg/hash"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/metadata"
	"google.golang.org/grpc/status"
	"google.golang.org/protobuf/proto"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// Credentials guard the cluster API. Secret is shared by the brokers (Join,
// Forward); the admin user and password authorize admin RPCs (and Join).
type Credentials struct {
	Secret        string
	AdminUser     string
	AdminPassword string
}

// ServerOptions are the parts of the broker the cluster API needs.
type ServerOptions struct {
	// VirtualNodes of the storage ring (for shard host counts).
	VirtualNodes int
	// CheckShard connects to a shard about to join the ring (with this
	// broker's credentials for it) and reports why it cannot be used; nil
	// skips the check.
	CheckShard func(ctx context.Context, s *monitorpb.Shard) error
	// WatchInterval is the least time between two statuses of a Watch
	// stream (changes in between are coalesced); default 250 ms.
	WatchInterval time.Duration
	// DialOptions reach the other members' gRPC servers (forwarding to the
	// leader); they must include the transport credentials (TLS when the
	// brokers serve TLS). Default: plaintext.
	DialOptions []grpc.DialOption
}

// Server is the ClusterService of one broker, over its Raft node.
type Server struct {
	monitorpb.UnimplementedClusterServiceServer

	node  *Node
	self  *monitorpb.Member
	creds Credentials
	opts  ServerOptions
	log   *slog.Logger

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by gRPC address of other members

	quit     chan struct{} // closed by Drain: Watch streams end
	quitOnce sync.Once

	cacheMu  sync.Mutex
	cached   *monitorpb.StatusResponse
	cacheKey statusKey
}

// Drain ends the Watch streams (before a graceful gRPC stop, which waits
// for every stream).
func (s *Server) Drain() { s.quitOnce.Do(func() { close(s.quit) }) }

// NewServer serves the cluster API for node; self is this broker's record.
func NewServer(node *Node, self *monitorpb.Member, creds Credentials, opts ServerOptions, logger *slog.Logger) *Server {
	if opts.VirtualNodes <= 0 {
		opts.VirtualNodes = hash.DefaultVirtualNodes
	}
	if opts.WatchInterval <= 0 {
		opts.WatchInterval = 250 * time.Millisecond
	}
	if len(opts.DialOptions) == 0 {
		opts.DialOptions = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	return &Server{node: node, self: self, creds: creds, opts: opts, log: logger, conns: map[string]*grpc.ClientConn{},
		quit: make(chan struct{})}
}

// Close closes connections to other members.
func (s *Server) Close() {
	s.mu.Lock()
	defer s.mu.Unlock()
	for _, c := range s.conns {
		c.Close()
	}
	s.conns = map[string]*grpc.ClientConn{}
}

// auth levels
const (
	authBroker = iota // the cluster secret or admin
	authAdmin         // admin only
)

func (s *Server) authorize(ctx context.Context, level int) error {
	md, _ := metadata.FromIncomingContext(ctx)
	vals := md.Get("authorization")
	if len(vals) == 0 {
		return status.Error(codes.Unauthenticated, "missing authorization metadata")
	}
	v := vals[0]
	if tok, ok := strings.CutPrefix(v, "Bearer "); ok && level == authBroker && s.creds.Secret != "" {
		if subtle.ConstantTimeCompare([]byte(tok), []byte(s.creds.Secret)) == 1 {
			return nil
		}
	}
	if b64, ok := strings.CutPrefix(v, "Basic "); ok && s.creds.AdminPassword != "" {
		raw, err := base64.StdEncoding.DecodeString(b64)
		if err == nil {
			user, pass, _ := strings.Cut(string(raw), ":")
			u := subtle.ConstantTimeCompare([]byte(user), []byte(s.creds.AdminUser))
			p := subtle.ConstantTimeCompare([]byte(pass), []byte(s.creds.AdminPassword))
			if u&p == 1 {
				return nil
			}
		}
	}
	return status.Error(codes.PermissionDenied, "credentials refused")
}

// BrokerAuth returns the metadata a broker sends to other brokers.
func BrokerAuth(ctx context.Context, secret string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Bearer "+secret)
}

// AdminAuth returns the metadata an admin client sends.
func AdminAuth(ctx context.Context, user, password string) context.Context {
	return metadata.AppendToOutgoingContext(ctx, "authorization", "Basic "+base64.StdEncoding.EncodeToString([]byte(user+":"+password)))
}

// leaderGRPC is the current leader's id and gRPC address ("" when unknown).
func (s *Server) leaderGRPC() (id, addr string) {
	id, _ = s.node.Leader()
	if id == "" {
		return "", ""
	}
	for _, m := range s.node.FSM().State().GetMembers() {
		if m.GetId() == id {
			return id, m.GetGrpcAddr()
		}
	}
	return id, ""
}

// leaderClient returns a client of the current leader's ClusterService.
func (s *Server) leaderClient() (monitorpb.ClusterServiceClient, error) {
	id, addr := s.leaderGRPC()
	if id == "" {
		return nil, status.Error(codes.Unavailable, "no raft leader elected yet; retry")
	}
	if addr == "" {
		return nil, status.Errorf(codes.Unavailable, "leader %s has no registered gRPC address yet; retry", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.conns[addr]
	if !ok {
		var err error
		c, err = grpc.NewClient(addr, s.opts.DialOptions...)
		if err != nil {
			return nil, status.Errorf(codes.Unavailable, "dial leader %s at %s: %v", id, addr, err)
		}
		s.conns[addr] = c
	}
	return monitorpb.NewClusterServiceClient(c), nil
}

// Apply writes a control-plane command: on the leader directly, on a
// follower by forwarding to the leader. While there is no leader (an
// election) or this node does not know the leader's address yet (its log
// is catching up), it retries until ctx ends.
func (s *Server) Apply(ctx context.Context, typ monitorpb.CommandType, msg proto.Message) error {
	entry, err := Encode(typ, msg)
	if err != nil {
		return err
	}
	backoff := 20 * time.Millisecond
	for {
		err := s.node.ApplyRaw(ctx, entry)
		if errors.Is(err, ErrNotLeader) {
			var c monitorpb.ClusterServiceClient
			if c, err = s.leaderClient(); err == nil {
				_, err = c.Forward(BrokerAuth(ctx, s.creds.Secret), &monitorpb.ForwardRequest{Entry: entry})
			}
			if status.Code(err) != codes.Unavailable {
				return err
			}
		} else {
			return err
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("control write: %w (last error: %v)", ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 500*time.Millisecond)
	}
}

// Forward applies an entry a follower received.
func (s *Server) Forward(ctx context.Context, req *monitorpb.ForwardRequest) (*monitorpb.ForwardResponse, error) {
	if err := s.authorize(ctx, authBroker); err != nil {
		return nil, err
	}
	if err := s.node.ApplyRaw(ctx, req.GetEntry()); err != nil {
		return nil, toStatus(err)
	}
	return &monitorpb.ForwardResponse{}, nil
}

// Join adds a broker as a voter and records it as a member.
func (s *Server) Join(ctx context.Context, req *monitorpb.JoinRequest) (*monitorpb.JoinResponse, error) {
	if err := s.authorize(ctx, authBroker); err != nil {
		return nil, err
	}
	m := req.GetMember()
	if m.GetId() == "" || m.GetRaftAddr() == "" || m.GetGrpcAddr() == "" {
		return nil, status.Error(codes.InvalidArgument, "join needs the member's id, raft_addr and grpc_addr")
	}
	if !s.node.IsLeader() {
		c, err := s.leaderClient()
		if err != nil {
			return nil, err
		}
		return c.Join(BrokerAuth(ctx, s.creds.Secret), req)
	}
	if err := s.node.AddVoter(ctx, m.GetId(), m.GetRaftAddr()); err != nil {
		return nil, toStatus(fmt.Errorf("add voter %s: %w", m.GetId(), err))
	}
	if err := s.node.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_PUT_MEMBER, m); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("broker joined the cluster", "id", m.GetId(), "raft", m.GetRaftAddr(), "grpc", m.GetGrpcAddr())
	st, err := s.status()
	return &monitorpb.JoinResponse{Status: st}, err
}

// RemoveBroker removes a member (admin).
func (s *Server) RemoveBroker(ctx context.Context, req *monitorpb.RemoveMember) (*monitorpb.StatusResponse, error) {
	if err := s.authorize(ctx, authAdmin); err != nil {
		return nil, err
	}
	if !s.node.IsLeader() {
		c, err := s.leaderClient()
		if err != nil {
			return nil, err
		}
		md, _ := metadata.FromIncomingContext(ctx)
		return c.RemoveBroker(metadata.NewOutgoingContext(ctx, md), req)
	}
	if err := s.node.RemoveServer(ctx, req.GetId()); err != nil {
		return nil, toStatus(fmt.Errorf("remove %s: %w", req.GetId(), err))
	}
	if err := s.node.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_REMOVE_MEMBER, req); err != nil {
		return nil, toStatus(err)
	}
	return s.status()
}

// Status reports the cluster as this node sees it.
func (s *Server) Status(ctx context.Context, _ *monitorpb.StatusRequest) (*monitorpb.StatusResponse, error) {
	return s.status()
}

// status builds the status once per applied index, term and leader, and
// shares it: every agent and visualization server holds a Watch stream, so
// a change must not cost a pass over the registry per stream. Callers must
// not modify the result.
func (s *Server) status() (*monitorpb.StatusResponse, error) {
	rs, err := s.node.Status()
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	// Raft's applied index moves a moment after the FSM has applied (and
	// the writer was answered), so the FSM's own index is in the key too.
	key := statusKey{applied: rs.AppliedIndex, fsm: s.node.FSM().AppliedIndex(), term: rs.Term, leader: rs.LeaderID, state: rs.State}
	s.cacheMu.Lock()
	defer s.cacheMu.Unlock()
	if s.cached != nil && s.cacheKey == key {
		if s.cached.GetCommitIndex() != rs.CommitIndex {
			c := proto.Clone(s.cached).(*monitorpb.StatusResponse)
			c.CommitIndex = rs.CommitIndex
			s.cached = c
		}
		return s.cached, nil
	}
	st := s.node.FSM().Cluster()
	out := &monitorpb.StatusResponse{
		NodeId: rs.ID, LeaderId: rs.LeaderID, Term: rs.Term, CommitIndex: rs.CommitIndex,
		AppliedIndex: rs.AppliedIndex, RingVersion: st.GetRingVersion(), Shards: st.GetShards(), State: rs.State,
		Migration: st.GetMigration(), ShardHosts: s.node.FSM().ShardHosts(s.opts.VirtualNodes),
	}
	_, out.LeaderGrpcAddr = s.leaderGRPC()
	members := map[string]*monitorpb.Member{}
	for _, m := range st.GetMembers() {
		members[m.GetId()] = m
	}
	for _, srv := range rs.Servers {
		m := members[srv.ID]
		if m == nil {
			m = &monitorpb.Member{Id: srv.ID, RaftAddr: srv.Addr}
		}
		out.Members = append(out.Members, &monitorpb.MemberStatus{Member: m, Voter: srv.Voter, Leader: srv.ID == rs.LeaderID})
	}
	s.cached, s.cacheKey = out, key
	return out, nil
}

type statusKey struct {
	applied, fsm, term uint64
	leader, state      string
}

// sameView reports whether two statuses differ only in their indexes (a
// Watch stream does not resend for those).
func sameView(a, b *monitorpb.StatusResponse) bool {
	if a == nil || b == nil {
		return false
	}
	x, y := proto.Clone(a).(*monitorpb.StatusResponse), proto.Clone(b).(*monitorpb.StatusResponse)
	x.CommitIndex, x.AppliedIndex, y.CommitIndex, y.AppliedIndex = 0, 0, 0, 0
	return proto.Equal(x, y)
}

// JoinCluster asks the member at addr (its gRPC address) to add self,
// retrying while the cluster has no leader or addr is not up yet. dial
// holds the transport credentials (default plaintext).
func JoinCluster(ctx context.Context, addr string, self *monitorpb.Member, secret string, dial ...grpc.DialOption) error {
	if len(dial) == 0 {
		dial = []grpc.DialOption{grpc.WithTransportCredentials(insecure.NewCredentials())}
	}
	conn, err := grpc.NewClient(addr, dial...)
	if err != nil {
		return fmt.Errorf("join via %s: %w", addr, err)
	}
	defer conn.Close()
	c := monitorpb.NewClusterServiceClient(conn)
	backoff := 100 * time.Millisecond
	for {
		rctx, cancel := context.WithTimeout(ctx, 10*time.Second)
		_, err := c.Join(BrokerAuth(rctx, secret), &monitorpb.JoinRequest{Member: self})
		cancel()
		if err == nil {
			return nil
		}
		if code := status.Code(err); code == codes.PermissionDenied || code == codes.Unauthenticated || code == codes.InvalidArgument {
			return fmt.Errorf("join via %s: %w", addr, err)
		}
		select {
		case <-ctx.Done():
			return fmt.Errorf("join via %s: %w (last error: %v)", addr, ctx.Err(), err)
		case <-time.After(backoff):
		}
		backoff = min(2*backoff, 2*time.Second)
	}
}

func toStatus(err error) error {
	var nl *NotLeaderError
	var rej *RejectedError
	switch {
	case err == nil:
		return nil
	case errors.As(err, &nl):
		return status.Error(codes.Unavailable, err.Error())
	case errors.As(err, &rej):
		return status.Error(codes.FailedPrecondition, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}

// ShardHosts counts the registered hosts each shard of the current ring
// owns (the ring's choice for the host id, as the storage computes it).
func ShardHosts(st *monitorpb.ControlState, vnodes int) map[string]uint64 {
	ids := RingOf(st.GetShards())
	if len(ids) == 0 {
		return nil
	}
	ring, err := hash.New(ids, vnodes)
	if err != nil {
		return nil
	}
	out := make(map[string]uint64, len(ids))
	for _, id := range ids {
		out[id] = 0
	}
	for _, h := range st.GetHosts() {
		out[ring.Lookup(h.GetHostId())]++
	}
	return out
}

// Watch streams the status now and after every change of the replicated
// state or of the leader, at most one per WatchInterval.
func (s *Server) Watch(_ *monitorpb.StatusRequest, stream monitorpb.ClusterService_WatchServer) error {
	ctx := stream.Context()
	var last *monitorpb.StatusResponse
	for {
		fsmCh, leaderCh := s.node.FSM().Changed(), s.node.LeaderChanged()
		st, err := s.status()
		if err != nil {
			return err
		}
		if !sameView(st, last) {
			if err := stream.Send(st); err != nil {
				return err
			}
			last = st
		}
		select {
		case <-ctx.Done():
			return nil
		case <-s.quit:
			return status.Error(codes.Unavailable, "broker shutting down; watch another broker")
		case <-s.node.done:
			return status.Error(codes.Unavailable, "broker shutting down; watch another broker")
		case <-fsmCh:
		case <-leaderCh:
		}
		select {
		case <-ctx.Done():
			return nil
		case <-time.After(s.opts.WatchInterval):
		}
	}
}

// forwardAdmin runs an admin RPC on the leader when this node is not it,
// passing the caller's credentials along.
func forwardAdmin[Req, Resp any](ctx context.Context, s *Server, req Req, rpc func(monitorpb.ClusterServiceClient, context.Context, Req, ...grpc.CallOption) (Resp, error)) (Resp, bool, error) {
	var zero Resp
	if s.node.IsLeader() {
		return zero, false, nil
	}
	c, err := s.leaderClient()
	if err != nil {
		return zero, true, err
	}
	md, _ := metadata.FromIncomingContext(ctx)
	resp, err := rpc(c, metadata.NewOutgoingContext(ctx, md), req)
	return resp, true, err
}

// AddShard puts a shard on the ring (or updates its addresses) after
// checking that the leader can reach it.
func (s *Server) AddShard(ctx context.Context, req *monitorpb.Shard) (*monitorpb.StatusResponse, error) {
	if err := s.authorize(ctx, authAdmin); err != nil {
		return nil, err
	}
	if resp, forwarded, err := forwardAdmin(ctx, s, req, monitorpb.ClusterServiceClient.AddShard); forwarded {
		return resp, err
	}
	if err := validateShard(req); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	req.Draining = false
	if s.opts.CheckShard != nil {
		if err := s.opts.CheckShard(ctx, req); err != nil {
			return nil, status.Errorf(codes.FailedPrecondition, "shard %s: %v", req.GetId(), err)
		}
	}
	if err := s.node.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_PUT_SHARD, req); err != nil {
		return nil, toStatus(err)
	}
	s.log.Info("storage shard added", "shard", req.GetId(), "addrs", req.GetAddrs(), "ring_version", s.node.FSM().State().GetRingVersion())
	return s.status()
}

func validateShard(sh *monitorpb.Shard) error {
	switch {
	case sh.GetId() == "":
		return errors.New("shard id is empty")
	case strings.ContainsAny(sh.GetId(), " \t\n"):
		return fmt.Errorf("shard id %q contains white space", sh.GetId())
	case len(sh.GetAddrs()) == 0:
		return fmt.Errorf("shard %s has no address", sh.GetId())
	case sh.GetDb() < 0 || sh.GetDb() > 15:
		return fmt.Errorf("shard %s: db %d is not in 0..15", sh.GetId(), sh.GetDb())
	case sh.GetCluster() && sh.GetDb() != 0:
		return fmt.Errorf("shard %s is a Redis Cluster, which has only db 0", sh.GetId())
	}
	return nil
}

// RemoveStorageShard starts draining a shard: it leaves the ring at once
// (its hosts move to the others) and the cluster when the move is done.
func (s *Server) RemoveStorageShard(ctx context.Context, req *monitorpb.RemoveShard) (*monitorpb.StatusResponse, error) {
	if err := s.authorize(ctx, authAdmin); err != nil {
		return nil, err
	}
	if resp, forwarded, err := forwardAdmin(ctx, s, req, monitorpb.ClusterServiceClient.RemoveStorageShard); forwarded {
		return resp, err
	}
	var cur *monitorpb.Shard
	for _, sh := range s.node.FSM().State().GetShards() {
		if sh.GetId() == req.GetId() {
			cur = proto.Clone(sh).(*monitorpb.Shard)
		}
	}
	if cur == nil {
		return nil, status.Errorf(codes.NotFound, "no storage shard %q", req.GetId())
	}
	if !cur.GetDraining() {
		cur.Draining = true
		if err := s.node.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_PUT_SHARD, cur); err != nil {
			return nil, toStatus(err)
		}
		s.log.Info("storage shard draining", "shard", cur.GetId(), "ring_version", s.node.FSM().State().GetRingVersion())
	}
	return s.status()
}

// PutAlertRule stores a rule (the visualization server with the cluster
// secret, or an admin). An empty id gets a new one.
func (s *Server) PutAlertRule(ctx context.Context, r *monitorpb.AlertRule) (*monitorpb.AlertRule, error) {
	if err := s.authorize(ctx, authBroker); err != nil {
		return nil, err
	}
	if err := ValidateAlertRule(r); err != nil {
		return nil, status.Error(codes.InvalidArgument, err.Error())
	}
	if r.GetId() == "" {
		var b [8]byte
		_, _ = rand.Read(b[:])
		r.Id = "rule-" + hex.EncodeToString(b[:])
	}
	if err := s.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_PUT_ALERT_RULE, r); err != nil {
		return nil, toStatus(err)
	}
	return r, nil
}

// ValidateAlertRule checks a rule before it enters the log.
func ValidateAlertRule(r *monitorpb.AlertRule) error {
	switch {
	case r.GetMetric() == "":
		return errors.New("alert rule: metric is empty")
	case !slices.Contains([]string{">", ">=", "<", "<="}, r.GetOp()):
		return fmt.Errorf("alert rule: op %q is not one of > >= < <=", r.GetOp())
	case math.IsNaN(r.GetThreshold()) || math.IsInf(r.GetThreshold(), 0):
		return fmt.Errorf("alert rule: threshold %v is not a finite number", r.GetThreshold())
	case r.GetForSeconds() < 0:
		return fmt.Errorf("alert rule: for_seconds %d is negative", r.GetForSeconds())
	case r.GetWebhook() != "" && !strings.HasPrefix(r.GetWebhook(), "http://") && !strings.HasPrefix(r.GetWebhook(), "https://"):
		return errors.New("alert rule: webhook is not an http(s) URL")
	}
	return nil
}

// RemoveAlertRule deletes a rule.
func (s *Server) RemoveAlertRule(ctx context.Context, r *monitorpb.DeleteAlertRule) (*monitorpb.DeleteAlertRuleResponse, error) {
	if err := s.authorize(ctx, authBroker); err != nil {
		return nil, err
	}
	existed := slices.ContainsFunc(s.node.FSM().State().GetAlertRules(), func(x *monitorpb.AlertRule) bool { return x.GetId() == r.GetId() })
	if err := s.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_DELETE_ALERT_RULE, r); err != nil {
		return nil, toStatus(err)
	}
	return &monitorpb.DeleteAlertRuleResponse{Existed: existed}, nil
}

// ListAlertRules lists the rules this member has applied.
func (s *Server) ListAlertRules(ctx context.Context, _ *monitorpb.ListAlertRulesRequest) (*monitorpb.ListAlertRulesResponse, error) {
	if err := s.authorize(ctx, authBroker); err != nil {
		return nil, err
	}
	return &monitorpb.ListAlertRulesResponse{Rules: s.node.FSM().State().GetAlertRules()}, nil
}
