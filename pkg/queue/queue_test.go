package queue

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"math/rand/v2"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/pkg/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

var quiet = slog.New(slog.NewTextHandler(io.Discard, nil))

// recorder is a Writer that records every call. A host named "shardN-..."
// lives on shard N (Sharded); gate, when set, holds writes to the shards it
// lists until closed; fail makes every write fail.
type recorder struct {
	shards int
	gate   map[int]chan struct{}
	fail   error

	mu    sync.Mutex
	calls [][]storage.Snapshot
}

func (r *recorder) ShardCount() int { return r.shards }

func (r *recorder) ShardOf(hostID string) int {
	var n int
	if _, err := fmt.Sscanf(hostID, "shard%d-", &n); err != nil {
		return 0
	}
	return n
}

func (r *recorder) WriteSnapshots(ctx context.Context, snaps []storage.Snapshot) error {
	if g, ok := r.gate[r.ShardOf(snaps[0].HostID)]; ok {
		select {
		case <-g:
		case <-ctx.Done():
			return ctx.Err()
		}
	}
	for i := range snaps {
		if strings.HasPrefix(snaps[i].HostID, "bad") {
			return fmt.Errorf("host %s: %w", snaps[i].HostID, storage.ErrInvalid)
		}
	}
	r.mu.Lock()
	r.calls = append(r.calls, append([]storage.Snapshot(nil), snaps...))
	r.mu.Unlock()
	return r.fail
}

func (r *recorder) sizes() []int {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []int
	for _, c := range r.calls {
		out = append(out, len(c))
	}
	return out
}

func snaps(host string, n int) []storage.Snapshot {
	out := make([]storage.Snapshot, n)
	for i := range out {
		out[i] = storage.Snapshot{HostID: host, Timestamp: int64(1000 + i), Samples: []storage.Sample{{Series: "cpu.usage_percent", Value: 1}}}
	}
	return out
}

// completion collects done callbacks.
type completion chan error

func (c completion) done(err error) { c <- err }

func (c completion) wait(t *testing.T) error {
	t.Helper()
	select {
	case err := <-c:
		return err
	case <-time.After(10 * time.Second):
		t.Fatal("completion did not fire")
		return nil
	}
}

