//go:build linux

package topkshm

import (
	"encoding/binary"
	"errors"
	"fmt"
	"io/fs"
	"os"
	"reflect"
	"runtime"
	"strings"
	"sync/atomic"
	"testing"
	"time"

	"go.uber.org/goleak"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// testName returns a segment name unique to this test process and test.
func testName(t testing.TB) string {
	return fmt.Sprintf("/monitor-topkshm-test-%d-%s", os.Getpid(), strings.NewReplacer("/", "_", " ", "_").Replace(t.Name()))
}

func create(t *testing.T, k, maxMetrics int, ttl time.Duration) (*Writer, string) {
	t.Helper()
	name := testName(t)
	w, err := Create(name, k, maxMetrics, ttl)
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { w.Close() })
	return w, name
}

// publish writes one section: slots by id.
func publish(t *testing.T, w *Writer, updated time.Time, slots map[int]MetricTop) {
	t.Helper()
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	for id, mt := range slots {
		if err := w.WriteSlot(id, mt.Metric, mt.Entries); err != nil {
			t.Fatal(err)
		}
	}
	w.End(updated)
}

// TestWriteThenRead publishes two sections and reads each back whole: the
// header fields, slots in id order (an unwritten slot below the highest is
// skipped), a slot rewritten with fewer entries, and no segment after
// Close.
func TestWriteThenRead(t *testing.T) {
	const k, ttl = 3, 90 * time.Second
	w, name := create(t, k, 4, ttl)
	if s, err := ReadShared(name); err != nil || s.Seq != 0 || len(s.Metrics) != 0 || s.K != k || s.TTL != ttl {
		t.Fatalf("fresh segment: %+v, %v", s, err)
	}

	cpu := MetricTop{Metric: "cpu.usage", Entries: []Entry{{Host: "web-1", Value: 97.5, TS: 1_700_000_000}, {Host: "web-2", Value: 50, TS: 1_700_000_001}, {Host: strings.Repeat("h", HostWidth), Value: -1, TS: 3}}}
	mem := MetricTop{Metric: strings.Repeat("m", NameWidth), Entries: []Entry{{Host: "db-1", Value: 12.25, TS: 1_700_000_002}}}
	updated := time.Unix(1_700_000_005, 123)
	publish(t, w, updated, map[int]MetricTop{0: cpu, 2: mem})
	s, err := ReadShared(name)
	if err != nil {
		t.Fatal(err)
	}
	want := Snapshot{Seq: 2, K: k, TTL: ttl, Updated: updated, Metrics: []MetricTop{cpu, mem}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("read\n%+v\nwant\n%+v", s, want)
	}

	cpu.Entries = cpu.Entries[:1]
	disk := MetricTop{Metric: "disk.used_percent{mount=/}", Entries: []Entry{}}
	publish(t, w, updated.Add(time.Second), map[int]MetricTop{0: cpu, 1: disk})
	s, err = ReadShared(name)
	if err != nil {
		t.Fatal(err)
	}
	want = Snapshot{Seq: 4, K: k, TTL: ttl, Updated: updated.Add(time.Second), Metrics: []MetricTop{cpu, disk, mem}}
	if !reflect.DeepEqual(s, want) {
		t.Fatalf("read\n%+v\nwant\n%+v", s, want)
	}

	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}
	if _, err := ReadShared(name); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("read after Close: %v, want fs.ErrNotExist", err)
	}
}

// TestWriterRefusesBadInput checks that nothing a caller passes can write
// outside a slot or a field.
func TestWriterRefusesBadInput(t *testing.T) {
	if _, err := Create("no-slash", 1, 1, time.Second); err == nil {
		t.Error("Create accepted a name without a slash")
	}
	for _, dims := range [][2]int{{0, 1}, {1, 0}, {MaxK + 1, 1}, {1, MaxMetrics + 1}} {
		if _, err := Create(testName(t), dims[0], dims[1], time.Second); err == nil {
			t.Errorf("Create accepted k %d, max metrics %d", dims[0], dims[1])
		}
	}

	w, _ := create(t, 2, 2, time.Minute)
	one := []Entry{{Host: "a", Value: 1, TS: 1}}
	if err := w.WriteSlot(0, "m", one); err == nil {
		t.Error("WriteSlot outside a write section accepted")
	}
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	if err := w.Begin(); err == nil {
		t.Error("nested Begin accepted")
	}
	for _, c := range []struct {
		name   string
		id     int
		metric string
		top    []Entry
	}{
		{"negative id", -1, "m", one},
		{"id beyond max metrics", 2, "m", one},
		{"empty metric", 0, "", one},
		{"metric over NameWidth", 0, strings.Repeat("m", NameWidth+1), one},
		{"more entries than k", 0, "m", []Entry{{Host: "a"}, {Host: "b"}, {Host: "c"}}},
		{"empty host", 0, "m", []Entry{{Host: ""}}},
		{"host over HostWidth", 0, "m", []Entry{{Host: strings.Repeat("h", HostWidth+1)}}},
	} {
		if err := w.WriteSlot(c.id, c.metric, c.top); err == nil {
			t.Errorf("%s: accepted", c.name)
		}
	}
	w.End(time.Now())
	if err := w.Close(); err != nil {
		t.Fatal(err)
	}
	if err := w.Begin(); err == nil {
		t.Error("Begin after Close accepted")
	}
	if err := w.WriteSlot(0, "m", one); err == nil {
		t.Error("WriteSlot after Close accepted")
	}
}

