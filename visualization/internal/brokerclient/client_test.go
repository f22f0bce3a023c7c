package brokerclient_test

import (
	"context"
	"errors"
	"log/slog"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/pkg/grpcauth"
	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
	"github.com/monitorhq/monitor/visualization/internal/brokertest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func newClient(t *testing.T, timeout time.Duration, addrs ...string) *brokerclient.Client {
	t.Helper()
	c, err := brokerclient.New(addrs, timeout, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("new client: %v", err)
	}
	t.Cleanup(func() {
		if err := c.Close(); err != nil {
			t.Errorf("close client: %v", err)
		}
	})
	return c
}

func host(id string) *monitorpb.HostStatus {
	return &monitorpb.HostStatus{Info: &monitorpb.HostInfo{HostId: id}}
}

func hostIDs(hs []*monitorpb.HostStatus) string {
	var ids []string
	for _, h := range hs {
		ids = append(ids, h.GetInfo().GetHostId())
	}
	return strings.Join(ids, ",")
}

func TestNewRefusesEmptyConfig(t *testing.T) {
	if _, err := brokerclient.New(nil, time.Second, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("New with no address: want an error")
	}
	if _, err := brokerclient.New([]string{"127.0.0.1:1"}, 0, slog.New(slog.DiscardHandler)); err == nil {
		t.Fatal("New with zero timeout: want an error")
	}
}

func TestCallsReachTheBroker(t *testing.T) {
	b := brokertest.Start(t)
	b.SetHosts(host("web-2"), host("web-1"))
	b.SetLatest(&monitorpb.Snapshot{HostId: "web-1", Timestamp: 100, Metrics: []*monitorpb.Metric{{Name: "cpu.usage_percent", Value: 12.5, Unit: "%"}}})
	b.SetSeries("web-1", &monitorpb.Series{Name: "cpu.usage_percent", Unit: "%", Points: []*monitorpb.Point{{Timestamp: 90, Value: 1}, {Timestamp: 100, Value: 2}, {Timestamp: 110, Value: 3}}})
	c := newClient(t, 5*time.Second, b.Addr)
	ctx := context.Background()

	hosts, err := c.ListHosts(ctx)
	if err != nil {
		t.Fatalf("list hosts: %v", err)
	}
	if got := hostIDs(hosts); got != "web-1,web-2" {
		t.Fatalf("hosts = %s, want web-1,web-2", got)
	}

	snap, err := c.Latest(ctx, "web-1")
	if err != nil || snap.GetTimestamp() != 100 || len(snap.GetMetrics()) != 1 {
		t.Fatalf("latest = %v, %v; want the snapshot at 100", snap, err)
	}
	snap, err = c.Latest(ctx, "web-9")
	if err != nil || snap != nil {
		t.Fatalf("latest of a host without data = %v, %v; want nil, nil", snap, err)
	}

	resp, err := c.QueryRange(ctx, &monitorpb.QueryRangeRequest{HostId: "web-1", Names: []string{"cpu.usage_percent"}, From: 95, To: 110, Step: 5})
	if err != nil {
		t.Fatalf("query range: %v", err)
	}
	if len(resp.GetSeries()) != 1 || len(resp.GetSeries()[0].GetPoints()) != 2 {
		t.Fatalf("query range = %v, want one series with 2 points", resp)
	}
	if q := b.LastQuery(); q.GetStep() != 5 || q.GetFrom() != 95 {
		t.Fatalf("broker saw %v, want the request as sent", q)
	}
}

func TestFailsOverToTheNextBrokerAndStays(t *testing.T) {
	b1, b2 := brokertest.Start(t), brokertest.Start(t)
	b1.FailWith(status.Error(codes.Unavailable, "storage down"))
	b2.SetHosts(host("db-1"))
	c := newClient(t, 5*time.Second, b1.Addr, b2.Addr)

	hosts, err := c.ListHosts(context.Background())
	if err != nil {
		t.Fatalf("list hosts with the first broker unavailable: %v", err)
	}
	if got := hostIDs(hosts); got != "db-1" {
		t.Fatalf("hosts = %s, want db-1 from the second broker", got)
	}
	if b1.Calls() != 1 || b2.Calls() != 1 {
		t.Fatalf("calls = %d, %d; want 1 on each", b1.Calls(), b2.Calls())
	}
	// The broker that answered is used first from now on.
	if _, err := c.ListHosts(context.Background()); err != nil {
		t.Fatalf("second call: %v", err)
	}
	if b1.Calls() != 1 || b2.Calls() != 2 {
		t.Fatalf("calls after the second request = %d, %d; want 1, 2 (sticky to the answering broker)", b1.Calls(), b2.Calls())
	}
	// When the second fails too, the call goes back to the first.
	b1.FailWith(nil)
	b1.SetHosts(host("db-2"))
	b2.Stop()
	hosts, err = c.ListHosts(context.Background())
	if err != nil || hostIDs(hosts) != "db-2" {
		t.Fatalf("list hosts after the second broker stopped = %s, %v; want db-2", hostIDs(hosts), err)
	}
}

