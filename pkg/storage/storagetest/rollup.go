package storagetest

import (
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

func mustRollup(t *testing.T, s storage.Store, q storage.RollupQuery) []storage.RollupSeries {
	t.Helper()
	got, err := s.RangeRollup(testCtx(t), q)
	if err != nil {
		t.Fatalf("RangeRollup(%s, %s, %d..%d): %v", q.HostID, q.Resolution, q.From, q.To, err)
	}
	if !slices.IsSortedFunc(got, func(a, b storage.RollupSeries) int { return strings.Compare(a.Series, b.Series) }) {
		t.Fatalf("RangeRollup(%s, %s): series not sorted", q.HostID, q.Resolution)
	}
	return got
}

// model is the rollup contract written plainly: per host, timestamps
// counted once (the first call that stores them; within a call the last
// duplicate), samples of a snapshot deduplicated with the last one winning,
// and snapshots older than the raw retention left out.
type model struct {
	counted map[string]map[int64]bool
	// host -> resolution -> bucket start -> series -> aggregate
	aggs map[string]map[storage.Resolution]map[int64]map[string]*storage.Aggregate
}

func newModel() *model {
	return &model{counted: map[string]map[int64]bool{}, aggs: map[string]map[storage.Resolution]map[int64]map[string]*storage.Aggregate{}}
}

// write applies one WriteSnapshots call.
func (m *model) write(snaps []storage.Snapshot, cutoff int64) {
	last := map[string]map[int64]int{}
	for i, sn := range snaps {
		if last[sn.HostID] == nil {
			last[sn.HostID] = map[int64]int{}
		}
		last[sn.HostID][sn.Timestamp] = i
	}
	for i, sn := range snaps {
		if last[sn.HostID][sn.Timestamp] != i || sn.Timestamp < cutoff {
			continue
		}
		if m.counted[sn.HostID] == nil {
			m.counted[sn.HostID] = map[int64]bool{}
		}
		if m.counted[sn.HostID][sn.Timestamp] {
			continue
		}
		m.counted[sn.HostID][sn.Timestamp] = true
		for _, smp := range canonical(sn).Samples {
			for _, res := range storage.RollupResolutions() {
				if m.aggs[sn.HostID] == nil {
					m.aggs[sn.HostID] = map[storage.Resolution]map[int64]map[string]*storage.Aggregate{}
				}
				byStart := m.aggs[sn.HostID][res]
				if byStart == nil {
					byStart = map[int64]map[string]*storage.Aggregate{}
					m.aggs[sn.HostID][res] = byStart
				}
				start := res.BucketStart(sn.Timestamp)
				if byStart[start] == nil {
					byStart[start] = map[string]*storage.Aggregate{}
				}
				a := byStart[start][smp.Series]
				if a == nil {
					a = &storage.Aggregate{}
					byStart[start][smp.Series] = a
				}
				a.Add(sn.Timestamp, smp.Value, smp.Unit)
			}
		}
	}
}

// want returns what RangeRollup must return for q (no retention cut).
func (m *model) want(q storage.RollupQuery) []storage.RollupSeries {
	bySeries := map[string]*storage.RollupSeries{}
	byStart := m.aggs[q.HostID][q.Resolution]
	starts := make([]int64, 0, len(byStart))
	for st := range byStart {
		starts = append(starts, st)
	}
	slices.Sort(starts)
	for _, st := range starts {
		if st > q.To || st+int64(q.Resolution) <= q.From {
			continue
		}
		for series, a := range byStart[st] {
			if !q.Match.Match(series) {
				continue
			}
			rs := bySeries[series]
			if rs == nil {
				rs = &storage.RollupSeries{Series: series}
				bySeries[series] = rs
			}
			rs.Points = append(rs.Points, storage.RollupPoint{Start: st, Aggregate: *a})
		}
	}
	out := make([]storage.RollupSeries, 0, len(bySeries))
	for _, rs := range bySeries {
		out = append(out, *rs)
	}
	slices.SortFunc(out, func(a, b storage.RollupSeries) int { return strings.Compare(a.Series, b.Series) })
	return out
}

func sameFloat(a, b float64) bool { return math.Float64bits(a) == math.Float64bits(b) }

func diffAggregate(got, want storage.Aggregate) string {
	if !sameFloat(got.Min, want.Min) || !sameFloat(got.Max, want.Max) || !sameFloat(got.Sum, want.Sum) ||
		got.Count != want.Count || !sameFloat(got.Last, want.Last) || got.LastTS != want.LastTS || got.Unit != want.Unit {
		return fmt.Sprintf("%+v, want %+v", got, want)
	}
	return ""
}

func checkRollups(t *testing.T, what string, got, want []storage.RollupSeries) {
	t.Helper()
	names := func(rs []storage.RollupSeries) []string {
		out := make([]string, len(rs))
		for i, r := range rs {
			out[i] = r.Series
		}
		return out
	}
	if !slices.Equal(names(got), names(want)) {
		t.Fatalf("%s: series %v, want %v", what, names(got), names(want))
	}
	for i := range want {
		g, w := got[i].Points, want[i].Points
		if len(g) != len(w) {
			t.Fatalf("%s: series %s has %d buckets %v, want %d %v", what, want[i].Series, len(g), g, len(w), w)
		}
		for j := range w {
			if g[j].Start != w[j].Start {
				t.Fatalf("%s: series %s bucket %d starts at %d, want %d", what, want[i].Series, j, g[j].Start, w[j].Start)
			}
			if d := diffAggregate(g[j].Aggregate, w[j].Aggregate); d != "" {
				t.Fatalf("%s: series %s bucket %d: %s", what, want[i].Series, g[j].Start, d)
			}
		}
	}
}

// checkAgainstModel compares every resolution over everything written.
func checkAgainstModel(t *testing.T, s storage.Store, m *model, what, host string) {
	t.Helper()
	for _, res := range storage.RollupResolutions() {
		q := storage.RollupQuery{HostID: host, Resolution: res, From: 0, To: 1 << 62}
		checkRollups(t, fmt.Sprintf("%s, %s %s", what, host, res), mustRollup(t, s, q), m.want(q))
	}
}

// rollupBase is a minute-aligned timestamp 20 minutes ago: everything the
// rollup tests write is well inside the raw retention.
func rollupBase() int64 { return storage.Minute.BucketStart(time.Now().Unix() - 1200) }

func testRollupAggregates(t *testing.T, s storage.Store) {
	b := rollupBase()
	m := newModel()
	cutoff := time.Now().Unix() - int64(Retention/time.Second)
	mk := func(host string, k int) storage.Snapshot {
		ts := b + 5*int64(k)
		return storage.Snapshot{HostID: host, Timestamp: ts, Samples: []storage.Sample{
			{Series: "cpu.usage_percent", Value: float64(k%7) * 0.5, Unit: "%"},
			{Series: "net.rx_bytes_per_sec{iface=eth0}", Value: float64(1000 - 3*k), Unit: "bytes/s"},
			{Series: "temp.celsius", Value: float64(k%5) - 2.25, Unit: "°C"},
		}}
	}
	// 3 minutes at 5 s, out of order, over two calls; one snapshot carries
	// a repeated series (the last one counts) and one has no samples.
	var first, second []storage.Snapshot
	for k := 0; k < 36; k++ {
		sn := mk("ru", k)
		if k == 7 {
			sn.Samples = append(sn.Samples, storage.Sample{Series: "cpu.usage_percent", Value: 99, Unit: "%"})
		}
		if k == 30 {
			sn.Samples = nil
		}
		if k%2 == 0 {
			first = append([]storage.Snapshot{sn}, first...)
		} else {
			second = append(second, sn)
		}
	}
	other := []storage.Snapshot{mk("ru-1", 0), mk("ru-1", 1)}
	other[0].Samples[0].Value, other[1].Samples[0].Value = 1000, -1000
	for _, call := range [][]storage.Snapshot{first, second, other} {
		mustWrite(t, s, call...)
		m.write(call, cutoff)
	}
	checkAgainstModel(t, s, m, "after two calls", "ru")
	checkAgainstModel(t, s, m, "a host whose id prefixes another's", "ru-1")

	for _, tc := range []struct {
		name     string
		res      storage.Resolution
		from, to int64
		names    []string
	}{
		{"one instant inside a bucket", storage.Minute, b + 70, b + 70, nil},
		{"the last second of one bucket to the first of the next", storage.Minute, b + 59, b + 60, nil},
		{"a range ending before the first bucket", storage.Minute, b - 120, b - 1, nil},
		{"a range starting after the last bucket", storage.Minute, b + 180, b + 600, nil},
		{"family matcher", storage.Minute, b, b + 179, []string{"cpu.usage_percent"}},
		{"exact series", storage.Hour, 0, 1 << 62, []string{"net.rx_bytes_per_sec{iface=eth0}"}},
		{"prefix", storage.Hour, 0, 1 << 62, []string{"t*"}},
		{"nothing matches", storage.Minute, 0, 1 << 62, []string{"disk.*"}},
	} {
		q := storage.RollupQuery{HostID: "ru", Resolution: tc.res, From: tc.from, To: tc.to, Match: storage.NewMatcher(tc.names)}
		checkRollups(t, tc.name, mustRollup(t, s, q), m.want(q))
	}
	if got := mustRollup(t, s, storage.RollupQuery{HostID: "nobody", Resolution: storage.Minute, From: 0, To: 1 << 62}); len(got) != 0 {
		t.Fatalf("RangeRollup(nobody) = %v", got)
	}
	if got := mustRollup(t, s, storage.RollupQuery{HostID: "ru", Resolution: storage.Minute, From: b + 100, To: b}); len(got) != 0 {
		t.Fatalf("RangeRollup with from after to = %v", got)
	}
	// Spot check of the model itself: the first minute holds k = 0..11.
	got := mustRollup(t, s, storage.RollupQuery{HostID: "ru", Resolution: storage.Minute, From: b, To: b, Match: storage.NewMatcher([]string{"net.*"})})
	want := storage.Aggregate{Min: 967, Max: 1000, Sum: 11802, Count: 12, Last: 967, LastTS: b + 55, Unit: "bytes/s"}
	if len(got) != 1 || len(got[0].Points) != 1 || diffAggregate(got[0].Points[0].Aggregate, want) != "" {
		t.Fatalf("first minute of net.rx = %+v, want %+v", got, want)
	}
	if a := got[0].Points[0].Aggregate; a.Avg() != 983.5 {
		t.Fatalf("Avg = %v, want 983.5", a.Avg())
	}
}

func testRollupIdempotent(t *testing.T, s storage.Store) {
	b := rollupBase()
	m := newModel()
	cutoff := time.Now().Unix() - int64(Retention/time.Second)
	mk := func(k int, v float64) storage.Snapshot {
		return storage.Snapshot{HostID: "idem", Timestamp: b + 5*int64(k), Samples: []storage.Sample{
			{Series: "v", Value: v, Unit: "u"}, {Series: "w{x=1}", Value: -v},
		}}
	}
	var a []storage.Snapshot
	for k := 0; k < 24; k++ {
		a = append(a, mk(k, float64(k)))
	}
	write := func(call []storage.Snapshot) {
		mustWrite(t, s, call...)
		m.write(call, cutoff)
	}
	write(a)
	checkAgainstModel(t, s, m, "first write", "idem")
	write(a)
	checkAgainstModel(t, s, m, "the same call resent", "idem")
	write(append(slices.Clone(a), a...))
	checkAgainstModel(t, s, m, "every snapshot twice in one call", "idem")
	// Half resent, half new.
	var half []storage.Snapshot
	for k := 12; k < 36; k++ {
		half = append(half, mk(k, float64(k)))
	}
	write(half)
	checkAgainstModel(t, s, m, "half resent, half new", "idem")
	if n := totalCount(mustRollup(t, s, storage.RollupQuery{HostID: "idem", Resolution: storage.Hour, From: 0, To: 1 << 62, Match: storage.NewMatcher([]string{"v"})})); n != 36 {
		t.Fatalf("hour rollups count %d snapshots, want 36", n)
	}

	// A rewrite of a counted timestamp with other values replaces the raw
	// snapshot but not its share of the rollups.
	rewrite := mk(3, 1e6)
	write([]storage.Snapshot{rewrite})
	checkAgainstModel(t, s, m, "after a rewrite with other values", "idem")
	raw := mustRange(t, s, storage.RangeQuery{HostID: "idem", From: rewrite.Timestamp, To: rewrite.Timestamp})
	checkSnapshots(t, "raw after the rewrite", raw, []storage.Snapshot{rewrite})

	// Two versions of a new timestamp in one call: the last one is stored
	// and counted.
	v1, v2 := mk(40, 1), mk(40, 2)
	write([]storage.Snapshot{v1, v2})
	checkAgainstModel(t, s, m, "two versions of a timestamp in one call", "idem")
	got := mustRollup(t, s, storage.RollupQuery{HostID: "idem", Resolution: storage.Minute, From: v1.Timestamp, To: v1.Timestamp, Match: storage.NewMatcher([]string{"v"})})
	if len(got) != 1 || got[0].Points[0].Last != 2 {
		t.Fatalf("minute of two versions = %+v, want last 2", got)
	}
}

func totalCount(rs []storage.RollupSeries) int64 {
	var n int64
	for _, r := range rs {
		for _, p := range r.Points {
			n += p.Count
		}
	}
	return n
}

// testRollupConcurrentResends has several writers send the same batches at
// once, as agents resending to two brokers would: each timestamp counts once.
func testRollupConcurrentResends(t *testing.T, s storage.Store) {
	b := rollupBase()
	ctx := testCtx(t)
	const writers, batches, perBatch = 4, 6, 10
	var all []storage.Snapshot
	for k := 0; k < batches*perBatch; k++ {
		all = append(all, storage.Snapshot{HostID: "resend", Timestamp: b + int64(k), Samples: []storage.Sample{{Series: "v", Value: float64(k)}}})
	}
	var wg sync.WaitGroup
	errs := make(chan error, writers)
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			for i := 0; i < batches; i++ {
				// Writers disagree on batch boundaries.
				lo := max(0, i*perBatch-w)
				hi := min(len(all), (i+1)*perBatch+w)
				if err := s.WriteSnapshots(ctx, all[lo:hi]); err != nil {
					errs <- err
					return
				}
			}
		}()
	}
	wg.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	m := newModel()
	m.write(all, 0)
	checkAgainstModel(t, s, m, "concurrent resends", "resend")
}

