package topk

import (
	"fmt"
	"math"
	"math/rand/v2"
	"os"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/visualization/topkshm"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// engines are the implementations every test runs against: the build's
// New (C++ with cgo, the Go twin without) and NewGo.
var engines = []struct {
	name string
	make func(Options) (*Engine, error)
}{
	{"New-" + Implementation, New},
	{"NewGo", NewGo},
}

// clock is an injectable clock.
type clock struct {
	mu sync.Mutex
	t  time.Time
}

func (c *clock) Now() time.Time { c.mu.Lock(); defer c.mu.Unlock(); return c.t }
func (c *clock) Add(d time.Duration) {
	c.mu.Lock()
	c.t = c.t.Add(d)
	c.mu.Unlock()
}

// shmName returns a segment name unique to this test process and test.
func shmName(t testing.TB) string {
	return fmt.Sprintf("/monitor-topk-test-%d-%s", os.Getpid(), strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
}

// model is the brute-force reference: every host's latest sample per
// metric, expired and ranked by scanning.
type model struct {
	ttl     time.Duration
	metrics map[string]map[string]Entry
	order   []string // metrics in order of first appearance
	max     int
}

func newModel(ttl time.Duration, maxMetrics int) *model {
	return &model{ttl: ttl, metrics: map[string]map[string]Entry{}, max: maxMetrics}
}

func (m *model) expired(ts int64, now time.Time) bool {
	return time.Unix(ts, 0).Add(m.ttl).Compare(now) <= 0
}

func (m *model) expire(now time.Time) {
	for _, hosts := range m.metrics {
		for h, e := range hosts {
			if m.expired(e.TS, now) {
				delete(hosts, h)
			}
		}
	}
}

func (m *model) update(metric, host string, v float64, ts int64, now time.Time) {
	if math.IsNaN(v) || math.IsInf(v, 0) || metric == "" || host == "" || len(host) > maxHostLen || len(metric) > maxMetricLen || m.expired(ts, now) {
		return
	}
	hosts := m.metrics[metric]
	if hosts == nil {
		if len(m.order) >= m.max {
			return
		}
		hosts = map[string]Entry{}
		m.metrics[metric] = hosts
		m.order = append(m.order, metric)
	}
	if old, ok := hosts[host]; ok && ts < old.TS {
		return
	}
	hosts[host] = Entry{Host: host, Value: v, TS: ts}
}

func (m *model) top(metric string, k int, now time.Time) []Entry {
	m.expire(now)
	var all []Entry
	for _, e := range m.metrics[metric] {
		all = append(all, e)
	}
	slices.SortFunc(all, func(a, b Entry) int {
		if a.Value != b.Value {
			if a.Value > b.Value {
				return -1
			}
			return 1
		}
		return strings.Compare(a.Host, b.Host)
	})
	if len(all) > k {
		all = all[:k]
	}
	return all
}

func (m *model) live(now time.Time) []string {
	m.expire(now)
	var out []string
	for name, hosts := range m.metrics {
		if len(hosts) > 0 {
			out = append(out, name)
		}
	}
	slices.Sort(out)
	return out
}

// events records published "topk" events, latest per metric.
type events struct {
	mu   sync.Mutex
	last map[string][]Entry
	n    int
}

func (r *events) publish(kind string, payload any) {
	ev := payload.(Event)
	r.mu.Lock()
	defer r.mu.Unlock()
	if kind != "topk" {
		panic("kind " + kind)
	}
	if r.last == nil {
		r.last = map[string][]Entry{}
	}
	r.last[ev.Metric] = ev.Entries
	r.n++
}

func sameEntries(a, b []Entry) bool { return len(a) == len(b) && (len(a) == 0 || slices.Equal(a, b)) }

// runModel drives e and the model with ops read from next (a source of
// bytes) and compares them after every op: Top for random k, Metrics, the
// latest event of every metric and the shared segment.
func runModel(t *testing.T, mk func(Options) (*Engine, error), ops int, next func() byte) {
	t.Helper()
	const k, ttl, maxMetrics = 4, 10 * time.Second, 6
	clk := &clock{t: time.Unix(1_700_000_000, 0)}
	rec := &events{}
	name := shmName(t)
	e, err := mk(Options{K: k, TTL: ttl, MaxMetrics: maxMetrics, ShmName: name, Now: clk.Now, Publish: rec.publish, PublishInterval: -1})
	if err != nil {
		t.Fatal(err)
	}
	defer e.Close()
	mod := newModel(ttl, maxMetrics)
	metrics := []string{"cpu.usage", "mem.used_percent", "net.rx{iface=eth0}", strings.Repeat("m", 130), "a", "b", "c"}
	hostsOf := func(b byte) string {
		if b == 255 {
			return strings.Repeat("h", maxHostLen+1) // refused
		}
		return fmt.Sprintf("host-%02d", b%12)
	}
	for i := 0; i < ops; i++ {
		now := clk.Now()
		switch op := next() % 8; {
		case op < 5: // update
			metric := metrics[int(next())%len(metrics)]
			host := hostsOf(next())
			v := float64(int(next())%16) - 4 // few distinct values: many ties
			if next()%32 == 0 {
				v = math.NaN()
			}
			ts := now.Unix() - int64(next()%14) // some already expired, some older than stored
			e.Update(metric, host, v, ts)
			mod.update(metric, host, v, ts, now)
		case op == 5: // time passes
			clk.Add(time.Duration(next()%4) * time.Second)
			continue
		case op == 6: // batch
			var batch []Sample
			for range int(next() % 4) {
				s := Sample{Metric: metrics[int(next())%len(metrics)], Host: hostsOf(next()), Value: float64(next() % 8), TS: now.Unix() - int64(next()%3)}
				batch = append(batch, s)
				mod.update(s.Metric, s.Host, s.Value, s.TS, now)
			}
			e.UpdateMany(batch)
		case op == 7:
			e.Expire()
		}
		// Compare: Top for a random k, every metric's latest event and
		// the segment (both as of the last sweep: Top sweeps first).
		kq := int(next()%6) + 1
		for _, m := range metrics {
			got, want := e.Top(m, kq), mod.top(m, kq, now)
			if !sameEntries(got, want) {
				t.Fatalf("op %d: Top(%.12q, %d) = %v, want %v", i, m, kq, got, want)
			}
		}
		if got, want := e.Metrics(), mod.live(now); !slices.Equal(got, want) {
			t.Fatalf("op %d: Metrics() = %v, want %v", i, got, want)
		}
		rec.mu.Lock()
		for _, m := range metrics {
			if want := mod.top(m, k, now); !sameEntries(rec.last[m], want) {
				t.Fatalf("op %d: last event of %.12q = %v, want %v", i, m, rec.last[m], want)
			}
		}
		rec.mu.Unlock()
		snap, err := topkshm.ReadShared(name)
		if err != nil {
			t.Fatalf("op %d: ReadShared: %v", i, err)
		}
		seen := map[string]bool{}
		for _, mt := range snap.Metrics {
			seen[mt.Metric] = true
			if want := mod.top(mt.Metric, k, now); !sameEntries(mt.Entries, want) {
				t.Fatalf("op %d: segment %q = %v, want %v", i, mt.Metric, mt.Entries, want)
			}
		}
		for _, m := range mod.live(now) {
			if !seen[m] && len(m) <= topkshm.NameWidth {
				t.Fatalf("op %d: segment lacks metric %q", i, m)
			}
		}
		if snap.K != k || snap.TTL != ttl {
			t.Fatalf("segment k %d ttl %s", snap.K, snap.TTL)
		}
	}
}

// TestMatchesModel drives both engines with random updates, batches, time
// and expiry from a fixed seed and checks Top, Metrics, events and the
// shared segment against the brute-force model after every step.
func TestMatchesModel(t *testing.T) {
	for _, im := range engines {
		t.Run(im.name, func(t *testing.T) {
			rng := rand.New(rand.NewPCG(1, 2))
			runModel(t, im.make, 3000, func() byte { return byte(rng.Uint32()) })
		})
	}
}

// FuzzTopK runs the model comparison on fuzzer-chosen operations, for both
// engines.
func FuzzTopK(f *testing.F) {
	f.Add([]byte{0, 1, 2, 3, 4, 5, 6, 7, 5, 3, 5, 3, 0, 0, 0, 9, 9, 9, 7, 7})
	f.Add([]byte("the quick brown fox jumps over the lazy dog, twice: the quick brown fox"))
	f.Fuzz(func(t *testing.T, data []byte) {
		for _, im := range engines {
			i := 0
			next := func() byte {
				if i >= len(data) {
					return 0
				}
				i++
				return data[i-1]
			}
			runModel(t, im.make, len(data)/3, next)
		}
	})
}

// TestReentersAfterDroppingOut is the case a K-sized heap gets wrong: a
// host pushed out of the top K comes back when the others fall.
func TestReentersAfterDroppingOut(t *testing.T) {
	for _, im := range engines {
		t.Run(im.name, func(t *testing.T) {
			clk := &clock{t: time.Unix(1_700_000_000, 0)}
			e, err := im.make(Options{K: 2, Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			ts := clk.Now().Unix()
			e.Update("cpu", "a", 10, ts)
			e.Update("cpu", "b", 20, ts)
			e.Update("cpu", "c", 30, ts) // a drops out
			e.Update("cpu", "b", 1, ts)  // b falls below a: a is back
			want := []Entry{{Host: "c", Value: 30, TS: ts}, {Host: "a", Value: 10, TS: ts}}
			if got := e.Top("cpu", 2); !slices.Equal(got, want) {
				t.Fatalf("Top = %v, want %v", got, want)
			}
			if got := e.Top("cpu", 3); len(got) != 3 || got[2].Host != "b" {
				t.Fatalf("Top(3) = %v", got)
			}
		})
	}
}

// TestRefusalsAreCounted checks every refusal lands in Stats by reason.
func TestRefusalsAreCounted(t *testing.T) {
	for _, im := range engines {
		t.Run(im.name, func(t *testing.T) {
			clk := &clock{t: time.Unix(1_700_000_000, 0)}
			e, err := im.make(Options{MaxMetrics: 1, Now: clk.Now})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			ts := clk.Now().Unix()
			e.Update("cpu", "a", 1, ts)
			e.Update("cpu", "a", math.Inf(1), ts)
			e.Update("cpu", "", 1, ts)
			e.Update("cpu", "a", 1, ts-1)    // older than stored
			e.Update("cpu", "b", 1, ts-3600) // expired on arrival
			e.Update("mem", "a", 1, ts)      // beyond MaxMetrics
			want := Stats{Updates: 1, Invalid: 2, Stale: 2, MetricsFull: 1}
			if got := e.Stats(); got != want {
				t.Fatalf("Stats = %+v, want %+v", got, want)
			}
		})
	}
}

// TestEventsAreRateLimited checks that changes inside the interval are
// folded into one trailing event carrying the latest top K.
func TestEventsAreRateLimited(t *testing.T) {
	for _, im := range engines {
		t.Run(im.name, func(t *testing.T) {
			clk := &clock{t: time.Unix(1_700_000_000, 0)}
			rec := &events{}
			e, err := im.make(Options{K: 2, Now: clk.Now, Publish: rec.publish, PublishInterval: 20 * time.Millisecond})
			if err != nil {
				t.Fatal(err)
			}
			defer e.Close()
			ts := clk.Now().Unix()
			e.Update("cpu", "a", 1, ts) // first change: sent at once
			e.Update("cpu", "b", 2, ts) // inside the interval: deferred
			e.Update("cpu", "c", 3, ts) // folded into the same trailing event
			rec.mu.Lock()
			if rec.n != 1 {
				t.Fatalf("%d events at once, want 1", rec.n)
			}
			rec.mu.Unlock()
			want := []Entry{{Host: "c", Value: 3, TS: ts}, {Host: "b", Value: 2, TS: ts}}
			deadline := time.Now().Add(5 * time.Second)
			for {
				rec.mu.Lock()
				n, last := rec.n, rec.last["cpu"]
				rec.mu.Unlock()
				if n == 2 && slices.Equal(last, want) {
					break
				}
				if n > 2 || time.Now().After(deadline) {
					t.Fatalf("%d events, last %v; want 2 ending in %v", n, last, want)
				}
				time.Sleep(time.Millisecond) // polling for the trailing timer
			}
		})
	}
}

func TestOptionsAreValidated(t *testing.T) {
	for _, o := range []Options{{K: -1}, {K: MaxK + 1}, {TTL: time.Millisecond}, {MaxMetrics: -2}, {ShmName: "no-slash"}, {ShmName: "/a/b"}} {
		for _, im := range engines {
			if e, err := im.make(o); err == nil {
				e.Close()
				t.Errorf("%s: options %+v accepted", im.name, o)
			}
		}
	}
}