func TestFailsOverFromAStoppedBroker(t *testing.T) {
	b1, b2 := brokertest.Start(t), brokertest.Start(t)
	b1.Stop()
	b2.SetHosts(host("db-1"))
	c := newClient(t, 5*time.Second, b1.Addr, b2.Addr)
	hosts, err := c.ListHosts(context.Background())
	if err != nil || hostIDs(hosts) != "db-1" {
		t.Fatalf("list hosts = %s, %v; want db-1 from the second broker", hostIDs(hosts), err)
	}
}

func TestFailsOverFromAHungBrokerAfterTheTimeout(t *testing.T) {
	b1, b2 := brokertest.Start(t), brokertest.Start(t)
	b1.Hang()
	b2.SetHosts(host("db-1"))
	timeout := 300 * time.Millisecond
	c := newClient(t, timeout, b1.Addr, b2.Addr)
	start := time.Now()
	hosts, err := c.ListHosts(context.Background())
	if err != nil || hostIDs(hosts) != "db-1" {
		t.Fatalf("list hosts = %s, %v; want db-1 from the second broker", hostIDs(hosts), err)
	}
	if took := time.Since(start); took < timeout {
		t.Fatalf("call took %s, less than the per-call timeout %s: the hung broker was not waited for", took, timeout)
	}
	if b1.Calls() != 1 {
		t.Fatalf("hung broker calls = %d, want 1", b1.Calls())
	}
}

func TestAnswersAboutTheRequestDoNotFailOver(t *testing.T) {
	for _, code := range []codes.Code{codes.InvalidArgument, codes.NotFound, codes.Internal} {
		t.Run(code.String(), func(t *testing.T) {
			b1, b2 := brokertest.Start(t), brokertest.Start(t)
			b1.FailWith(status.Error(code, "the answer"))
			c := newClient(t, 5*time.Second, b1.Addr, b2.Addr)
			_, err := c.Latest(context.Background(), "web-1")
			if status.Code(err) != code {
				t.Fatalf("error %v has code %s, want %s", err, status.Code(err), code)
			}
			if got := status.Convert(err).Message(); got != "the answer" {
				t.Fatalf("status message = %q, want the broker's own message", got)
			}
			if b2.Calls() != 0 {
				t.Fatalf("second broker got %d calls, want 0", b2.Calls())
			}
		})
	}
}

func TestAllBrokersDown(t *testing.T) {
	b1, b2 := brokertest.Start(t), brokertest.Start(t)
	b1.Stop()
	b2.Stop()
	c := newClient(t, 5*time.Second, b1.Addr, b2.Addr)
	_, err := c.ListHosts(context.Background())
	if status.Code(err) != codes.Unavailable {
		t.Fatalf("error %v has code %s, want Unavailable", err, status.Code(err))
	}
	msg := err.Error()
	for _, want := range []string{"list hosts", "no broker answered (2 tried)", b1.Addr, b2.Addr} {
		if !strings.Contains(msg, want) {
			t.Fatalf("error %q does not mention %q", msg, want)
		}
	}
}

func TestCanceledCallerDoesNotFailOver(t *testing.T) {
	b1, b2 := brokertest.Start(t), brokertest.Start(t)
	b1.Hang()
	c := newClient(t, 5*time.Second, b1.Addr, b2.Addr)
	ctx, cancel := context.WithTimeout(context.Background(), 200*time.Millisecond)
	defer cancel()
	_, err := c.ListHosts(ctx)
	if status.Code(err) != codes.DeadlineExceeded {
		t.Fatalf("error %v has code %s, want DeadlineExceeded", err, status.Code(err))
	}
	<-ctx.Done() // gRPC may report the deadline a moment before ctx expires
	if !errors.Is(ctx.Err(), context.DeadlineExceeded) {
		t.Fatalf("caller context not expired: %v", ctx.Err())
	}
	if b2.Calls() != 0 {
		t.Fatalf("second broker got %d calls after the caller gave up, want 0", b2.Calls())
	}
}