func TestCoalescesAtFlushSize(t *testing.T) {
	w := &recorder{}
	q := New(w, Config{FlushSnapshots: 10, FlushInterval: time.Hour, Workers: 1}, quiet)
	defer q.Close()
	c := make(completion, 10)
	var wg sync.WaitGroup
	for i := 0; i < 10; i++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			if err := q.Enqueue(snaps(fmt.Sprintf("h%d", i), 1), c.done); err != nil {
				t.Error(err)
			}
		}()
	}
	wg.Wait()
	for i := 0; i < 10; i++ {
		if err := c.wait(t); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.sizes(); len(got) != 1 || got[0] != 10 {
		t.Fatalf("writes %v, want one write of 10 snapshots from 10 callers", got)
	}
	st := q.Stats()
	if st.Flushes != 1 || st.Flushed != 10 || st.Enqueued != 10 || st.FlushSize.Max != 10 || st.WriteLatency.Count != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestFlushesAfterInterval(t *testing.T) {
	w := &recorder{}
	q := New(w, Config{FlushSnapshots: 1000, FlushInterval: 20 * time.Millisecond}, quiet)
	defer q.Close()
	c := make(completion, 2)
	for _, h := range []string{"a", "b"} {
		if err := q.Enqueue(snaps(h, 3), c.done); err != nil {
			t.Fatal(err)
		}
	}
	for range 2 {
		if err := c.wait(t); err != nil {
			t.Fatal(err)
		}
	}
	if got := w.sizes(); len(got) != 1 || got[0] != 6 {
		t.Fatalf("writes %v, want one write of 6 after the interval", got)
	}
}

func TestSplitsAtFlushSize(t *testing.T) {
	w := &recorder{}
	q := New(w, Config{FlushSnapshots: 4, FlushInterval: time.Millisecond, Workers: 1}, quiet)
	defer q.Close()
	c := make(completion, 1)
	if err := q.Enqueue(snaps("a", 10), c.done); err != nil {
		t.Fatal(err)
	}
	if err := c.wait(t); err != nil {
		t.Fatal(err)
	}
	got := w.sizes()
	total := 0
	for _, n := range got {
		if n > 4 {
			t.Fatalf("write of %d snapshots exceeds flush size 4: %v", n, got)
		}
		total += n
	}
	if total != 10 {
		t.Fatalf("wrote %d snapshots (%v), want 10; the completion must wait for every part", total, got)
	}
}

func TestFullQueueRefusesAtOnce(t *testing.T) {
	gate := make(chan struct{})
	w := &recorder{gate: map[int]chan struct{}{0: gate}}
	q := New(w, Config{Capacity: 4, FlushSnapshots: 2, FlushInterval: time.Hour, Workers: 1}, quiet)
	defer q.Close()
	c := make(completion, 16)
	// 2 taken by the blocked worker, then 4 waiting fill the lane.
	admitted := 0
	var err error
	for i := 0; i < 16 && err == nil; i++ {
		if err = q.Enqueue(snaps(fmt.Sprintf("h%d", i), 1), c.done); err == nil {
			admitted++
		}
		if i == 1 {
			waitFor(t, func() bool { return q.Stats().InFlight == 2 })
		}
	}
	if !errors.Is(err, ErrFull) || admitted != 6 {
		t.Fatalf("after %d admitted: %v, want ErrFull after 6", admitted, err)
	}
	if st := q.Stats(); st.Refused[ReasonFull] != 1 || st.Depth != 4 || st.InFlight != 2 {
		t.Fatalf("stats %+v", st)
	}
	close(gate)
	for range admitted {
		if err := c.wait(t); err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Enqueue(snaps("later", 2), c.done); err != nil {
		t.Fatalf("after the queue drained: %v", err)
	}
	if err := c.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestEmptyLaneAdmitsOversizedBatch(t *testing.T) {
	q := New(&recorder{}, Config{Capacity: 2, FlushSnapshots: 2}, quiet)
	defer q.Close()
	c := make(completion, 1)
	if err := q.Enqueue(snaps("big", 5), c.done); err != nil {
		t.Fatalf("a batch larger than the capacity must still pass through an empty lane: %v", err)
	}
	if err := c.wait(t); err != nil {
		t.Fatal(err)
	}
}

func TestWriteErrorCompletesEveryCaller(t *testing.T) {
	boom := errors.New("connection refused")
	q := New(&recorder{fail: boom}, Config{FlushSnapshots: 3, FlushInterval: time.Hour}, quiet)
	defer q.Close()
	c := make(completion, 3)
	for _, h := range []string{"a", "b", "c"} {
		if err := q.Enqueue(snaps(h, 1), c.done); err != nil {
			t.Fatal(err)
		}
	}
	for range 3 {
		if err := c.wait(t); !errors.Is(err, boom) {
			t.Fatalf("completion %v, want the write's error", err)
		}
	}
	if st := q.Stats(); st.WriteErrors != 1 || st.Failed != 3 || st.Flushed != 0 {
		t.Fatalf("stats %+v", st)
	}
}

func TestInvalidSnapshotFailsOnlyItsCaller(t *testing.T) {
	w := &recorder{}
	q := New(w, Config{FlushSnapshots: 3, FlushInterval: time.Hour}, quiet)
	defer q.Close()
	got := make(map[string]error)
	var mu sync.Mutex
	var wg sync.WaitGroup
	for _, h := range []string{"a", "bad", "c"} {
		wg.Add(1)
		if err := q.Enqueue(snaps(h, 1), func(err error) {
			mu.Lock()
			got[h] = err
			mu.Unlock()
			wg.Done()
		}); err != nil {
			t.Fatal(err)
		}
	}
	wg.Wait()
	if got["a"] != nil || got["c"] != nil || !errors.Is(got["bad"], storage.ErrInvalid) {
		t.Fatalf("completions %v: only the caller with the refused snapshot may fail", got)
	}
}

// TestBlockedShardDoesNotStallOthers is why lanes exist: a shard that hangs
// fills and refuses its own lane while hosts on other shards keep flowing.
func TestBlockedShardDoesNotStallOthers(t *testing.T) {
	gate := make(chan struct{})
	w := &recorder{shards: 3, gate: map[int]chan struct{}{1: gate}}
	q := New(w, Config{Capacity: 30, FlushSnapshots: 5, FlushInterval: time.Millisecond}, quiet)
	defer q.Close()
	if q.Lanes() != 3 {
		t.Fatalf("%d lanes, want one per shard", q.Lanes())
	}
	// The lane's two workers take 5 each and hang; then 10 more wait.
	stuck := make(completion, 100)
	for i := 0; i < 10; i++ {
		if err := q.Enqueue(snaps(fmt.Sprintf("shard1-a%d", i), 1), stuck.done); err != nil {
			t.Fatal(err)
		}
	}
	waitFor(t, func() bool { return q.Stats().InFlight == 10 })
	var err error
	for i := 0; err == nil; i++ {
		err = q.Enqueue(snaps(fmt.Sprintf("shard1-h%d", i), 1), stuck.done)
		if i > 100 {
			t.Fatal("the blocked shard's lane never filled")
		}
	}
	if !errors.Is(err, ErrFull) || q.Stats().LaneDepth[1] != 10 {
		t.Fatalf("%v, stats %+v", err, q.Stats())
	}
	ok := make(completion, 100)
	for i := 0; i < 100; i++ {
		if err := q.Enqueue(snaps(fmt.Sprintf("shard%d-h%d", 2*(i%2), i), 1), ok.done); err != nil {
			t.Fatalf("host on a healthy shard refused while shard 1 is blocked: %v", err)
		}
		if err := ok.wait(t); err != nil {
			t.Fatal(err)
		}
	}
	// A batch that spans a healthy and the full lane is refused whole.
	before := q.Stats().LaneDepth[0]
	mixed := append(snaps("shard0-x", 1), snaps("shard1-x", 1)...)
	if err := q.Enqueue(mixed, ok.done); !errors.Is(err, ErrFull) {
		t.Fatalf("batch across a full lane: %v, want ErrFull", err)
	}
	if q.Stats().LaneDepth[0] != before {
		t.Fatal("a refused batch left snapshots in another lane")
	}
	close(gate)
	// Everything admitted to the blocked lane completes once it recovers.
	for range int(q.Stats().Enqueued) - 100 {
		if err := stuck.wait(t); err != nil {
			t.Fatal(err)
		}
	}
}

func TestMultiLaneBatchCompletesOnce(t *testing.T) {
	w := &recorder{shards: 3}
	q := New(w, Config{FlushSnapshots: 2, FlushInterval: time.Millisecond}, quiet)
	defer q.Close()
	var calls atomic.Int32
	done := make(chan error, 4)
	batch := append(append(snaps("shard0-a", 3), snaps("shard1-b", 2)...), snaps("shard2-c", 4)...)
	if err := q.Enqueue(batch, func(err error) { calls.Add(1); done <- err }); err != nil {
		t.Fatal(err)
	}
	if err := (completion(done)).wait(t); err != nil {
		t.Fatal(err)
	}
	q.Close()
	if n := calls.Load(); n != 1 {
		t.Fatalf("completion fired %d times", n)
	}
	if st := q.Stats(); st.Flushed != 9 {
		t.Fatalf("flushed %d, want 9", st.Flushed)
	}
}

func TestCloseFlushesWhatIsQueued(t *testing.T) {
	w := &recorder{}
	q := New(w, Config{FlushSnapshots: 1000, FlushInterval: time.Hour}, quiet)
	c := make(completion, 3)
	for _, h := range []string{"a", "b", "c"} {
		if err := q.Enqueue(snaps(h, 2), c.done); err != nil {
			t.Fatal(err)
		}
	}
	q.Close() // returns after the completions fired
	if len(c) != 3 {
		t.Fatalf("%d completions fired by Close, want 3", len(c))
	}
	for range 3 {
		if err := <-c; err != nil {
			t.Fatal(err)
		}
	}
	if err := q.Enqueue(snaps("late", 1), c.done); !errors.Is(err, ErrClosed) {
		t.Fatalf("enqueue after Close: %v", err)
	}
	if q.Stats().Refused[ReasonClosed] != 1 {
		t.Fatal("refusal after close not counted")
	}
	q.Close()
}

// TestConcurrentCallersEachCompleteOnce hammers the queue from many
// goroutines over three lanes with writes of random latency.
func TestConcurrentCallersEachCompleteOnce(t *testing.T) {
	w := &slowWriter{shards: 3}
	q := New(w, Config{Capacity: 200, FlushSnapshots: 16, FlushInterval: 200 * time.Microsecond, Workers: 2}, quiet)
	var admitted, completed atomic.Int64
	var wg sync.WaitGroup
	for g := 0; g < 8; g++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			r := rand.New(rand.NewPCG(uint64(g), 1))
			for i := 0; i < 300; i++ {
				var b []storage.Snapshot
				for range 1 + r.IntN(4) {
					b = append(b, snaps(fmt.Sprintf("shard%d-g%d", r.IntN(3), g), 1)...)
				}
				var once atomic.Bool
				err := q.Enqueue(b, func(err error) {
					if once.Swap(true) {
						t.Error("completion fired twice")
					}
					completed.Add(1)
				})
				if err == nil {
					admitted.Add(1)
				} else if !errors.Is(err, ErrFull) {
					t.Error(err)
				}
			}
		}()
	}
	wg.Wait()
	q.Close()
	if admitted.Load() != completed.Load() || admitted.Load() == 0 {
		t.Fatalf("%d admitted, %d completed", admitted.Load(), completed.Load())
	}
	st := q.Stats()
	if st.Flushed != w.n.Load() || st.Flushed != st.Enqueued || st.Depth != 0 || st.InFlight != 0 {
		t.Fatalf("stats %+v, writer saw %d", st, w.n.Load())
	}
}

type slowWriter struct {
	shards int
	n      atomic.Uint64
}

func (w *slowWriter) ShardCount() int { return w.shards }
func (w *slowWriter) ShardOf(h string) int {
	var n int
	_, _ = fmt.Sscanf(h, "shard%d-", &n)
	return n
}
func (w *slowWriter) WriteSnapshots(ctx context.Context, s []storage.Snapshot) error {
	lane := w.ShardOf(s[0].HostID)
	for i := range s {
		if w.ShardOf(s[i].HostID) != lane {
			panic("a write mixes lanes")
		}
	}
	time.Sleep(time.Duration(rand.IntN(300)) * time.Microsecond) // simulated I/O, not a test wait
	w.n.Add(uint64(len(s)))
	return nil
}

func waitFor(t *testing.T, cond func() bool) {
	t.Helper()
	deadline := time.Now().Add(10 * time.Second)
	for !cond() {
		if time.Now().After(deadline) {
			t.Fatal("condition not met in 10s")
		}
		time.Sleep(time.Millisecond)
	}
}

// tokenWriter completes one write per token received (all once closed).
type tokenWriter struct{ tokens chan struct{} }

func (w tokenWriter) WriteSnapshots(ctx context.Context, _ []storage.Snapshot) error {
	select {
	case <-w.tokens:
		return nil
	case <-ctx.Done():
		return ctx.Err()
	}
}

func TestFullErrorEstimatesDrain(t *testing.T) {
	w := tokenWriter{tokens: make(chan struct{})}
	q := New(w, Config{Capacity: 2, FlushSnapshots: 1, Workers: 1}, quiet)
	defer q.Close()
	defer close(w.tokens)
	c := make(completion, 8)
	if err := q.Enqueue(snaps("a", 1), c.done); err != nil {
		t.Fatal(err)
	}
	w.tokens <- struct{}{}
	if err := c.wait(t); err != nil {
		t.Fatal(err)
	}
	// b is taken by the worker and hangs; c and d fill the lane.
	for _, h := range []string{"b", "c", "d"} {
		if err := q.Enqueue(snaps(h, 1), c.done); err != nil {
			t.Fatal(err)
		}
		if h == "b" {
			waitFor(t, func() bool { return q.Stats().InFlight == 1 })
		}
	}
	err := q.Enqueue(snaps("e", 1), c.done)
	var full *FullError
	if !errors.As(err, &full) || !errors.Is(err, ErrFull) {
		t.Fatalf("want a FullError wrapping ErrFull, got %v", err)
	}
	if full.Depth != 2 || full.Capacity != 2 || full.Drain <= 0 {
		t.Fatalf("FullError %+v: want depth 2 of 2 and a drain estimate from the first write", full)
	}
}

func TestRefuseChecksTheHostsLane(t *testing.T) {
	gate := make(chan struct{})
	w := &recorder{shards: 2, gate: map[int]chan struct{}{1: gate}}
	q := New(w, Config{Capacity: 4, FlushSnapshots: 1, Workers: 1}, quiet)
	defer q.Close()
	defer close(gate)
	c := make(completion, 8)
	if err := q.Enqueue(snaps("shard1-a", 1), c.done); err != nil {
		t.Fatal(err)
	}
	waitFor(t, func() bool { return q.Stats().InFlight == 1 })
	if err := q.Enqueue(snaps("shard1-b", 2), c.done); err != nil {
		t.Fatal(err)
	}
	if err := q.Refuse("shard1-x", 1); !errors.Is(err, ErrFull) {
		t.Fatalf("full lane: Refuse = %v, want ErrFull", err)
	}
	if err := q.Refuse("shard0-x", 1); err != nil {
		t.Fatalf("the other lane has room: Refuse = %v", err)
	}
	if st := q.Stats(); st.Refused[ReasonFull] != 1 || st.Enqueued != 3 {
		t.Fatalf("stats %+v: Refuse must count its refusal and admit nothing", st)
	}
}
