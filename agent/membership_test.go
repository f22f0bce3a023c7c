package agent

import (
	"fmt"
	"log/slog"
	"slices"
	"strings"
	"sync"
	"testing"

	"google.golang.org/grpc"

	"github.com/monitorhq/monitor/pkg/hash"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// fakeCluster is the broker cluster's membership as ClusterService.Watch
// serves it: the current member list at once and again on every change,
// on every broker that serves it.
type fakeCluster struct {
	monitorpb.UnimplementedClusterServiceServer
	mu      sync.Mutex
	members []string // gRPC addresses; the first leads
	changed chan struct{}
}

func newFakeCluster(members ...string) *fakeCluster {
	return &fakeCluster{members: members, changed: make(chan struct{})}
}

// set replaces the member list and pushes it to every Watch stream.
func (c *fakeCluster) set(members ...string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members = members
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *fakeCluster) Watch(_ *monitorpb.StatusRequest, stream grpc.ServerStreamingServer[monitorpb.StatusResponse]) error {
	for {
		c.mu.Lock()
		resp := &monitorpb.StatusResponse{}
		for i, addr := range c.members {
			resp.Members = append(resp.Members, &monitorpb.MemberStatus{
				Member: &monitorpb.Member{Id: fmt.Sprintf("b%d", i), GrpcAddr: addr, RaftAddr: "raft-" + addr}, Voter: true, Leader: i == 0})
		}
		changed := c.changed
		c.mu.Unlock()
		if err := stream.Send(resp); err != nil {
			return err
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// logLines tees an agent's log to t.Log and keeps it for assertions.
type logLines struct {
	t  testing.TB
	mu sync.Mutex
	b  strings.Builder
}

func (l *logLines) Write(p []byte) (int, error) {
	l.t.Log(strings.TrimRight(string(p), "\n"))
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logLines) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// TestFollowsMembershipToTheBrokerTheRingPrefers runs an agent configured
// with one broker, A, whose cluster lists only A. Then B joins and the ring
// of brokers gives the host to B while two batches wait at A for their
// acks: the agent sends nothing new, waits for those acks, half-closes A's
// stream and continues on B. Then B leaves and the agent moves back to A
// the same way. Every snapshot is stored exactly once across the moves.
func TestFollowsMembershipToTheBrokerTheRingPrefers(t *testing.T) {
	cluster := newFakeCluster()
	a := startClusterBroker(t, "127.0.0.1:0", cluster)
	b := startClusterBroker(t, "127.0.0.1:0", cluster)
	cluster.set(a.addr)
	host := ""
	ring, err := hash.New([]string{a.addr, b.addr}, hash.DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; host == ""; i++ {
		if h := fmt.Sprintf("moving-host-%d", i); ring.Lookup(h) == b.addr {
			host = h
		}
	}
	cfg := testConfig(a.addr)
	cfg.HostID = host
	cfg.BatchMaxSnapshots = 1 // one batch per snapshot: two in flight below
	logs := &logLines{t: t}
	h := startLogged(t, cfg, slog.New(slog.NewTextHandler(logs, &slog.HandlerOptions{Level: slog.LevelInfo})), &fake{name: "fast"})
	connectedTo := func(addr string) func() bool {
		return func() bool { s := h.a.Stats(); return s.Connected && s.Broker == addr }
	}

	for range 3 {
		h.tick()
	}
	waitFor(t, "3 acks from A", func() bool { return h.a.Stats().Acked == 3 })

	// A holds its acks; two snapshots go out and wait.
	gate := make(chan struct{})
	a.with(func(f *fakeBroker) { f.holdAcks = gate })
	h.tick()
	h.tick()
	waitFor(t, "2 batches sent and held at A", func() bool { s := h.a.Stats(); return s.BatchesSent == 5 && s.Acked == 3 })

	cluster.set(a.addr, b.addr) // B joins; the ring now prefers B for this host
	waitFor(t, "the handover to begin with the 2 batches in flight", func() bool {
		return logs.count(`msg="handing the stream over`) == 1 && logs.count("in_flight=2") == 1
	})
	if order := h.a.up.Order(); !slices.Equal(order, ring.Preference(host)) {
		t.Fatalf("uplink order %v, want the ring's %v", order, ring.Preference(host))
	}
	h.tick() // collected while the batches are in flight: waits in the spool
	waitFor(t, "6 snapshots spooled", func() bool { return h.a.Stats().Spool.Records == 3 })
	if n := h.a.Stats().BatchesSent; n != 5 {
		t.Errorf("%d batches sent while handing over; want no new one", n)
	}
	a.with(func(f *fakeBroker) { f.holdAcks = nil })
	close(gate)
	waitFor(t, "6 acks", func() bool { return h.a.Stats().Acked == 6 })
	waitFor(t, "streaming to B", connectedTo(b.addr))
	h.tick()
	waitFor(t, "7 acks", func() bool { return h.a.Stats().Acked == 7 })
	a.with(func(f *fakeBroker) {
		if f.agentClosed != 1 {
			t.Errorf("A's stream half-closed %d times, want 1", f.agentClosed)
		}
	})

	cluster.set(a.addr) // B leaves
	waitFor(t, "streaming to A again", connectedTo(a.addr))
	h.tick()
	h.tick()
	waitFor(t, "9 acks", func() bool { s := h.a.Stats(); return s.Acked == 9 && s.Buffered == 0 })
	b.with(func(f *fakeBroker) {
		if f.agentClosed != 1 {
			t.Errorf("B's stream half-closed %d times, want 1", f.agentClosed)
		}
	})

	atA, atB := a.storedStamps(), b.storedStamps()
	if want := append(stampsFrom(h.base, 1, 5), stampsFrom(h.base, 8, 9)...); !slices.Equal(atA, want) {
		t.Errorf("A stored %v, want %v", atA, want)
	}
	if want := stampsFrom(h.base, 6, 7); !slices.Equal(atB, want) {
		t.Errorf("B stored %v, want %v", atB, want)
	}
	st := h.a.Stats()
	if st.Moves != 2 || st.Reconnects != 0 || st.Acked != 9 || st.Sent != 9 {
		t.Errorf("stats: moves %d reconnects %d acked %d sent %d; want 2, 0, 9, 9 (nothing sent twice)", st.Moves, st.Reconnects, st.Acked, st.Sent)
	}
	for reason, n := range st.Dropped {
		if n != 0 {
			t.Errorf("dropped %d for %s", n, reason)
		}
	}
}

// TestFollowMembershipOff keeps the configured list whatever the cluster
// says.
func TestFollowMembershipOff(t *testing.T) {
	cluster := newFakeCluster()
	a := startClusterBroker(t, "127.0.0.1:0", cluster)
	other := deadAddr(t)
	cluster.set(a.addr, other)
	cfg := testConfig(a.addr)
	cfg.FollowMembership = false
	h := start(t, cfg, &fake{name: "fast"})
	h.tick()
	waitFor(t, "1 ack", func() bool { return h.a.Stats().Acked == 1 })
	if got := h.a.up.Order(); !slices.Equal(got, []string{a.addr}) {
		t.Fatalf("order %v with follow_membership off", got)
	}
}
