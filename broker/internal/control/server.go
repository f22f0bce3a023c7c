package control

import (
	"context"
	"crypto/subtle"
	"encoding/base64"
	"errors"
	"fmt"
	"log/slog"
	"strings"
	"sync"
	"time"

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

// Server is the ClusterService of one broker, over its Raft node.
type Server struct {
	monitorpb.UnimplementedClusterServiceServer

	node  *Node
	self  *monitorpb.Member
	creds Credentials
	log   *slog.Logger

	mu    sync.Mutex
	conns map[string]*grpc.ClientConn // by gRPC address of other members
}

// NewServer serves the cluster API for node; self is this broker's record.
func NewServer(node *Node, self *monitorpb.Member, creds Credentials, logger *slog.Logger) *Server {
	return &Server{node: node, self: self, creds: creds, log: logger, conns: map[string]*grpc.ClientConn{}}
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

// leaderClient returns a client of the current leader's ClusterService.
func (s *Server) leaderClient() (monitorpb.ClusterServiceClient, error) {
	id, _ := s.node.Leader()
	if id == "" {
		return nil, status.Error(codes.Unavailable, "no raft leader elected yet; retry")
	}
	var addr string
	for _, m := range s.node.FSM().State().GetMembers() {
		if m.GetId() == id {
			addr = m.GetGrpcAddr()
		}
	}
	if addr == "" {
		return nil, status.Errorf(codes.Unavailable, "leader %s has no registered gRPC address yet; retry", id)
	}
	s.mu.Lock()
	defer s.mu.Unlock()
	c, ok := s.conns[addr]
	if !ok {
		var err error
		c, err = grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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

func (s *Server) status() (*monitorpb.StatusResponse, error) {
	rs, err := s.node.Status()
	if err != nil {
		return nil, status.Error(codes.Unavailable, err.Error())
	}
	st := s.node.FSM().State()
	out := &monitorpb.StatusResponse{
		NodeId: rs.ID, LeaderId: rs.LeaderID, Term: rs.Term, CommitIndex: rs.CommitIndex,
		AppliedIndex: rs.AppliedIndex, RingVersion: st.GetRingVersion(), Shards: st.GetShards(), State: rs.State,
	}
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
	return out, nil
}

// JoinCluster asks the member at addr (its gRPC address) to add self,
// retrying while the cluster has no leader or addr is not up yet.
func JoinCluster(ctx context.Context, addr string, self *monitorpb.Member, secret string) error {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
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
	switch {
	case err == nil:
		return nil
	case errors.As(err, &nl):
		return status.Error(codes.Unavailable, err.Error())
	case errors.Is(err, context.DeadlineExceeded):
		return status.Error(codes.DeadlineExceeded, err.Error())
	}
	if _, ok := status.FromError(err); ok {
		return err
	}
	return status.Error(codes.Internal, err.Error())
}