// TestReadSharedRefusesOtherSegments checks the reader's errors: a missing
// segment, a bad name, a zeroed object, and a segment whose header or slot
// does not match version 1.
func TestReadSharedRefusesOtherSegments(t *testing.T) {
	if _, err := ReadShared("/monitor-topk-test-missing-" + fmt.Sprint(os.Getpid())); !errors.Is(err, fs.ErrNotExist) {
		t.Fatalf("missing segment: %v, want fs.ErrNotExist", err)
	}
	if _, err := ReadShared("bad"); err == nil {
		t.Fatal("bad name accepted")
	}
	zero := testName(t) + "-zero"
	if err := os.WriteFile(shmPath(zero), make([]byte, 4096), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(shmPath(zero))
	if _, err := ReadShared(zero); !errors.Is(err, ErrNotTopK) {
		t.Fatalf("zeroed segment: %v, want ErrNotTopK", err)
	}
	short := testName(t) + "-short"
	if err := os.WriteFile(shmPath(short), make([]byte, 8), 0o600); err != nil {
		t.Fatal(err)
	}
	defer os.Remove(shmPath(short))
	if _, err := ReadShared(short); !errors.Is(err, ErrNotTopK) {
		t.Fatalf("8-byte segment: %v, want ErrNotTopK", err)
	}

	u32 := func(v uint32) []byte { return binary.NativeEndian.AppendUint32(nil, v) }
	for _, c := range []struct {
		name  string
		off   int64
		bytes []byte
	}{
		{"version 2", offVersion, u32(2)},
		{"name width 64", offNameWidth, u32(64)},
		{"host width 64", offHostWidth, u32(64)},
		{"slot size off by 8", offSlotSize, u32(uint32(SlotSize(2) + 8))},
		{"max metrics beyond the file", offMaxMetrics, u32(1000)},
		{"entry count above k", HeaderSize + NameWidth, u32(3)},
	} {
		t.Run(c.name, func(t *testing.T) {
			w, name := create(t, 2, 2, time.Minute)
			publish(t, w, time.Now(), map[int]MetricTop{0: {Metric: "m", Entries: []Entry{{Host: "a", Value: 1, TS: 1}}}})
			f, err := os.OpenFile(shmPath(name), os.O_WRONLY, 0)
			if err != nil {
				t.Fatal(err)
			}
			_, err = f.WriteAt(c.bytes, c.off)
			f.Close()
			if err != nil {
				t.Fatal(err)
			}
			if _, err := ReadShared(name); !errors.Is(err, ErrNotTopK) {
				t.Fatalf("%v, want ErrNotTopK", err)
			}
		})
	}
}

// TestReadSharedGivesUpOnABusyWriter leaves a write section open (the
// sequence stays odd): the reader retries for its budget, then ErrBusy.
func TestReadSharedGivesUpOnABusyWriter(t *testing.T) {
	w, name := create(t, 1, 1, time.Minute)
	if err := w.Begin(); err != nil {
		t.Fatal(err)
	}
	if _, err := ReadShared(name); !errors.Is(err, ErrBusy) {
		t.Fatalf("read during a write: %v, want ErrBusy", err)
	}
	w.End(time.Now())
	if _, err := ReadShared(name); err != nil {
		t.Fatalf("read after End: %v", err)
	}
}

// TestReaderNeverSeesAPartialSection runs a writer goroutine that rewrites
// every slot with the round number in each section, and reads until 200
// distinct rounds were seen: every read must hold one round only. The
// writer publishes a burst of sections each time the reader finished a
// read, so sections overlap the reads without starving them (an engine
// publishes per batch, not back to back).
func TestReaderNeverSeesAPartialSection(t *testing.T) {
	const k, metrics, rounds, burst = 4, 3, 200, 3
	w, name := create(t, k, metrics, time.Minute)
	stop, done := make(chan struct{}), make(chan error, 1)
	var reads atomic.Int64
	go func() {
		top := make([]Entry, k)
		hosts, names := make([]string, k), make([]string, metrics)
		for i := range hosts {
			hosts[i] = fmt.Sprintf("h%d", i)
		}
		for m := range names {
			names[m] = fmt.Sprintf("metric.%d", m)
		}
		seen := int64(-1)
		for r := 1; ; r++ {
			for r%burst == 1 && reads.Load() == seen {
				select {
				case <-stop:
					done <- nil
					return
				default:
					runtime.Gosched()
				}
			}
			seen = reads.Load()
			for i := range top {
				top[i] = Entry{Host: hosts[i], Value: float64(r), TS: int64(r)}
			}
			if err := w.Begin(); err != nil {
				done <- err
				return
			}
			for m := range metrics {
				if err := w.WriteSlot(m, names[m], top); err != nil {
					done <- err
					return
				}
			}
			w.End(time.Unix(int64(r), 0))
		}
	}()
	defer func() {
		close(stop)
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	deadline := time.Now().Add(20 * time.Second)
	last, distinct := 0, 0
	for distinct < rounds {
		if time.Now().After(deadline) {
			t.Fatalf("saw %d distinct rounds, want %d", distinct, rounds)
		}
		s, err := ReadShared(name)
		reads.Add(1)
		if errors.Is(err, ErrBusy) {
			continue
		}
		if err != nil {
			t.Fatal(err)
		}
		if len(s.Metrics) == 0 {
			continue // before the first section
		}
		r := int(s.Updated.Unix())
		if len(s.Metrics) != metrics {
			t.Fatalf("round %d: %d metrics", r, len(s.Metrics))
		}
		for _, mt := range s.Metrics {
			for _, e := range mt.Entries {
				if int(e.Value) != r || int(e.TS) != r || len(mt.Entries) != k {
					t.Fatalf("torn read: round %d, metric %s holds %+v", r, mt.Metric, mt.Entries)
				}
			}
		}
		if r < last {
			t.Fatalf("round went back from %d to %d", last, r)
		}
		if r > last {
			distinct++
			last = r
		}
	}
}