func testRollupLastByTimestamp(t *testing.T, s storage.Store) {
	b := rollupBase()
	mk := func(off int64, v float64) storage.Snapshot {
		return storage.Snapshot{HostID: "late", Timestamp: b + off, Samples: []storage.Sample{{Series: "v", Value: v, Unit: "ms"}}}
	}
	// The newest first, late data after: Last stays at the newest.
	mustWrite(t, s, mk(50, 5))
	mustWrite(t, s, mk(10, 1), mk(30, 3))
	mustWrite(t, s, mk(20, 2))
	for _, res := range storage.RollupResolutions() {
		got := mustRollup(t, s, storage.RollupQuery{HostID: "late", Resolution: res, From: b, To: b + 59})
		want := storage.Aggregate{Min: 1, Max: 5, Sum: 11, Count: 4, Last: 5, LastTS: b + 50, Unit: "ms"}
		if len(got) != 1 || len(got[0].Points) != 1 || diffAggregate(got[0].Points[0].Aggregate, want) != "" {
			t.Fatalf("%s: %+v, want one bucket %+v", res, got, want)
		}
	}
	// A newer snapshot in a later call moves Last.
	mustWrite(t, s, mk(55, -1))
	got := mustRollup(t, s, storage.RollupQuery{HostID: "late", Resolution: storage.Minute, From: b, To: b})
	if a := got[0].Points[0].Aggregate; a.Last != -1 || a.LastTS != b+55 || a.Min != -1 || a.Count != 5 {
		t.Fatalf("after a newer snapshot: %+v", a)
	}
}

