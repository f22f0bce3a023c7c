package live_test

import (
	"context"
	"fmt"
	"log/slog"
	"slices"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
	"github.com/monitorhq/monitor/visualization/internal/brokertest"
	"github.com/monitorhq/monitor/visualization/internal/live"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// recorder is an observer that keeps what it saw.
type recorder struct {
	mu   sync.Mutex
	seen []string // "host@ts:series=value,..."
}

func (r *recorder) Observe(host string, labels map[string]string, ts int64, samples []live.Sample) {
	s := fmt.Sprintf("%s@%d", host, ts)
	if labels["role"] != "" {
		s += "[" + labels["role"] + "]"
	}
	for _, x := range samples {
		s += fmt.Sprintf(" %s=%g", x.Series, x.Value)
	}
	r.mu.Lock()
	r.seen = append(r.seen, s)
	r.mu.Unlock()
}

func (r *recorder) got() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	return slices.Clone(r.seen)
}

func eventually(t *testing.T, what string, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatalf("timed out waiting for %s", what)
		}
		time.Sleep(5 * time.Millisecond)
	}
}

func snap(host string, ts int64, v float64) *monitorpb.Snapshot {
	return &monitorpb.Snapshot{HostId: host, Timestamp: ts, Tags: map[string]string{"role": "web"}, Metrics: []*monitorpb.Metric{
		{Name: "cpu.usage_percent", Value: v, Unit: "%"},
		{Name: "net.rx_bytes_per_sec", Value: v * 10, Unit: "bytes/s", Labels: map[string]string{"interface": "eth0"}},
	}}
}

// start runs a feed over brokers until the test ends.
func start(t *testing.T, obs live.Observer, brokers ...*brokertest.Broker) (*live.Feed, *brokerclient.Client) {
	t.Helper()
	var addrs []string
	for _, b := range brokers {
		addrs = append(addrs, b.Addr)
	}
	c, err := brokerclient.New(addrs, 2*time.Second, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	f, err := live.New(live.Options{
		Source: c, Observers: []live.Observer{obs}, RetryMin: 10 * time.Millisecond, RetryMax: 50 * time.Millisecond,
		Now: func() time.Time { return time.Unix(2000, 0) },
	})
	if err != nil {
		t.Fatal(err)
	}
	f.SetBrokers(addrs)
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- f.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("Run: %v", err)
		}
		_ = c.Close()
	})
	for _, b := range brokers {
		eventually(t, "the subscription to "+b.Addr, func() bool { return b.Subscribers() == 1 })
	}
	return f, c
}

func TestEveryBrokerIsFollowed(t *testing.T) {
	b1, b2 := brokertest.Start(t), brokertest.Start(t)
	rec := &recorder{}
	f, _ := start(t, rec, b1, b2)
	b1.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{snap("web-1", 1500, 1), snap("web-2", 1500, 2)}})
	b2.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{snap("db-1", 1500, 3)}})
	eventually(t, "three snapshots", func() bool { return len(rec.got()) == 3 })
	got := rec.got()
	slices.Sort(got)
	want := []string{
		"db-1@1500[web] cpu.usage_percent=3 net.rx_bytes_per_sec{interface=eth0}=30",
		"web-1@1500[web] cpu.usage_percent=1 net.rx_bytes_per_sec{interface=eth0}=10",
		"web-2@1500[web] cpu.usage_percent=2 net.rx_bytes_per_sec{interface=eth0}=20",
	}
	if !slices.Equal(got, want) {
		t.Fatalf("observed\n%q\nwant\n%q", got, want)
	}
	st := f.Stats()
	if st.Brokers != 2 || st.Connected != 2 || st.Batches != 2 || st.Snapshots != 3 || st.Samples != 6 {
		t.Fatalf("stats = %+v", st)
	}

	// A broker leaving the list: its stream closes.
	f.SetBrokers([]string{b2.Addr})
	eventually(t, "the stream to the removed broker to close", func() bool { return b1.Subscribers() == 0 })
	if st := f.Stats(); st.Brokers != 1 {
		t.Fatalf("brokers after removal = %d", st.Brokers)
	}
}

