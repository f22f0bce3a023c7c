package hub

import (
	"testing"

	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/pkg/storage"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func snaps(hosts ...string) []storage.Snapshot {
	out := make([]storage.Snapshot, len(hosts))
	for i, h := range hosts {
		out[i] = storage.Snapshot{HostID: h, Timestamp: int64(i + 1)}
	}
	return out
}

func TestFilterAndOrder(t *testing.T) {
	h := New()
	all := h.Subscribe(nil, 8)
	one := h.Subscribe([]string{"b"}, 8)
	h.Publish(snaps("a", "b"))
	h.Publish(snaps("a"))
	if d := <-all.C(); len(d.Snapshots) != 2 || d.Dropped != 0 {
		t.Fatalf("all got %+v", d)
	}
	if d := <-all.C(); len(d.Snapshots) != 1 {
		t.Fatalf("all second got %+v", d)
	}
	if d := <-one.C(); len(d.Snapshots) != 1 || d.Snapshots[0].HostID != "b" {
		t.Fatalf("filtered got %+v", d)
	}
	select {
	case d := <-one.C():
		t.Fatalf("filtered subscriber got a batch without its host: %+v", d)
	default:
	}
	h.Close()
	if _, ok := <-all.C(); ok {
		t.Fatal("queue not closed by hub Close")
	}
	all.Close() // after hub close: no panic
}

func TestSlowSubscriberDropsAndGetsGapMarker(t *testing.T) {
	h := New()
	defer h.Close()
	slow := h.Subscribe(nil, 2)
	fast := h.Subscribe(nil, 100)
	for i := 0; i < 10; i++ {
		h.Publish(snaps("a")) // never blocks although slow never reads
	}
	if got := len(fast.C()); got != 10 {
		t.Fatalf("fast subscriber has %d batches, want 10", got)
	}
	<-slow.C()
	<-slow.C()
	if slow.Dropped() != 8 || h.Dropped() != 8 {
		t.Fatalf("dropped = %d (hub: %d), want 8", slow.Dropped(), h.Dropped())
	}
	h.Publish(snaps("a"))
	if d := <-slow.C(); d.Dropped != 8 {
		t.Fatalf("gap marker = %d, want 8", d.Dropped)
	}
	slow.Close()
	if _, ok := <-slow.C(); ok {
		t.Fatal("closed subscription still open")
	}
}