func testRollupInvalid(t *testing.T, s storage.Store) {
	ctx := testCtx(t)
	for _, res := range []storage.Resolution{storage.Raw, 5, 120, -60, 86400} {
		_, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: "h", Resolution: res, From: 0, To: 1 << 62})
		if !errors.Is(err, storage.ErrInvalid) {
			t.Fatalf("RangeRollup at resolution %s = %v, want ErrInvalid", res, err)
		}
	}
}

// testRollupRetention moves the store's clock: raw data goes after
// Retention, minute buckets after MinuteRetention, hour buckets after
// HourRetention (by bucket start); snapshots already older than the raw
// retention when written are not rolled up at all.
func testRollupRetention(t *testing.T, s storage.Store, clock *Clock) {
	now := clock.Now().Unix()
	ts := now - 600
	snap := storage.Snapshot{HostID: "keep", Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: 7}}}
	old := storage.Snapshot{HostID: "too-old", Timestamp: now - int64(Retention/time.Second) - 120, Samples: []storage.Sample{{Series: "v", Value: 1}}}
	mustWrite(t, s, snap, old)
	for _, res := range storage.RollupResolutions() {
		if got := mustRollup(t, s, storage.RollupQuery{HostID: "too-old", Resolution: res, From: 0, To: 1 << 62}); len(got) != 0 {
			t.Fatalf("a snapshot older than the raw retention was rolled up at %s: %+v", res, got)
		}
	}
	present := func(res storage.Resolution) bool {
		got := mustRollup(t, s, storage.RollupQuery{HostID: "keep", Resolution: res, From: 0, To: 1 << 62})
		return len(got) == 1 && got[0].Points[0].Count == 1
	}
	if !present(storage.Minute) || !present(storage.Hour) {
		t.Fatal("fresh snapshot not rolled up")
	}

	clock.Advance(Retention + 10*time.Minute)
	if got := mustRange(t, s, storage.RangeQuery{HostID: "keep", From: 0, To: 1 << 62}); len(got) != 0 {
		t.Fatalf("raw snapshot returned past the retention: %v", timestamps(got))
	}
	if !present(storage.Minute) || !present(storage.Hour) {
		t.Fatal("rollups gone with the raw data; they have their own retention")
	}
	clock.Advance(MinuteRetention - Retention)
	if present(storage.Minute) {
		t.Fatalf("minute bucket returned past the minute retention %v", MinuteRetention)
	}
	if !present(storage.Hour) {
		t.Fatal("hour bucket gone before the hour retention")
	}
	clock.Advance(HourRetention - MinuteRetention + time.Hour)
	if present(storage.Hour) {
		t.Fatalf("hour bucket returned past the hour retention %v", HourRetention)
	}
}
