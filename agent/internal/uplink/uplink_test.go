package uplink

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/agent/internal/buffer"
	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func TestBackoffGrowsWithJitterWithinBounds(t *testing.T) {
	u, err := New(Config{HostID: "h", Brokers: []string{"127.0.0.1:1"}, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second},
		buffer.New(16), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	cases := []struct {
		failures int
		hi       time.Duration
	}{{0, 100 * time.Millisecond}, {1, 200 * time.Millisecond}, {3, 800 * time.Millisecond}, {4, time.Second}, {60, time.Second}}
	for _, c := range cases {
		lo, hi := time.Hour, time.Duration(0)
		for range 2000 {
			d := u.backoff(c.failures)
			if d < 100*time.Millisecond || d > c.hi {
				t.Fatalf("backoff(%d) = %s, want within [100ms, %s]", c.failures, d, c.hi)
			}
			lo, hi = min(lo, d), max(hi, d)
		}
		// Full jitter: the draws spread over the range, not one value.
		if c.hi > 100*time.Millisecond && hi-lo < (c.hi-100*time.Millisecond)/2 {
			t.Errorf("backoff(%d) spread only %s … %s", c.failures, lo, hi)
		}
	}
}

func TestLogLimiter(t *testing.T) {
	l := logLimiter{every: 10 * time.Second}
	t0 := time.Unix(1000, 0)
	if _, ok := l.allow(t0); !ok {
		t.Fatal("first line suppressed")
	}
	for i := 1; i <= 3; i++ {
		if _, ok := l.allow(t0.Add(time.Duration(i) * time.Second)); ok {
			t.Fatal("line within the period let through")
		}
	}
	if n, ok := l.allow(t0.Add(11 * time.Second)); !ok || n != 3 {
		t.Fatalf("after the period: ok %v, suppressed %d; want true, 3", ok, n)
	}
}

func TestNewRefusesDuplicateBrokers(t *testing.T) {
	_, err := New(Config{HostID: "h", Brokers: []string{"a:1", "a:1"}}, buffer.New(16), nil, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("duplicate brokers accepted")
	}
}

func TestCapBytesSplitsLargeBatches(t *testing.T) {
	big := &monitorpb.Snapshot{HostId: "h", Timestamp: 1}
	for i := range 2000 {
		big.Metrics = append(big.Metrics, &monitorpb.Metric{Name: "m", Value: float64(i), Unit: "bytes", Labels: map[string]string{"device": "dev"}})
	}
	size := proto.Size(big)
	snaps := make([]*monitorpb.Snapshot, 64)
	for i := range snaps {
		snaps[i] = big
	}
	got := capBytes(snaps, maxBatchBytes)
	if len(got) == 0 || len(got) == len(snaps) || len(got)*size > maxBatchBytes {
		t.Fatalf("kept %d snapshots of %d bytes each under a %d limit", len(got), size, maxBatchBytes)
	}
	if got := capBytes(snaps[:1], 10); len(got) != 1 {
		t.Fatal("a single oversized snapshot must still be sent")
	}
}
