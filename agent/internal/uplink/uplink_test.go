package uplink

import (
	"fmt"
	"io"
	"log/slog"
	"slices"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/agent/internal/spool"
	"github.com/monitorhq/monitor/pkg/hash"
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

func TestSetBrokersFollowsTheRing(t *testing.T) {
	u, err := New(Config{HostID: "h", Brokers: []string{"a:1"}}, memSpool(t), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := u.SetBrokers([]string{"c:1", "", "b:1", "a:1", "b:1"}); err != nil {
		t.Fatal(err)
	}
	ring, err := hash.New([]string{"a:1", "b:1", "c:1"}, hash.DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	if got, want := u.Order(), ring.Preference("h"); !slices.Equal(got, want) {
		t.Fatalf("order %v, want the ring's preference %v", got, want)
	}
	select {
	case <-u.reorder:
	default:
		t.Fatal("a changed order was not signalled")
	}
	if err := u.SetBrokers([]string{"b:1", "c:1", "a:1"}); err != nil {
		t.Fatal(err)
	}
	select {
	case <-u.reorder:
		t.Fatal("an unchanged order was signalled")
	default:
	}
	if err := u.SetBrokers([]string{""}); err == nil {
		t.Fatal("an empty list was accepted")
	}
	if got := u.Order(); len(got) != 3 {
		t.Fatalf("order %v after a refused list", got)
	}
}

func TestMoveReason(t *testing.T) {
	// Host ids whose first choice among {x:1, y:1} is x:1 and y:1.
	var toX, toY string
	ring, err := hash.New([]string{"x:1", "y:1"}, hash.DefaultVirtualNodes)
	if err != nil {
		t.Fatal(err)
	}
	for i := 0; toX == "" || toY == ""; i++ {
		h := fmt.Sprintf("host-%d", i)
		if ring.Lookup(h) == "x:1" {
			toX = h
		} else {
			toY = h
		}
	}
	cases := []struct {
		name       string
		host       string
		brokers    []string // the new list
		addr, pref string   // streaming to addr; the ring's choice was pref
		move       bool
	}{
		{"first choice still first", toX, []string{"x:1", "y:1"}, "x:1", "x:1", false},
		{"a new broker takes the host", toY, []string{"x:1", "y:1"}, "x:1", "x:1", true},
		{"the broker left", toX, []string{"y:1"}, "x:1", "x:1", true},
		{"failover broker while the first choice is unchanged", toX, []string{"x:1", "y:1"}, "y:1", "x:1", false},
		{"the ring now picks the failover broker", toY, []string{"x:1", "y:1"}, "y:1", "x:1", false},
		{"failover broker left", toX, []string{"x:1"}, "y:1", "x:1", true},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			u, err := New(Config{HostID: c.host, Brokers: c.brokers}, memSpool(t), nil, slog.New(slog.DiscardHandler))
			if err != nil {
				t.Fatal(err)
			}
			pref := c.pref
			if why := u.moveReason(c.addr, &pref); (why != "") != c.move {
				t.Fatalf("moveReason = %q, want move %v", why, c.move)
			}
			if pref != u.Order()[0] {
				t.Fatalf("pref %q not updated to the ring's choice %q", pref, u.Order()[0])
			}
		})
	}
}

func TestFailoverEndsWithTheConfiguredBrokers(t *testing.T) {
	u, err := New(Config{HostID: "h", Brokers: []string{"seed:1", "x:1"}}, memSpool(t), nil, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	if err := u.SetBrokers([]string{"x:1", "y:1"}); err != nil {
		t.Fatal(err)
	}
	order := u.Order()
	want := append(order, "seed:1") // x:1 is listed: once
	addr, pref := u.pick("")
	if addr != order[0] || pref != order[0] {
		t.Fatalf("pick() = %s, %s; want the ring's choice %s", addr, pref, order[0])
	}
	for i := range want {
		addr, pref = u.pick(want[i])
		if next := want[(i+1)%len(want)]; addr != next || pref != order[0] {
			t.Fatalf("after %s failed: pick = %s (pref %s); want %s (pref %s)", want[i], addr, pref, next, order[0])
		}
	}
	if addr, _ := u.pick("gone:1"); addr != order[0] {
		t.Fatalf("after an unlisted broker failed: %s, want the ring's choice", addr)
	}
}
