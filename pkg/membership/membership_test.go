package membership

import (
	"context"
	"fmt"
	"log/slog"
	"net"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc"

	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// cluster is the state the fake brokers report; every change is pushed to
// every open Watch stream.
type cluster struct {
	mu      sync.Mutex
	members []*monitorpb.MemberStatus
	changed chan struct{}
}

func newCluster() *cluster { return &cluster{changed: make(chan struct{})} }

// set replaces the members: each is "id=addr", the first is the leader.
func (c *cluster) set(members ...string) {
	var ms []*monitorpb.MemberStatus
	for i, m := range members {
		id, addr, _ := strings.Cut(m, "=")
		ms = append(ms, &monitorpb.MemberStatus{Member: &monitorpb.Member{Id: id, GrpcAddr: addr, RaftAddr: "raft-" + id}, Voter: true, Leader: i == 0})
	}
	c.mu.Lock()
	defer c.mu.Unlock()
	c.members = ms
	close(c.changed)
	c.changed = make(chan struct{})
}

func (c *cluster) status() (*monitorpb.StatusResponse, <-chan struct{}) {
	c.mu.Lock()
	defer c.mu.Unlock()
	resp := &monitorpb.StatusResponse{Members: c.members}
	if len(c.members) > 0 {
		resp.LeaderId = c.members[0].GetMember().GetId()
	}
	return resp, c.changed
}

// fakeBroker serves ClusterService.Watch from a cluster on 127.0.0.1; with
// no cluster it answers Unimplemented.
type fakeBroker struct {
	monitorpb.UnimplementedClusterServiceServer
	c       *cluster
	addr    string
	srv     *grpc.Server
	watches atomic.Int32 // Watch calls, Unimplemented ones too

	endAfterFirst bool // end each stream after its first status
}

func startBroker(t *testing.T, c *cluster) *fakeBroker {
	t.Helper()
	lis, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	f := &fakeBroker{c: c, addr: lis.Addr().String()}
	f.srv = grpc.NewServer(grpc.StreamInterceptor(func(srv any, ss grpc.ServerStream, info *grpc.StreamServerInfo, h grpc.StreamHandler) error {
		f.watches.Add(1)
		return h(srv, ss)
	}))
	monitorpb.RegisterClusterServiceServer(f.srv, f)
	go func() { _ = f.srv.Serve(lis) }()
	t.Cleanup(f.srv.Stop)
	return f
}

func (f *fakeBroker) Watch(req *monitorpb.StatusRequest, stream grpc.ServerStreamingServer[monitorpb.StatusResponse]) error {
	if f.c == nil {
		return f.UnimplementedClusterServiceServer.Watch(req, stream)
	}
	for {
		resp, changed := f.c.status()
		if err := stream.Send(resp); err != nil {
			return err
		}
		if f.endAfterFirst {
			return nil
		}
		select {
		case <-changed:
		case <-stream.Context().Done():
			return nil
		}
	}
}

// deadAddr returns a loopback address nothing listens on.
func deadAddr(t *testing.T) string {
	t.Helper()
	l, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	defer l.Close()
	return l.Addr().String()
}

// logBuffer collects log output for assertions.
type logBuffer struct {
	mu sync.Mutex
	b  strings.Builder
}

func (l *logBuffer) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuffer) count(s string) int {
	l.mu.Lock()
	defer l.mu.Unlock()
	return strings.Count(l.b.String(), s)
}

// run starts w.Run and stops it at test end.
func run(t *testing.T, seeds []string, opts Options) *Watcher {
	t.Helper()
	if opts.Retry == 0 {
		opts.Retry = 10 * time.Millisecond
	}
	w, err := New(seeds, opts)
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- w.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
	})
	return w
}

// next waits for the next published list whose addresses are want.
func next(t *testing.T, w *Watcher, want ...string) []Broker {
	t.Helper()
	slices.Sort(want)
	deadline := time.After(10 * time.Second)
	for {
		select {
		case list := <-w.Updates():
			if slices.Equal(addrs(list), want) {
				return list
			}
		case <-deadline:
			t.Fatalf("no list %v published; current %v", want, w.Brokers())
		}
	}
}

func waitFor(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		<-time.After(5 * time.Millisecond)
	}
}

