package spool

import (
	"bytes"
	"log/slog"
	"os"
	"path/filepath"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"

	monitorpb "github.com/monitorhq/monitor/proto"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

// logBuf collects log output.
type logBuf struct {
	mu sync.Mutex
	b  bytes.Buffer
}

func (l *logBuf) Write(p []byte) (int, error) {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.Write(p)
}

func (l *logBuf) String() string {
	l.mu.Lock()
	defer l.mu.Unlock()
	return l.b.String()
}

func snap(ts int64) *monitorpb.Snapshot {
	return &monitorpb.Snapshot{HostId: "h", Timestamp: ts, Metrics: []*monitorpb.Metric{
		{Name: "cpu.usage_percent", Value: float64(ts), Unit: "%", Priority: monitorpb.Priority_PRIORITY_HIGH},
		{Name: "disk.used_bytes", Value: 1e9, Unit: "bytes", Labels: map[string]string{"mount": "/"}},
	}}
}

func snaps(from, to int64) []*monitorpb.Snapshot {
	var out []*monitorpb.Snapshot
	for ts := from; ts <= to; ts++ {
		out = append(out, snap(ts))
	}
	return out
}

func open(t *testing.T, opts Options) (*Spool, *logBuf) {
	t.Helper()
	var logs logBuf
	s, err := Open(opts, slog.New(slog.NewTextHandler(&logs, nil)))
	if err != nil {
		t.Fatal(err)
	}
	t.Cleanup(func() { s.Close() })
	return s, &logs
}

func stamps(items []Item) []int64 {
	out := make([]int64, len(items))
	for i, it := range items {
		out[i] = it.Snap.GetTimestamp()
	}
	return out
}

func seq(from, to int64) []int64 {
	var out []int64
	for i := from; i <= to; i++ {
		out = append(out, i)
	}
	return out
}

func all(s *Spool) []int64 {
	head, tail := s.Bounds()
	return stamps(s.ReadRange(head, tail))
}

func segFiles(t *testing.T, dir string) []string {
	t.Helper()
	m, err := filepath.Glob(filepath.Join(dir, "*.seg"))
	if err != nil {
		t.Fatal(err)
	}
	return m
}

func TestAppendReadRelease(t *testing.T) {
	for _, dir := range []string{"disk", "memory"} {
		t.Run(dir, func(t *testing.T) {
			opts := Options{MaxBytes: 1 << 20}
			if dir == "disk" {
				opts.Dir = t.TempDir()
			}
			s, _ := open(t, opts)
			if err := s.Append(snaps(1, 10)); err != nil {
				t.Fatal(err)
			}
			select {
			case <-s.Ready():
			default:
				t.Fatal("Ready not signalled")
			}
			items, next := s.Read(0, 4, 1<<20)
			if got := stamps(items); !slices.Equal(got, seq(1, 4)) || next != 4 || items[0].Pos != 0 || items[3].Pos != 3 {
				t.Fatalf("read %v next %d", got, next)
			}
			// A byte budget smaller than one record still returns one.
			if items, next := s.Read(4, 10, 1); len(items) != 1 || next != 5 {
				t.Fatalf("read %d items, next %d under a 1-byte budget", len(items), next)
			}
			s.Release(6)
			if s.Len() != 4 {
				t.Fatalf("len %d after releasing 6 of 10", s.Len())
			}
			if items, _ := s.Read(2, 100, 1<<20); !slices.Equal(stamps(items), seq(7, 10)) {
				t.Fatalf("read from a released position: %v", stamps(items))
			}
			if got := stamps(s.ReadRange(5, 8)); !slices.Equal(got, []int64{7, 8}) {
				t.Fatalf("range %v", got)
			}
			s.Release(100)
			if s.Len() != 0 || s.Stats().Records != 0 {
				t.Fatal("not empty after releasing everything")
			}
			if st := s.Stats(); st.Appended != 10 || st.Dropped[DropFull] != 0 || st.Dropped[DropCorrupt] != 0 {
				t.Fatalf("stats %+v", st)
			}
			if dir == "disk" != s.Durable() {
				t.Fatalf("durable = %v", s.Durable())
			}
		})
	}
}

func TestReopenReplaysOnlyUnacknowledged(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 1024}
	s, _ := open(t, opts)
	for i := int64(0); i < 10; i++ {
		if err := s.Append(snaps(i*10+1, i*10+10)); err != nil {
			t.Fatal(err)
		}
	}
	before := len(segFiles(t, dir))
	if before < 4 {
		t.Fatalf("%d segments of 1 KiB for 100 records", before)
	}
	s.Release(37) // timestamps 1..37 acknowledged
	if n := len(segFiles(t, dir)); n >= before {
		t.Fatalf("fully acknowledged segments not deleted: %d files, were %d", n, before)
	}
	s.Close()

	s2, logs := open(t, opts)
	if got := all(s2); !slices.Equal(got, seq(38, 100)) {
		t.Fatalf("replayed %v, want 38..100", got)
	}
	if st := s2.Stats(); st.Replayed != 63 || st.Records != 63 {
		t.Fatalf("stats %+v", st)
	}
	if !strings.Contains(logs.String(), "sending them first") {
		t.Errorf("replay not logged: %s", logs)
	}
	// New data goes after the replayed.
	if err := s2.Append(snaps(101, 101)); err != nil {
		t.Fatal(err)
	}
	got := all(s2)
	if got[0] != 38 || got[len(got)-1] != 101 || len(got) != 64 {
		t.Fatalf("after append: %v", got)
	}
	s2.Release(1 << 40)
	s2.Close()
	s3, _ := open(t, opts)
	if s3.Len() != 0 {
		t.Fatalf("%d records after everything was acknowledged", s3.Len())
	}
}