// TestReconnectCatchesUp: after a stream breaks, the feed pulls what the
// host stored since the last snapshot it delivered, in order, and skips
// duplicates the stream brings after.
func TestReconnectCatchesUp(t *testing.T) {
	b := brokertest.Start(t)
	rec := &recorder{}
	f, _ := start(t, rec, b)
	b.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{snap("web-1", 1500, 1)}})
	eventually(t, "the first snapshot", func() bool { return len(rec.got()) == 1 })

	// Stored while the stream was down: 1500 (already seen) … 1530.
	series := func(name string, labels map[string]string, mul float64) *monitorpb.Series {
		s := &monitorpb.Series{Name: name, Labels: labels, Unit: "%"}
		for ts := int64(1500); ts <= 1530; ts += 10 {
			s.Points = append(s.Points, &monitorpb.Point{Timestamp: ts, Value: float64(ts-1490) / 10 * mul})
		}
		return s
	}
	b.SetSeries("web-1", series("cpu.usage_percent", nil, 1), series("net.rx_bytes_per_sec", map[string]string{"interface": "eth0"}, 10))
	b.KickSubscribers()
	eventually(t, "the catch-up", func() bool { return len(rec.got()) == 4 })
	eventually(t, "the new subscription", func() bool { return b.Subscribers() == 1 })
	// The stream now brings 1530 again (stored just as we pulled) and 1540.
	b.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{snap("web-1", 1530, 4), snap("web-1", 1540, 5)}})
	eventually(t, "the snapshot after the catch-up", func() bool { return len(rec.got()) == 5 })
	want := []string{
		"web-1@1500[web] cpu.usage_percent=1 net.rx_bytes_per_sec{interface=eth0}=10",
		"web-1@1510[web] cpu.usage_percent=2 net.rx_bytes_per_sec{interface=eth0}=20",
		"web-1@1520[web] cpu.usage_percent=3 net.rx_bytes_per_sec{interface=eth0}=30",
		"web-1@1530[web] cpu.usage_percent=4 net.rx_bytes_per_sec{interface=eth0}=40",
		"web-1@1540[web] cpu.usage_percent=5 net.rx_bytes_per_sec{interface=eth0}=50",
	}
	if got := rec.got(); !slices.Equal(got, want) {
		t.Fatalf("observed\n%q\nwant\n%q", got, want)
	}
	q := b.LastQuery()
	if q.GetFrom() != 1501 || q.GetTo() != 2000 || q.GetResolution() != monitorpb.Resolution_RESOLUTION_RAW {
		t.Fatalf("catch-up query = %v, want raw from 1501 (after the last seen) to now", q)
	}
	st := f.Stats()
	if st.Reconnects != 1 || st.Catchups != 1 || st.CatchupSnapshots != 3 || st.Late != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestBrokerDropsAreCountedAndCaughtUp(t *testing.T) {
	b := brokertest.Start(t)
	rec := &recorder{}
	f, _ := start(t, rec, b)
	b.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{snap("web-1", 1500, 1)}})
	eventually(t, "the first snapshot", func() bool { return len(rec.got()) == 1 })
	b.SetSeries("web-1", &monitorpb.Series{Name: "cpu.usage_percent", Unit: "%", Points: []*monitorpb.Point{{Timestamp: 1510, Value: 7}}})
	b.Publish(&monitorpb.StoredBatch{Dropped: 3, Snapshots: []*monitorpb.Snapshot{snap("web-1", 1520, 8)}})
	eventually(t, "the caught-up and the new snapshot", func() bool { return len(rec.got()) == 3 })
	if got := rec.got(); got[1] != "web-1@1510[web] cpu.usage_percent=7" {
		t.Fatalf("caught up %q", got[1])
	}
	if st := f.Stats(); st.BrokerDropped != 3 || st.Catchups != 1 {
		t.Fatalf("stats = %+v", st)
	}
}

func TestCatchUpFailureIsCounted(t *testing.T) {
	b := brokertest.Start(t)
	rec := &recorder{}
	f, _ := start(t, rec, b)
	b.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{snap("web-1", 1500, 1)}})
	eventually(t, "the first snapshot", func() bool { return len(rec.got()) == 1 })
	b.SetSeries("web-1", &monitorpb.Series{Name: "cpu.usage_percent", Points: []*monitorpb.Point{{Timestamp: 1510, Value: 7}}})
	b.FailWith(fmt.Errorf("not a status"))
	b.KickSubscribers()
	eventually(t, "a failed catch-up", func() bool { return f.Stats().CatchupErrors > 0 })
	b.FailWith(nil)
	eventually(t, "the new subscription", func() bool { return b.Subscribers() == 1 })
}