func TestLearnsListFromOneSeed(t *testing.T) {
	c := newCluster()
	a := startBroker(t, c)
	c.set("b2=10.0.0.2:9093", "a="+a.addr, "nogrpc=", "b3=10.0.0.3:9093")
	w := run(t, []string{a.addr}, Options{})
	if got := w.Brokers(); len(got) != 1 || got[0] != (Broker{Addr: a.addr}) {
		t.Fatalf("before any answer Brokers() = %v, want the seed", got)
	}
	list := next(t, w, a.addr, "10.0.0.2:9093", "10.0.0.3:9093")
	want := []Broker{{ID: "b2", Addr: "10.0.0.2:9093", Leader: true}, {ID: "b3", Addr: "10.0.0.3:9093"}, {ID: "a", Addr: a.addr}}
	slices.SortFunc(want, func(x, y Broker) int { return strings.Compare(x.Addr, y.Addr) })
	if !slices.Equal(list, want) {
		t.Fatalf("published %v, want %v (sorted by address, member without gRPC address skipped)", list, want)
	}
	if got := w.Brokers(); !slices.Equal(got, want) {
		t.Fatalf("Brokers() = %v, want %v", got, want)
	}
}

func TestFollowsChangePushedOnStream(t *testing.T) {
	c := newCluster()
	a := startBroker(t, c)
	c.set("a=" + a.addr)
	w := run(t, []string{a.addr}, Options{})
	if got := next(t, w, a.addr); !got[0].Leader || got[0].ID != "a" {
		t.Fatalf("first list %v", got)
	}
	c.set("b=10.0.0.2:9093", "a="+a.addr) // b joined and leads
	list := next(t, w, a.addr, "10.0.0.2:9093")
	if leader := slices.IndexFunc(list, func(b Broker) bool { return b.Leader }); leader < 0 || list[leader].ID != "b" {
		t.Fatalf("list %v: want b as leader", list)
	}
	c.set("a=" + a.addr) // b left
	next(t, w, a.addr)
	if n := a.watches.Load(); n != 1 {
		t.Fatalf("%d Watch calls; the changes must come on the one stream", n)
	}
}

func TestSwitchesBrokerWhenStreamEnds(t *testing.T) {
	c := newCluster()
	a, b := startBroker(t, c), startBroker(t, c)
	c.set("a="+a.addr, "b="+b.addr)
	w := run(t, []string{a.addr}, Options{})
	next(t, w, a.addr, b.addr)
	if a.watches.Load() != 1 || b.watches.Load() != 0 {
		t.Fatalf("watches a %d b %d; want the seed only", a.watches.Load(), b.watches.Load())
	}
	a.srv.Stop() // a crashes: its stream breaks
	waitFor(t, "a Watch on the learned broker b", func() bool { return b.watches.Load() == 1 })
	c.set("b=" + b.addr) // pushed by b only: a is gone
	next(t, w, b.addr)
}

func TestSeedsAreTriedAgainWhenLearnedBrokersVanish(t *testing.T) {
	seedState, otherState := newCluster(), newCluster()
	seed, other := startBroker(t, seedState), startBroker(t, otherState)
	seed.endAfterFirst = true        // the seed answers once and ends the stream
	seedState.set("o=" + other.addr) // and sends the client elsewhere (e.g. a name in front of the cluster)
	otherState.set("o=" + other.addr)
	w := run(t, []string{seed.addr}, Options{})
	next(t, w, other.addr)
	waitFor(t, "the watch moved to the learned broker", func() bool { return other.watches.Load() == 1 })

	seedState.set("s=" + seed.addr)
	other.srv.Stop() // every learned broker is gone: only the seed is left to ask
	next(t, w, seed.addr)
	if n := seed.watches.Load(); n < 2 {
		t.Fatalf("the seed was asked %d times", n)
	}
}

func TestUnimplementedKeepsSeedsAndBacksOff(t *testing.T) {
	old := startBroker(t, nil)
	dead := deadAddr(t)
	var logs logBuffer
	w := run(t, []string{old.addr, dead}, Options{Logger: slog.New(slog.NewTextHandler(&logs, nil))})
	const said = "brokers do not serve cluster membership"
	waitFor(t, "the Unimplemented answer logged", func() bool { return logs.count(said) == 1 })
	want := []string{old.addr, dead}
	slices.Sort(want)
	if got := addrs(w.Brokers()); !slices.Equal(got, want) {
		t.Fatalf("Brokers() = %v, want the seeds %v", got, want)
	}
	// At the 10ms retry a failing watcher would ask tens of times in 300ms;
	// one that took the answer asks again only after a minute.
	<-time.After(300 * time.Millisecond)
	if n := old.watches.Load(); n != 1 {
		t.Fatalf("the old broker was asked %d times; want once", n)
	}
	if n := logs.count(said); n != 1 {
		t.Fatalf("logged %d times, want once", n)
	}
	select {
	case l := <-w.Updates():
		t.Fatalf("published %v with the list unchanged", l)
	default:
	}
}