func TestTornLastRecordIsSkipped(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, MaxBytes: 1 << 20}
	s, _ := open(t, opts)
	for ts := int64(1); ts <= 3; ts++ {
		if err := s.Append(snaps(ts, ts)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	files := segFiles(t, dir)
	if len(files) != 1 {
		t.Fatalf("segments %v", files)
	}
	for _, where := range []string{"payload", "header"} {
		b, err := os.ReadFile(files[0])
		if err != nil {
			t.Fatal(err)
		}
		offs, _, err := scanRecords(b[len(magic):])
		if err != nil || len(offs) != 3 {
			t.Fatalf("%d records, %v", len(offs), err)
		}
		size := int64(len(b)) - 3 // inside the last record's payload
		if where == "header" {
			size = int64(len(magic)) + offs[2] + 3
		}
		if err := os.Truncate(files[0], size); err != nil {
			t.Fatal(err)
		}
		s2, logs := open(t, opts)
		if got := all(s2); !slices.Equal(got, []int64{1, 2}) {
			t.Fatalf("cut in the %s: kept %v, want [1 2]", where, got)
		}
		if st := s2.Stats(); st.Dropped[DropCorrupt] != 1 {
			t.Fatalf("cut in the %s: stats %+v", where, st)
		}
		if !strings.Contains(logs.String(), "torn last record skipped") {
			t.Fatalf("cut in the %s: not logged: %s", where, logs)
		}
		// The spool goes on: new records land in a new segment.
		if err := s2.Append(snaps(9, 9)); err != nil {
			t.Fatal(err)
		}
		if got := all(s2); got[len(got)-1] != 9 {
			t.Fatalf("after append %v", got)
		}
		s2.Release(1 << 40)
		s2.Close()
		// Put back a spool with records 1 and 2 (the newest segment was
		// deleted when acknowledged; the damaged one too).
		if len(segFiles(t, dir)) != 0 {
			t.Fatalf("segments left: %v", segFiles(t, dir))
		}
		s3, _ := open(t, opts)
		if err := s3.Append(snaps(1, 3)); err != nil {
			t.Fatal(err)
		}
		s3.Close()
		files = segFiles(t, dir)
	}
}

func TestCorruptRecordEndsItsSegmentOnly(t *testing.T) {
	dir := t.TempDir()
	opts := Options{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 300}
	s, _ := open(t, opts)
	for ts := int64(1); ts <= 12; ts++ {
		if err := s.Append(snaps(ts, ts)); err != nil {
			t.Fatal(err)
		}
	}
	s.Close()
	files := segFiles(t, dir)
	if len(files) < 3 {
		t.Fatalf("want several segments, got %v", files)
	}
	b, err := os.ReadFile(files[0])
	if err != nil {
		t.Fatal(err)
	}
	_, n, err := decodeRecord(b[len(magic):])
	if err != nil {
		t.Fatal(err)
	}
	b[len(magic)+n+headerLen+2] ^= 0xff // the second record's payload
	if err := os.WriteFile(files[0], b, 0o640); err != nil {
		t.Fatal(err)
	}
	s2, logs := open(t, opts)
	got := all(s2)
	if got[0] != 1 || slices.Contains(got, 2) || got[len(got)-1] != 12 {
		t.Fatalf("kept %v: want 1, then the later segments", got)
	}
	if st := s2.Stats(); st.Dropped[DropCorrupt] != 1 {
		t.Fatalf("stats %+v", st)
	}
	if !strings.Contains(logs.String(), "corrupt record") {
		t.Fatalf("not logged: %s", logs)
	}
}

func TestCapDropsOldestSegmentAndCounts(t *testing.T) {
	for _, dir := range []string{"disk", "memory"} {
		t.Run(dir, func(t *testing.T) {
			opts := Options{MaxBytes: 4096, SegmentBytes: 1024}
			if dir == "disk" {
				opts.Dir = t.TempDir()
			}
			s, _ := open(t, opts)
			for ts := int64(1); ts <= 200; ts++ {
				if err := s.Append(snaps(ts, ts)); err != nil {
					t.Fatal(err)
				}
			}
			st := s.Stats()
			if st.Bytes > opts.MaxBytes {
				t.Fatalf("%d bytes held, cap %d", st.Bytes, opts.MaxBytes)
			}
			got := all(s)
			if got[len(got)-1] != 200 || !slices.Equal(got, seq(got[0], 200)) {
				t.Fatalf("kept %v: want the newest, without gaps", got)
			}
			if st.Dropped[DropFull]+uint64(len(got)) != 200 {
				t.Fatalf("dropped %d + kept %d != 200", st.Dropped[DropFull], len(got))
			}
			if dir == "disk" && len(segFiles(t, opts.Dir)) != st.Segments {
				t.Fatalf("%d files, %d segments", len(segFiles(t, opts.Dir)), st.Segments)
			}
		})
	}
}

func TestDiskFailureFallsBackToMemory(t *testing.T) {
	dir := filepath.Join(t.TempDir(), "spool")
	s, logs := open(t, Options{Dir: dir, MaxBytes: 1 << 20, SegmentBytes: 200, DiskRetry: time.Hour})
	if err := s.Append(snaps(1, 1)); err != nil {
		t.Fatal(err)
	}
	// The directory vanishes (a disk unmounted under us): new segments
	// cannot be created.
	if err := os.RemoveAll(dir); err != nil {
		t.Fatal(err)
	}
	for ts := int64(2); ts <= 6; ts++ {
		if err := s.Append(snaps(ts, ts)); err != nil {
			t.Fatal(err)
		}
	}
	st := s.Stats()
	if st.WriteErrors == 0 || st.MemorySegments == 0 || s.Durable() {
		t.Fatalf("stats %+v durable %v", st, s.Durable())
	}
	if got := all(s); !slices.Equal(got, seq(1, 6)) {
		t.Fatalf("held %v", got)
	}
	if !strings.Contains(logs.String(), "keeping new snapshots in memory") {
		t.Fatalf("not logged: %s", logs)
	}
}

func TestOneSpoolPerDirectory(t *testing.T) {
	dir := t.TempDir()
	s, _ := open(t, Options{Dir: dir, MaxBytes: 1 << 20})
	if _, err := Open(Options{Dir: dir, MaxBytes: 1 << 20}, slog.New(slog.DiscardHandler)); err == nil || !strings.Contains(err.Error(), "in use by another agent") {
		t.Fatalf("second Open: %v", err)
	}
	s.Close()
	s2, _ := open(t, Options{Dir: dir, MaxBytes: 1 << 20})
	s2.Close()
}

func TestJunkFilesAreNotFatal(t *testing.T) {
	dir := t.TempDir()
	for name, content := range map[string]string{
		"0000000000000001.seg": "",             // crash right after create
		"0000000000000002.seg": "MONSPOO",      // partial magic
		"0000000000000003.seg": "not a spool!", // wrong magic
		"notes.txt":            "hello",
		"acked":                "garbage",
	} {
		if err := os.WriteFile(filepath.Join(dir, name), []byte(content), 0o640); err != nil {
			t.Fatal(err)
		}
	}
	s, _ := open(t, Options{Dir: dir, MaxBytes: 1 << 20})
	if s.Len() != 0 {
		t.Fatalf("%d records from junk", s.Len())
	}
	if err := s.Append(snaps(1, 2)); err != nil {
		t.Fatal(err)
	}
	if got := all(s); !slices.Equal(got, []int64{1, 2}) {
		t.Fatalf("held %v", got)
	}
}

func BenchmarkAppendRelease(b *testing.B) {
	s, err := Open(Options{Dir: b.TempDir(), MaxBytes: 64 << 20}, slog.New(slog.DiscardHandler))
	if err != nil {
		b.Fatal(err)
	}
	defer s.Close()
	batch := snaps(1, 1)
	b.ReportAllocs()
	for b.Loop() {
		if err := s.Append(batch); err != nil {
			b.Fatal(err)
		}
		_, tail := s.Bounds()
		s.Read(tail-1, 1, 1<<20)
		s.Release(tail)
	}
}
