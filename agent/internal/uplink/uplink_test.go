package uplink

import (
	"io"
	"log/slog"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/agent/internal/spool"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func memSpool(t *testing.T) *spool.Spool {
	t.Helper()
	sp, err := spool.Open(spool.Options{MaxBytes: 1 << 20}, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { sp.Close() })
	return sp
}

func TestBackoffGrowsWithJitterWithinBounds(t *testing.T) {
	u, err := New(Config{HostID: "h", Brokers: []string{"127.0.0.1:1"}, MinBackoff: 100 * time.Millisecond, MaxBackoff: time.Second},
		memSpool(t), nil, slog.New(slog.NewTextHandler(io.Discard, nil)))
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
	_, err := New(Config{HostID: "h", Brokers: []string{"a:1", "a:1"}}, memSpool(t), nil, slog.New(slog.DiscardHandler))
	if err == nil {
		t.Fatal("duplicate brokers accepted")
	}
}
