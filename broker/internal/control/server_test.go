package control

import (
	"context"
	"net"
	"testing"
	"time"

	"google.golang.org/grpc"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/credentials/insecure"
	"google.golang.org/grpc/status"

	monitorpb "github.com/monitorhq/monitor/proto"
)

var testCreds = Credentials{Secret: "cluster-secret-for-tests-0123456789", AdminUser: "admin", AdminPassword: "admin-pw"}

type broker struct {
	node   *Node
	srv    *Server
	grpc   *grpc.Server
	member *monitorpb.Member
}

func startBroker(t *testing.T, id string, bootstrap bool) *broker {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	node, err := Start(NodeConfig{ID: id, BindAddr: "127.0.0.1:0", DataDir: t.TempDir(), HeartbeatTimeout: 500 * time.Millisecond, ElectionTimeout: time.Second, Bootstrap: bootstrap}, quiet)
	if err != nil {
		t.Fatal(err)
	}
	b := &broker{node: node, member: &monitorpb.Member{Id: id, GrpcAddr: lis.Addr().String(), RaftAddr: node.Addr()}}
	b.srv = NewServer(node, b.member, testCreds, ServerOptions{}, quiet)
	b.grpc = grpc.NewServer()
	monitorpb.RegisterClusterServiceServer(b.grpc, b.srv)
	go func() { _ = b.grpc.Serve(lis) }()
	t.Cleanup(func() {
		b.grpc.Stop()
		b.srv.Close()
		node.Shutdown()
	})
	return b
}

func client(t *testing.T, addr string) monitorpb.ClusterServiceClient {
	t.Helper()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { conn.Close() })
	return monitorpb.NewClusterServiceClient(conn)
}

func TestJoinForwardStatusRemove(t *testing.T) {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	defer cancel()
	b1 := startBroker(t, "b1", true)
	// The first node records itself once it leads (the broker does this on
	// its leadership notification).
	for !b1.node.IsLeader() {
		select {
		case <-b1.node.LeadershipChanges():
		case <-time.After(100 * time.Millisecond):
		}
	}
	if err := b1.srv.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_PUT_MEMBER, b1.member); err != nil {
		t.Fatal(err)
	}
	b2 := startBroker(t, "b2", false)
	if err := JoinCluster(ctx, b1.member.GrpcAddr, b2.member, testCreds.Secret); err != nil {
		t.Fatal(err)
	}
	b3 := startBroker(t, "b3", false)
	// Join through a follower: it forwards to the leader.
	if err := JoinCluster(ctx, b2.member.GrpcAddr, b3.member, testCreds.Secret); err != nil {
		t.Fatal(err)
	}
	if err := JoinCluster(ctx, b2.member.GrpcAddr, &monitorpb.Member{Id: "evil", GrpcAddr: "x:1", RaftAddr: "x:2"}, "wrong"); status.Code(errorsCause(err)) != codes.PermissionDenied {
		t.Fatalf("join with a wrong secret: %v", err)
	}

	// A write on a follower is forwarded to the leader and replicated.
	if err := b3.srv.Apply(ctx, monitorpb.CommandType_COMMAND_TYPE_PUT_SETTING, &monitorpb.Setting{Key: "retention", Value: "7d"}); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool {
		for _, b := range []*broker{b1, b2, b3} {
			if v, _ := b.node.FSM().Setting("retention"); v != "7d" {
				return false
			}
		}
		return true
	})

	st, err := client(t, b3.member.GrpcAddr).Status(ctx, &monitorpb.StatusRequest{})
	if err != nil {
		t.Fatal(err)
	}
	if st.GetLeaderId() != "b1" || len(st.GetMembers()) != 3 || st.GetTerm() == 0 || st.GetNodeId() != "b3" {
		t.Fatalf("status: %v", st)
	}
	for _, m := range st.GetMembers() {
		if m.GetMember().GetGrpcAddr() == "" || !m.GetVoter() {
			t.Fatalf("member without gRPC address or not a voter: %v", m)
		}
	}

	c := client(t, b2.member.GrpcAddr)
	if _, err := c.RemoveBroker(ctx, &monitorpb.RemoveMember{Id: "b3"}); status.Code(err) != codes.Unauthenticated {
		t.Fatalf("remove without credentials: %v", err)
	}
	if _, err := c.RemoveBroker(BrokerAuth(ctx, testCreds.Secret), &monitorpb.RemoveMember{Id: "b3"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("remove with the broker secret (not admin): %v", err)
	}
	if _, err := c.RemoveBroker(AdminAuth(ctx, "admin", "nope"), &monitorpb.RemoveMember{Id: "b3"}); status.Code(err) != codes.PermissionDenied {
		t.Fatalf("remove with a wrong password: %v", err)
	}
	st, err = c.RemoveBroker(AdminAuth(ctx, "admin", "admin-pw"), &monitorpb.RemoveMember{Id: "b3"})
	if err != nil {
		t.Fatal(err)
	}
	if len(st.GetMembers()) != 2 {
		t.Fatalf("after removal: %v", st)
	}
}

func errorsCause(err error) error {
	for err != nil {
		if _, ok := status.FromError(err); ok {
			return err
		}
		u, ok := err.(interface{ Unwrap() error })
		if !ok {
			return err
		}
		err = u.Unwrap()
	}
	return err
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met within 10 s")
		}
		time.Sleep(10 * time.Millisecond)
	}
}
