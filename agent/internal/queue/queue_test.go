package queue

import (
	"runtime"
	"slices"
	"sync"
	"testing"

	"go.uber.org/goleak"
	"google.golang.org/protobuf/proto"

	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

const (
	low    = monitorpb.Priority_PRIORITY_LOW
	normal = monitorpb.Priority_PRIORITY_NORMAL
	high   = monitorpb.Priority_PRIORITY_HIGH
)

// snap returns a snapshot at ts with one metric per priority given.
func snap(ts int64, prios ...monitorpb.Priority) *monitorpb.Snapshot {
	s := &monitorpb.Snapshot{HostId: "h", Timestamp: ts}
	for i, p := range prios {
		s.Metrics = append(s.Metrics, &monitorpb.Metric{Name: "m" + string(rune('a'+i)), Value: float64(i), Unit: "bytes", Priority: p})
	}
	return s
}

func newQueue(t *testing.T, slots int, maxBytes int64) *Queue {
	t.Helper()
	q, err := New(slots, maxBytes)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(q.Close)
	return q
}

func stamps(ss []*monitorpb.Snapshot) []int64 {
	out := make([]int64, len(ss))
	for i, s := range ss {
		out[i] = s.GetTimestamp()
	}
	return out
}

func TestFIFO(t *testing.T) {
	q := newQueue(t, 16, 1<<20)
	for i := range 5 {
		q.Push(snap(int64(i), high))
	}
	select {
	case <-q.Ready():
	default:
		t.Fatal("Ready not signalled after Push")
	}
	var want int64
	for i := range 5 {
		want += int64(proto.Size(snap(int64(i), high)))
	}
	if q.Len() != 5 || q.Bytes() != want {
		t.Fatalf("len %d bytes %d", q.Len(), q.Bytes())
	}
	if got := stamps(q.PopBatch(3)); !slices.Equal(got, []int64{0, 1, 2}) {
		t.Fatalf("popped %v", got)
	}
	if got := stamps(q.PopBatch(10)); !slices.Equal(got, []int64{3, 4}) {
		t.Fatalf("popped %v", got)
	}
	if q.PopBatch(10) != nil || q.Len() != 0 || q.Bytes() != 0 {
		t.Fatal("queue not empty")
	}
}

func TestFullRingDropsTheOldest(t *testing.T) {
	q := newQueue(t, 16, 1<<30)
	for i := range 20 {
		q.Push(snap(int64(i), low, high))
	}
	d := q.Drops()
	if d.Snapshots[DropRingFull] != 4 || d.Metrics[DropLowPriority] != 0 {
		t.Fatalf("drops %+v, want 4 ring_full and no stripping (bytes are within budget)", d)
	}
	if got := stamps(q.PopBatch(100)); !slices.Equal(got, []int64{4, 5, 6, 7, 8, 9, 10, 11, 12, 13, 14, 15, 16, 17, 18, 19}) {
		t.Fatalf("kept %v, want the newest 16", got)
	}
}

// TestDropOrderUnderTheByteBudget fills the budget and checks the order:
// LOW metrics of the oldest snapshots first, then of newer ones and the
// incoming one, then NORMAL metrics the same way, then the oldest
// snapshots; HIGH metrics are never stripped.
func TestDropOrderUnderTheByteBudget(t *testing.T) {
	full := int64(proto.Size(snap(100, low, low, normal, normal, high)))
	onlyHigh := int64(proto.Size(snap(100, high)))
	q := newQueue(t, 64, 4*full)
	for i := range 4 {
		q.Push(snap(int64(100+i), low, low, normal, normal, high))
	}
	if d := q.Drops(); d.Metrics[DropLowPriority] != 0 {
		t.Fatalf("stripped within budget: %+v", d)
	}

	// One more: the oldest snapshot loses its LOW metrics (enough room).
	q.Push(snap(104, low, low, normal, normal, high))
	d := q.Drops()
	if d.Metrics[DropLowPriority] == 0 || d.Metrics[DropNormalPriority] != 0 || d.Snapshots[DropRingBytes] != 0 {
		t.Fatalf("after one over budget: %+v, want only LOW stripped", d)
	}
	// Keep pushing: every LOW goes before any NORMAL, every NORMAL before
	// any snapshot.
	var prev Drops
	for i := 5; i < 40; i++ {
		q.Push(snap(int64(100+i), low, low, normal, normal, high))
		d := q.Drops()
		if d.Metrics[DropNormalPriority] > 0 && lowLeft(q) {
			t.Fatalf("push %d: NORMAL stripped while LOW metrics are queued", i)
		}
		if d.Snapshots[DropRingBytes] > prev.Snapshots[DropRingBytes] && d.Metrics[DropNormalPriority] == 0 {
			t.Fatalf("push %d: snapshot dropped before NORMAL metrics were stripped", i)
		}
		if q.Bytes() > 4*full {
			t.Fatalf("push %d: %d bytes queued, budget %d", i, q.Bytes(), 4*full)
		}
		prev = d
	}
	d = q.Drops()
	if d.Snapshots[DropRingBytes] == 0 {
		t.Fatalf("drops %+v: 40 snapshots never exceeded a budget of 4", d)
	}
	got := q.PopBatch(100)
	// What is left: the newest snapshots, oldest first, consecutive, each
	// still holding its HIGH metric.
	ts := stamps(got)
	if ts[len(ts)-1] != 139 || int64(len(ts)) > 4*full/onlyHigh+1 {
		t.Fatalf("kept %v", ts)
	}
	for i, s := range got {
		if i > 0 && ts[i] != ts[i-1]+1 {
			t.Fatalf("kept %v: a gap, so a snapshot other than the oldest was dropped", ts)
		}
		if !hasPriority(s, high) {
			t.Fatalf("snapshot %d lost its HIGH metric", s.GetTimestamp())
		}
	}
	total := uint64(0)
	for _, n := range d.Snapshots {
		total += n
	}
	if total+uint64(len(got)) != 40 {
		t.Fatalf("%d dropped + %d kept != 40 pushed", total, len(got))
	}
}

func hasPriority(s *monitorpb.Snapshot, p monitorpb.Priority) bool {
	for _, m := range s.GetMetrics() {
		if m.GetPriority() == p {
			return true
		}
	}
	return false
}

func lowLeft(q *Queue) bool {
	for _, e := range q.queued() {
		if hasPriority(e.snap, low) {
			return true
		}
	}
	return false
}

func TestStrippingCopiesNeverModifies(t *testing.T) {
	orig := snap(1, low, high)
	q := newQueue(t, 16, 2*int64(proto.Size(orig))-1) // room for one and a half
	q.Push(orig)
	q.Push(snap(2, low, high))
	if len(orig.GetMetrics()) != 2 {
		t.Fatal("a pushed snapshot was modified")
	}
	got := q.PopBatch(2)
	if len(got) != 2 || len(got[0].GetMetrics()) != 1 || got[0].GetMetrics()[0].GetPriority() != high {
		t.Fatalf("got %v", got)
	}
}

// TestConcurrentPushPop runs producers and consumers with a tight budget,
// so stripping races with popping: every snapshot must come out at most
// once, and popped + dropped must equal pushed.
func TestConcurrentPushPop(t *testing.T) {
	const producers, consumers, each = 3, 2, 2000
	q := newQueue(t, 32, 20*int64(proto.Size(snap(1, low, normal, high))))
	var wg sync.WaitGroup
	for p := range producers {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := range each {
				q.Push(snap(int64(p*each+i), low, normal, high))
			}
		}()
	}
	got := make([][]int64, consumers)
	stop := make(chan struct{})
	var cwg sync.WaitGroup
	for c := range consumers {
		cwg.Add(1)
		go func() {
			defer cwg.Done()
			for {
				ss := q.PopBatch(7)
				got[c] = append(got[c], stamps(ss)...)
				if len(ss) == 0 {
					select {
					case <-stop:
						if q.Len() == 0 {
							return
						}
					default:
						runtime.Gosched()
					}
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	cwg.Wait()
	seen := map[int64]bool{}
	for _, ts := range got {
		for _, x := range ts {
			if seen[x] {
				t.Fatalf("snapshot %d popped twice", x)
			}
			seen[x] = true
		}
	}
	d := q.Drops()
	dropped := d.Snapshots[DropRingFull] + d.Snapshots[DropRingBytes]
	if uint64(len(seen))+dropped != producers*each {
		t.Fatalf("%d popped + %d dropped != %d pushed", len(seen), dropped, producers*each)
	}
	if q.Bytes() != 0 {
		t.Fatalf("%d bytes accounted in an empty queue", q.Bytes())
	}
}

func BenchmarkPushPop(b *testing.B) {
	q, err := New(1024, 1<<30)
	if err != nil {
		b.Fatal(err)
	}
	defer q.Close()
	s := snap(1, low, normal, high)
	b.ReportAllocs()
	for b.Loop() {
		q.Push(s)
		q.PopBatch(1)
	}
}