func TestReachable(t *testing.T) {
	b1, b2 := brokertest.Start(t), brokertest.Start(t)
	c := newClient(t, 5*time.Second, b1.Addr, b2.Addr)
	probe := func() int {
		ctx, cancel := context.WithTimeout(context.Background(), 2*time.Second)
		defer cancel()
		return c.Reachable(ctx)
	}
	if n := probe(); n != 2 {
		t.Fatalf("reachable = %d with both brokers up, want 2", n)
	}
	b1.Stop()
	// The client learns of the closed connection asynchronously: poll.
	deadline := time.Now().Add(5 * time.Second)
	for n := probe(); n != 1; n = probe() {
		if time.Now().After(deadline) {
			t.Fatalf("reachable = %d with one broker stopped, want 1", n)
		}
	}
	b2.Stop()
	deadline = time.Now().Add(5 * time.Second)
	for n := probe(); n != 0; n = probe() {
		if time.Now().After(deadline) {
			t.Fatalf("reachable = %d with both brokers stopped, want 0", n)
		}
	}
}

func TestClusterCallsCarryTheSecret(t *testing.T) {
	b := brokertest.Start(t)
	c, err := brokerclient.New([]string{b.Addr}, 2*time.Second, slog.New(slog.DiscardHandler), brokerclient.WithAuth(grpcauth.Client{Token: "s3cret-s3cret-s3cret", AllowInsecureLoopback: true}))
	if err != nil {
		t.Fatal(err)
	}
	defer c.Close()
	ctx := context.Background()
	if _, err := c.ClusterStatus(ctx); status.Code(err) != codes.Unimplemented {
		t.Fatalf("status of a broker without control plane = %v, want Unimplemented", err)
	}
	b.SetStatus(&monitorpb.StatusResponse{NodeId: "b1", Term: 2})
	if st, err := c.ClusterStatus(ctx); err != nil || st.GetTerm() != 2 {
		t.Fatalf("status = %v, %v", st, err)
	}
	rule := &monitorpb.AlertRule{Id: "cpu-high", Metric: "cpu.usage_percent", Op: ">", Threshold: 90, ForSeconds: 60}
	if got, err := c.PutAlertRule(ctx, rule); err != nil || got.GetId() != "cpu-high" {
		t.Fatalf("put = %v, %v", got, err)
	}
	if rules, err := c.ListAlertRules(ctx); err != nil || len(rules) != 1 || rules[0].GetThreshold() != 90 {
		t.Fatalf("list = %v, %v", rules, err)
	}
	for _, want := range []bool{true, false} {
		if existed, err := c.RemoveAlertRule(ctx, "cpu-high"); err != nil || existed != want {
			t.Fatalf("remove = %v, %v; want existed %v", existed, err, want)
		}
	}
	for i, a := range b.ClusterAuth() {
		if a != "Bearer s3cret-s3cret-s3cret" {
			t.Fatalf("call %d carried authorization %q", i, a)
		}
	}
}

func TestSetBrokersFollowsTheList(t *testing.T) {
	b1, b2 := brokertest.Start(t), brokertest.Start(t)
	b2.SetHosts(host("web-2"))
	c := newClient(t, 2*time.Second, b1.Addr)
	if err := c.SetBrokers([]string{b2.Addr, b2.Addr}); err != nil {
		t.Fatal(err)
	}
	if got := c.Brokers(); len(got) != 1 || got[0] != b2.Addr {
		t.Fatalf("brokers = %v, want [%s] (duplicates dropped)", got, b2.Addr)
	}
	hosts, err := c.ListHosts(context.Background())
	if err != nil || hostIDs(hosts) != "web-2" {
		t.Fatalf("hosts = %v, %v; want web-2 from the new list", hostIDs(hosts), err)
	}
	if n := b1.Calls(); n != 0 {
		t.Fatalf("the removed broker got %d calls", n)
	}
	if err := c.SetBrokers(nil); err == nil {
		t.Fatal("SetBrokers(nil): want an error")
	}
	if _, err := c.Subscribe(context.Background(), b1.Addr, &monitorpb.SubscribeRequest{}); status.Code(err) != codes.Unavailable {
		t.Fatalf("subscribe to a broker not in the list = %v, want Unavailable", err)
	}
}
