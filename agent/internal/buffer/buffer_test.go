package buffer

import (
	"testing"

	monitorpb "github.com/monitorhq/monitor/proto"
)

func snap(ts int64) *monitorpb.Snapshot { return &monitorpb.Snapshot{HostId: "h", Timestamp: ts} }

func stamps(ss []*monitorpb.Snapshot) []int64 {
	out := make([]int64, len(ss))
	for i, s := range ss {
		out[i] = s.Timestamp
	}
	return out
}

func equal(a []int64, b ...int64) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func TestReadReleaseAndGrow(t *testing.T) {
	b := New(200)
	for i := int64(0); i < 150; i++ { // grows past the initial 64 slots
		if b.Push(snap(i)) {
			t.Fatalf("push %d dropped with room left", i)
		}
	}
	select {
	case <-b.Ready():
	default:
		t.Fatal("Ready not signalled after Push")
	}
	got, first, next := b.Read(0, 3)
	if !equal(stamps(got), 0, 1, 2) || first != 0 || next != 3 {
		t.Fatalf("Read(0,3) = %v %d %d", stamps(got), first, next)
	}
	got, first, next = b.Read(148, 10)
	if !equal(stamps(got), 148, 149) || first != 148 || next != 150 {
		t.Fatalf("Read(148,10) = %v %d %d", stamps(got), first, next)
	}
	if got, _, next := b.Read(150, 10); len(got) != 0 || next != 150 {
		t.Fatalf("Read past the tail = %v %d", stamps(got), next)
	}
	if n := b.Release(100); n != 100 {
		t.Fatalf("Release(100) freed %d", n)
	}
	if n := b.Release(50); n != 0 {
		t.Fatalf("releasing again freed %d", n)
	}
	// Positions below the head are skipped.
	got, first, _ = b.Read(10, 2)
	if !equal(stamps(got), 100, 101) || first != 100 {
		t.Fatalf("Read below head = %v from %d", stamps(got), first)
	}
	if got := b.ReadRange(98, 103); !equal(stamps(got), 100, 101, 102) {
		t.Fatalf("ReadRange(98,103) = %v", stamps(got))
	}
	if head, tail := b.Bounds(); head != 100 || tail != 150 || b.Len() != 50 {
		t.Fatalf("bounds %d %d len %d", head, tail, b.Len())
	}
	if n := b.Release(1000); n != 50 || b.Len() != 0 {
		t.Fatalf("Release(all) freed %d, len %d", n, b.Len())
	}
	// Positions keep counting after the buffer emptied.
	b.Push(snap(150))
	if head, tail := b.Bounds(); head != 150 || tail != 151 {
		t.Fatalf("bounds after refill %d %d", head, tail)
	}
}

func TestFullDropsOldest(t *testing.T) {
	b := New(16)
	drops := 0
	for i := int64(0); i < 20; i++ {
		if b.Push(snap(i)) {
			drops++
		}
	}
	if drops != 4 || b.Dropped() != 4 || b.Len() != 16 {
		t.Fatalf("drops %d, Dropped %d, Len %d; want 4, 4, 16", drops, b.Dropped(), b.Len())
	}
	got, first, _ := b.Read(0, 100)
	if first != 4 || len(got) != 16 || got[0].Timestamp != 4 || got[15].Timestamp != 19 {
		t.Fatalf("after drops: first %d, %v", first, stamps(got))
	}
	// A range whose start was dropped returns what is left of it.
	if got := b.ReadRange(2, 6); !equal(stamps(got), 4, 5) {
		t.Fatalf("ReadRange over dropped positions = %v", stamps(got))
	}
	if got := b.ReadRange(0, 3); len(got) != 0 {
		t.Fatalf("ReadRange of dropped positions = %v", stamps(got))
	}
	// Releasing dropped positions counts only held ones.
	if n := b.Release(6); n != 2 {
		t.Fatalf("Release(6) freed %d, want 2", n)
	}
}

func BenchmarkPushReadRelease(b *testing.B) {
	b.ReportAllocs()
	buf := New(1024)
	s := snap(1)
	var pos uint64
	for i := 0; i < b.N; i++ {
		buf.Push(s)
		if i%64 == 63 {
			_, _, next := buf.Read(pos, 64)
			pos = next
			buf.Release(next)
		}
	}
}