func TestNoBrokerKeepsLastList(t *testing.T) {
	c := newCluster()
	a := startBroker(t, c)
	x := deadAddr(t)
	c.set("a="+a.addr, "x="+x)
	var logs logBuffer
	w := run(t, []string{a.addr}, Options{Logger: slog.New(slog.NewTextHandler(&logs, &slog.HandlerOptions{Level: slog.LevelDebug}))})
	want := next(t, w, a.addr, x)
	a.srv.Stop()
	waitFor(t, "three rounds in which no broker answered", func() bool {
		return logs.count("no broker answers the membership watch") >= 3
	})
	if got := w.Brokers(); !slices.Equal(got, want) {
		t.Fatalf("Brokers() = %v after losing every broker, want the last list %v", got, want)
	}
	logs.mu.Lock()
	text := logs.b.String()
	logs.mu.Unlock()
	rounds, warned := strings.Count(text, "msg=\"no broker answers"), strings.Count(text, "level=WARN msg=\"no broker answers")
	want2 := 0 // warnings at rounds 1, 2, 4, 8, …
	for p := 1; p <= rounds; p *= 2 {
		want2++
	}
	if warned != want2 {
		t.Errorf("warned %d times in %d failed rounds; want %d (at 1, 2, 4, 8, …)", warned, rounds, want2)
	}
}

func TestUpdatesHoldsOnlyTheNewest(t *testing.T) {
	w, err := New([]string{"s:1"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	for i := range 5 {
		w.publish([]Broker{{ID: fmt.Sprint(i), Addr: fmt.Sprintf("h:%d", i)}}) // nobody reads: must not block
	}
	if got := <-w.Updates(); len(got) != 1 || got[0].Addr != "h:4" {
		t.Fatalf("Updates() gave %v, want the newest", got)
	}
	select {
	case l := <-w.Updates():
		t.Fatalf("a second value %v", l)
	default:
	}
	w.publish([]Broker{{ID: "4", Addr: "h:4"}}) // unchanged: nothing published
	select {
	case l := <-w.Updates():
		t.Fatalf("published an unchanged list %v", l)
	default:
	}
}

func TestNewRejectsBadSeeds(t *testing.T) {
	cases := map[string][]string{"none": nil, "empty": {"a:1", " "}}
	for name, seeds := range cases {
		t.Run(name, func(t *testing.T) {
			if _, err := New(seeds, Options{}); err == nil {
				t.Fatalf("New(%q) accepted", seeds)
			}
		})
	}
	if _, err := New([]string{"a:1"}, Options{Retry: -time.Second}); err == nil {
		t.Fatal("negative retry accepted")
	}
	w, err := New([]string{"b:1", "a:1", "b:1"}, Options{})
	if err != nil {
		t.Fatal(err)
	}
	if got := addrs(w.Brokers()); !slices.Equal(got, []string{"a:1", "b:1"}) {
		t.Fatalf("seeds %v, want deduplicated and sorted", got)
	}
}

func TestBackoffIsCappedWithJitter(t *testing.T) {
	w, err := New([]string{"a:1"}, Options{Retry: 100 * time.Millisecond})
	if err != nil {
		t.Fatal(err)
	}
	for _, c := range []struct {
		failures int
		hi       time.Duration
	}{{1, 100 * time.Millisecond}, {2, 200 * time.Millisecond}, {4, 800 * time.Millisecond}, {50, 3 * time.Second}} {
		lo, hi := time.Hour, time.Duration(0)
		for range 1000 {
			d := w.backoff(c.failures)
			if d < c.hi/2 || d > c.hi {
				t.Fatalf("backoff(%d) = %s, want within [%s, %s]", c.failures, d, c.hi/2, c.hi)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		if hi-lo < c.hi/4 {
			t.Errorf("backoff(%d) spread only %s … %s", c.failures, lo, hi)
		}
	}
}
