// Package storagetest is the conformance suite every storage.Store backend
// passes: the behaviour the broker and the visualization server rely on,
// written once and run against each backend with real parts (a real
// redis-server, a real bbolt file).
//
// Contract checked beyond the storage.Store comments:
//   - Range and Latest return a snapshot's samples sorted by series; a series
//     repeated within one snapshot keeps its last value.
//   - Data older than the retention (by snapshot timestamp) is never
//     returned, and hosts whose last activity is older are not listed.
//   - Every refused input wraps storage.ErrInvalid and writes nothing: a batch
//     with one bad snapshot stores none of it.
//   - Rollups (rollup.go) agree with a reference model of the contract:
//     exact aggregates, overlap of buckets with the query range, each
//     (host, timestamp) counted once whatever the resends, duplicates and
//     concurrent writers, Last by timestamp, and each resolution's retention.
package storagetest

import (
	"context"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

// Retention is the retention every store that open returns must be
// configured with; the suite writes data on both sides of it.
const Retention = time.Hour

// The rollup retentions every store that open returns must be configured
// with (Rollups).
const (
	MinuteRetention = 3 * time.Hour
	HourRetention   = 6 * time.Hour
)

// Rollups is the rollup configuration of a store under test.
func Rollups() storage.RollupRetention {
	return storage.RollupRetention{Minute: MinuteRetention, Hour: HourRetention}
}

// Clock is the clock a store under test computes retention from: real time
// plus an offset the suite moves forward.
type Clock struct{ offset atomic.Int64 }

// Now is the clock's time.
func (c *Clock) Now() time.Time { return time.Now().Add(time.Duration(c.offset.Load())) }

// Advance moves the clock forward by d.
func (c *Clock) Advance(d time.Duration) { c.offset.Add(int64(d)) }

// Run runs the conformance suite. open must return a new, empty store
// opened with Retention, Rollups, a host TTL of at least Retention, and
// clock.Now as its clock; Run closes every store it opens. Subtests run
// sequentially.
func Run(t *testing.T, open func(t *testing.T, clock *Clock) storage.Store) {
	for _, tc := range []struct {
		name string
		fn   func(t *testing.T, s storage.Store)
	}{
		{"RoundTrip", testRoundTrip},
		{"RangeBounds", testRangeBounds},
		{"Latest", testLatest},
		{"Matcher", testMatcher},
		{"RewriteReplaces", testRewriteReplaces},
		{"SamplesSortedLastWins", testSamplesSorted},
		{"HostsIsolated", testHostsIsolated},
		{"Registration", testRegistration},
		{"Heartbeat", testHeartbeat},
		{"HostsDataOnly", testHostsDataOnly},
		{"InvalidRefused", testInvalidRefused},
		{"Retention", testRetention},
		{"ConcurrentWriters", testConcurrentWriters},
		{"EmptyBatchAndPing", testEmptyBatchAndPing},
		{"CanceledContext", testCanceledContext},
		{"RollupAggregates", testRollupAggregates},
		{"RollupIdempotent", testRollupIdempotent},
		{"RollupConcurrentResends", testRollupConcurrentResends},
		{"RollupLastByTimestamp", testRollupLastByTimestamp},
		{"RollupInvalid", testRollupInvalid},
	} {
		t.Run(tc.name, func(t *testing.T) {
			s := open(t, &Clock{})
			t.Cleanup(func() {
				if err := s.Close(); err != nil {
					t.Errorf("Close: %v", err)
				}
			})
			tc.fn(t, s)
		})
	}
	t.Run("RollupRetention", func(t *testing.T) {
		clock := &Clock{}
		s := open(t, clock)
		t.Cleanup(func() {
			if err := s.Close(); err != nil {
				t.Errorf("Close: %v", err)
			}
		})
		testRollupRetention(t, s, clock)
	})
}

func testCtx(t *testing.T) context.Context {
	ctx, cancel := context.WithTimeout(t.Context(), 60*time.Second)
	t.Cleanup(cancel)
	return ctx
}

// base is a timestamp well inside the retention window.
func base() int64 { return time.Now().Unix() - 600 }

func mustWrite(t *testing.T, s storage.Store, snaps ...storage.Snapshot) {
	t.Helper()
	if err := s.WriteSnapshots(testCtx(t), snaps); err != nil {
		t.Fatalf("WriteSnapshots: %v", err)
	}
}

func mustRange(t *testing.T, s storage.Store, q storage.RangeQuery) []storage.Snapshot {
	t.Helper()
	got, err := s.Range(testCtx(t), q)
	if err != nil {
		t.Fatalf("Range(%s, %d..%d): %v", q.HostID, q.From, q.To, err)
	}
	return got
}

func mustHosts(t *testing.T, s storage.Store) []storage.Host {
	t.Helper()
	hs, err := s.Hosts(testCtx(t))
	if err != nil {
		t.Fatalf("Hosts: %v", err)
	}
	if !slices.IsSortedFunc(hs, func(a, b storage.Host) int { return strings.Compare(a.ID, b.ID) }) {
		t.Fatalf("Hosts not sorted by ID: %v", hostIDs(hs))
	}
	return hs
}

func hostIDs(hs []storage.Host) []string {
	ids := make([]string, len(hs))
	for i, h := range hs {
		ids[i] = h.ID
	}
	return ids
}

func findHost(hs []storage.Host, id string) (storage.Host, bool) {
	for _, h := range hs {
		if h.ID == id {
			return h, true
		}
	}
	return storage.Host{}, false
}

// canonical returns s as a backend must return it: samples sorted by
// series, a repeated series keeping its last value.
func canonical(s storage.Snapshot) storage.Snapshot {
	out := s
	out.Samples = nil
	idx := map[string]int{}
	for _, smp := range s.Samples {
		if i, ok := idx[smp.Series]; ok {
			out.Samples[i] = smp
			continue
		}
		idx[smp.Series] = len(out.Samples)
		out.Samples = append(out.Samples, smp)
	}
	slices.SortFunc(out.Samples, func(a, b storage.Sample) int { return strings.Compare(a.Series, b.Series) })
	return out
}

// diffSnapshot describes how got differs from want ("" when equal). Values
// are compared bit for bit, so -0 and 0 differ.
func diffSnapshot(got, want storage.Snapshot) string {
	var d []string
	if got.HostID != want.HostID {
		d = append(d, fmt.Sprintf("host %q, want %q", got.HostID, want.HostID))
	}
	if got.Timestamp != want.Timestamp {
		d = append(d, fmt.Sprintf("timestamp %d, want %d", got.Timestamp, want.Timestamp))
	}
	if len(got.Tags) != len(want.Tags) {
		d = append(d, fmt.Sprintf("tags %v, want %v", got.Tags, want.Tags))
	} else {
		for k, v := range want.Tags {
			if g, ok := got.Tags[k]; !ok || g != v {
				d = append(d, fmt.Sprintf("tag %q = %q, want %q", k, g, v))
			}
		}
	}
	if len(got.Samples) != len(want.Samples) {
		d = append(d, fmt.Sprintf("%d samples %v, want %d %v", len(got.Samples), got.Samples, len(want.Samples), want.Samples))
	} else {
		for i := range want.Samples {
			g, w := got.Samples[i], want.Samples[i]
			if g.Series != w.Series || g.Unit != w.Unit || math.Float64bits(g.Value) != math.Float64bits(w.Value) {
				d = append(d, fmt.Sprintf("sample %d = %+v, want %+v", i, g, w))
			}
		}
	}
	return strings.Join(d, "; ")
}

func checkSnapshots(t *testing.T, what string, got, want []storage.Snapshot) {
	t.Helper()
	if len(got) != len(want) {
		t.Fatalf("%s: %d snapshots (timestamps %v), want %d (timestamps %v)", what, len(got), timestamps(got), len(want), timestamps(want))
	}
	for i := range want {
		if d := diffSnapshot(got[i], canonical(want[i])); d != "" {
			t.Fatalf("%s: snapshot %d: %s", what, i, d)
		}
	}
}

func timestamps(ss []storage.Snapshot) []int64 {
	out := make([]int64, len(ss))
	for i, s := range ss {
		out[i] = s.Timestamp
	}
	return out
}

func testRoundTrip(t *testing.T, s storage.Store) {
	ts := base()
	full := storage.Snapshot{
		HostID:    "rt-1",
		Timestamp: ts,
		Tags:      map[string]string{"env": "prod", "rack": `r 4, "b" \ c`, "empty": ""},
		Samples: []storage.Sample{
			{Series: "cpu.usage_percent", Value: 75.5, Unit: "%"},
			{Series: "edge.zero", Value: 0, Unit: ""},
			{Series: "edge.neg_zero", Value: math.Copysign(0, -1)},
			{Series: "edge.negative", Value: -12.25, Unit: "°C"},
			{Series: "edge.tiny", Value: 1e-9, Unit: "s"},
			{Series: "edge.tiny_neg", Value: -1e-7, Unit: "s"},
			{Series: "edge.big", Value: 1e15, Unit: "bytes"},
			{Series: "edge.bigger", Value: 1e21},
			{Series: "edge.max", Value: math.MaxFloat64},
			{Series: "edge.min_subnormal", Value: math.SmallestNonzeroFloat64},
			{Series: "edge.tenth", Value: 0.1},
			{Series: "edge.long_fraction", Value: 123456789.123456789},
			{Series: "edge.int", Value: 42, Unit: "count"},
			{Series: "edge.neg_int", Value: -42},
			{Series: "edge.two53", Value: 1 << 53},
			{Series: "edge.two62", Value: 1 << 62},
			{Series: "edge.unit_escapes", Value: 1, Unit: `a"b\c/`},
			{Series: "edge.unit_unicode", Value: 2, Unit: "µs"},
			{Series: "net.rx_bytes_per_sec{iface=eth0}", Value: 1234.5, Unit: "bytes/s"},
			{Series: "disk.used_percent{device=sda1,mount=/}", Value: 50, Unit: "%"},
			{Series: "temp.celsius{sensor=Küche 1}", Value: 21.5, Unit: "°C"},
		},
	}
	bare := storage.Snapshot{HostID: "rt-bare", Timestamp: ts}
	mustWrite(t, s, full, bare)

	got := mustRange(t, s, storage.RangeQuery{HostID: "rt-1", From: ts - 1, To: ts + 1})
	checkSnapshots(t, "Range rt-1", got, []storage.Snapshot{full})
	latest, ok, err := s.Latest(testCtx(t), "rt-1")
	if err != nil || !ok {
		t.Fatalf("Latest(rt-1) = ok %v, err %v", ok, err)
	}
	if d := diffSnapshot(latest, canonical(full)); d != "" {
		t.Fatalf("Latest(rt-1): %s", d)
	}

	got = mustRange(t, s, storage.RangeQuery{HostID: "rt-bare", From: ts, To: ts})
	checkSnapshots(t, "Range rt-bare (no samples, no tags, no matcher)", got, []storage.Snapshot{bare})
	latest, ok, err = s.Latest(testCtx(t), "rt-bare")
	if err != nil || !ok || latest.Timestamp != ts || len(latest.Samples) != 0 {
		t.Fatalf("Latest(rt-bare) = %+v, ok %v, err %v", latest, ok, err)
	}
}

func testRangeBounds(t *testing.T, s storage.Store) {
	b := base()
	snap := func(i int) storage.Snapshot {
		return storage.Snapshot{HostID: "rb", Timestamp: b + int64(i), Samples: []storage.Sample{{Series: "seq", Value: float64(i)}}}
	}
	// Out of order, over two batches.
	mustWrite(t, s, snap(7), snap(2), snap(9), snap(0), snap(4))
	mustWrite(t, s, snap(1), snap(8), snap(3), snap(6), snap(5))
	want := func(from, to int) []storage.Snapshot {
		var out []storage.Snapshot
		for i := from; i <= to; i++ {
			out = append(out, snap(i))
		}
		return out
	}
	for _, tc := range []struct {
		name     string
		from, to int64
		want     []storage.Snapshot
	}{
		{"inner, both bounds inclusive", b + 2, b + 5, want(2, 5)},
		{"single point", b + 3, b + 3, want(3, 3)},
		{"everything", b, b + 9, want(0, 9)},
		{"wider than the data", 0, 1 << 62, want(0, 9)},
		{"from after to", b + 5, b + 2, nil},
		{"after the data", b + 10, b + 20, nil},
		{"before the data", b - 20, b - 1, nil},
	} {
		got := mustRange(t, s, storage.RangeQuery{HostID: "rb", From: tc.from, To: tc.to})
		checkSnapshots(t, tc.name, got, tc.want)
	}
	if got := mustRange(t, s, storage.RangeQuery{HostID: "unknown-host", From: 0, To: 1 << 62}); len(got) != 0 {
		t.Fatalf("Range(unknown-host) = %d snapshots", len(got))
	}
}

func testLatest(t *testing.T, s storage.Store) {
	b := base()
	if _, ok, err := s.Latest(testCtx(t), "nobody"); err != nil || ok {
		t.Fatalf("Latest(nobody) = ok %v, err %v; want not ok, no error", ok, err)
	}
	mk := func(ts int64, v float64) storage.Snapshot {
		return storage.Snapshot{HostID: "lt", Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: v}}}
	}
	mustWrite(t, s, mk(b+20, 2), mk(b+30, 3), mk(b+10, 1))
	mustWrite(t, s, mk(b+25, 9)) // older than the newest: Latest must not change
	got, ok, err := s.Latest(testCtx(t), "lt")
	if err != nil || !ok {
		t.Fatalf("Latest(lt) = ok %v, err %v", ok, err)
	}
	if d := diffSnapshot(got, mk(b+30, 3)); d != "" {
		t.Fatalf("Latest(lt): %s", d)
	}
}

func testMatcher(t *testing.T, s storage.Store) {
	b := base()
	tags := map[string]string{"env": "test"}
	s1 := storage.Snapshot{HostID: "m", Timestamp: b, Tags: tags, Samples: []storage.Sample{
		{Series: "cpu.usage_percent", Value: 1, Unit: "%"},
		{Series: "cpu.usage_percent{cpu=0}", Value: 2, Unit: "%"},
		{Series: "net.rx_bytes_per_sec{iface=eth0}", Value: 3},
		{Series: "net.tx_bytes_per_sec{iface=eth0}", Value: 4},
		{Series: "mem.used_percent", Value: 5},
	}}
	s2 := storage.Snapshot{HostID: "m", Timestamp: b + 5, Tags: tags, Samples: []storage.Sample{
		{Series: "mem.used_percent", Value: 6},
	}}
	mustWrite(t, s, s1, s2)
	only := func(s storage.Snapshot, series ...string) storage.Snapshot {
		out := s
		out.Samples = nil
		for _, smp := range s.Samples {
			if slices.Contains(series, smp.Series) {
				out.Samples = append(out.Samples, smp)
			}
		}
		return out
	}
	for _, tc := range []struct {
		name  string
		names []string
		want  []storage.Snapshot
	}{
		{"no matcher", nil, []storage.Snapshot{s1, s2}},
		{"family", []string{"cpu.usage_percent"}, []storage.Snapshot{only(s1, "cpu.usage_percent", "cpu.usage_percent{cpu=0}")}},
		{"exact series", []string{"net.rx_bytes_per_sec{iface=eth0}"}, []storage.Snapshot{only(s1, "net.rx_bytes_per_sec{iface=eth0}")}},
		{"prefix", []string{"net.*"}, []storage.Snapshot{only(s1, "net.rx_bytes_per_sec{iface=eth0}", "net.tx_bytes_per_sec{iface=eth0}")}},
		{"family in both", []string{"mem.used_percent"}, []storage.Snapshot{only(s1, "mem.used_percent"), s2}},
		{"mixed", []string{"mem.used_percent", "cpu.usage_percent{cpu=0}"}, []storage.Snapshot{only(s1, "cpu.usage_percent{cpu=0}", "mem.used_percent"), s2}},
		{"nothing matches: snapshots omitted", []string{"disk.*", "load1"}, nil},
	} {
		got := mustRange(t, s, storage.RangeQuery{HostID: "m", From: b, To: b + 5, Match: storage.NewMatcher(tc.names)})
		checkSnapshots(t, tc.name, got, tc.want)
	}
}

func testRewriteReplaces(t *testing.T, s storage.Store) {
	ts := base()
	v1 := storage.Snapshot{HostID: "rw", Timestamp: ts, Tags: map[string]string{"a": "1", "b": "2"}, Samples: []storage.Sample{
		{Series: "x", Value: 1}, {Series: "y", Value: 2}, {Series: "z{k=v}", Value: 3},
	}}
	v2 := storage.Snapshot{HostID: "rw", Timestamp: ts, Tags: map[string]string{"c": "3"}, Samples: []storage.Sample{
		{Series: "y", Value: 20, Unit: "ms"},
	}}
	mustWrite(t, s, v1)
	mustWrite(t, s, v2)
	got := mustRange(t, s, storage.RangeQuery{HostID: "rw", From: ts - 10, To: ts + 10})
	checkSnapshots(t, "after rewrite with fewer metrics", got, []storage.Snapshot{v2})
	latest, ok, err := s.Latest(testCtx(t), "rw")
	if err != nil || !ok {
		t.Fatalf("Latest = ok %v, err %v", ok, err)
	}
	if d := diffSnapshot(latest, canonical(v2)); d != "" {
		t.Fatalf("Latest after rewrite: %s", d)
	}

	// An agent's retry: the same snapshot twice in one batch and again in
	// the next; still one snapshot.
	mustWrite(t, s, v1, v1)
	mustWrite(t, s, v1)
	got = mustRange(t, s, storage.RangeQuery{HostID: "rw", From: ts - 10, To: ts + 10})
	checkSnapshots(t, "after retries", got, []storage.Snapshot{v1})

	// Last one in a batch wins.
	mustWrite(t, s, v1, v2)
	got = mustRange(t, s, storage.RangeQuery{HostID: "rw", From: ts, To: ts})
	checkSnapshots(t, "v1 then v2 in one batch", got, []storage.Snapshot{v2})
}

func testSamplesSorted(t *testing.T, s storage.Store) {
	ts := base()
	in := storage.Snapshot{HostID: "sorted", Timestamp: ts, Samples: []storage.Sample{
		{Series: "zz", Value: 1},
		{Series: "aa{x=1}", Value: 2},
		{Series: "mm", Value: 3, Unit: "old"},
		{Series: "aa", Value: 4},
		{Series: "mm", Value: 5, Unit: "new"},
	}}
	mustWrite(t, s, in)
	got := mustRange(t, s, storage.RangeQuery{HostID: "sorted", From: ts, To: ts})
	want := storage.Snapshot{HostID: "sorted", Timestamp: ts, Samples: []storage.Sample{
		{Series: "aa", Value: 4}, {Series: "aa{x=1}", Value: 2}, {Series: "mm", Value: 5, Unit: "new"}, {Series: "zz", Value: 1},
	}}
	checkSnapshots(t, "sorted, last wins", got, []storage.Snapshot{want})
}

func testHostsIsolated(t *testing.T, s storage.Store) {
	b := base()
	// Ids that prefix one another catch key or bucket layouts that confuse
	// "web" with "web-1".
	ids := []string{"web", "web-1", "web-10", "web.1", "web_1", "w"}
	for i := 0; i < 20; i++ {
		ids = append(ids, fmt.Sprintf("iso-%02d", i))
	}
	var batch []storage.Snapshot
	want := map[string][]storage.Snapshot{}
	for i, id := range ids {
		for k := 0; k < 3; k++ {
			sn := storage.Snapshot{HostID: id, Timestamp: b + int64(k), Tags: map[string]string{"id": id},
				Samples: []storage.Sample{{Series: "host.index", Value: float64(i)}, {Series: "k", Value: float64(k)}}}
			batch = append(batch, sn)
			want[id] = append(want[id], sn)
		}
	}
	mustWrite(t, s, batch...)
	for _, id := range ids {
		got := mustRange(t, s, storage.RangeQuery{HostID: id, From: 0, To: 1 << 62})
		checkSnapshots(t, "Range "+id, got, want[id])
	}
	hs := mustHosts(t, s)
	sorted := slices.Clone(ids)
	slices.Sort(sorted)
	if !slices.Equal(hostIDs(hs), sorted) {
		t.Fatalf("Hosts = %v, want %v", hostIDs(hs), sorted)
	}
	for _, h := range hs {
		if h.LastData != b+2 {
			t.Fatalf("host %s LastData = %d, want %d", h.ID, h.LastData, b+2)
		}
	}
}

func sampleHost(id string) storage.Host {
	return storage.Host{
		ID: id, Hostname: id + ".example.com", OS: "linux", Platform: "debian 12",
		Kernel: "6.1.0-18-amd64", Arch: "amd64", CPUCount: 8, MemoryBytes: 16 << 30,
		Labels: map[string]string{"zone": "eu-1", "role": "web"}, AgentVersion: "v0.1.0", BootTime: 1700000000,
	}
}

func diffHostInfo(got, want storage.Host) string {
	var d []string
	if got.ID != want.ID || got.Hostname != want.Hostname || got.OS != want.OS || got.Platform != want.Platform ||
		got.Kernel != want.Kernel || got.Arch != want.Arch || got.CPUCount != want.CPUCount ||
		got.MemoryBytes != want.MemoryBytes || got.AgentVersion != want.AgentVersion || got.BootTime != want.BootTime {
		d = append(d, fmt.Sprintf("info %+v, want %+v", got, want))
	}
	if len(got.Labels) != len(want.Labels) {
		d = append(d, fmt.Sprintf("labels %v, want %v", got.Labels, want.Labels))
	}
	for k, v := range want.Labels {
		if got.Labels[k] != v {
			d = append(d, fmt.Sprintf("label %q = %q, want %q", k, got.Labels[k], v))
		}
	}
	return strings.Join(d, "; ")
}

func testRegistration(t *testing.T, s storage.Store) {
	ctx := testCtx(t)
	t1 := time.Unix(base(), 0)
	t2 := t1.Add(time.Minute)
	h := sampleHost("reg-1")
	got, err := s.RegisterHost(ctx, h, t1)
	if err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	if d := diffHostInfo(got, h); d != "" {
		t.Fatalf("first registration returned %s", d)
	}
	if got.FirstSeen != t1.Unix() || got.LastRegistered != t1.Unix() {
		t.Fatalf("first registration: FirstSeen %d LastRegistered %d, want both %d", got.FirstSeen, got.LastRegistered, t1.Unix())
	}

	h2 := h
	h2.Hostname, h2.Kernel, h2.CPUCount, h2.AgentVersion = "renamed", "6.6.0", 16, "v0.2.0"
	h2.Labels = map[string]string{"role": "db", "note": `quotes " and , commas`}
	got, err = s.RegisterHost(ctx, h2, t2)
	if err != nil {
		t.Fatalf("RegisterHost again: %v", err)
	}
	if d := diffHostInfo(got, h2); d != "" {
		t.Fatalf("re-registration returned %s", d)
	}
	if got.FirstSeen != t1.Unix() || got.LastRegistered != t2.Unix() {
		t.Fatalf("re-registration: FirstSeen %d LastRegistered %d, want %d and %d", got.FirstSeen, got.LastRegistered, t1.Unix(), t2.Unix())
	}

	hs := mustHosts(t, s)
	listed, ok := findHost(hs, "reg-1")
	if !ok || len(hs) != 1 {
		t.Fatalf("Hosts = %v, want [reg-1]", hostIDs(hs))
	}
	if d := diffHostInfo(listed, h2); d != "" {
		t.Fatalf("Hosts lists %s", d)
	}
	if listed.FirstSeen != t1.Unix() || listed.LastRegistered != t2.Unix() || listed.LastData != 0 {
		t.Fatalf("Hosts: FirstSeen %d LastRegistered %d LastData %d", listed.FirstSeen, listed.LastRegistered, listed.LastData)
	}

	// Registering with no labels clears them.
	h3 := h2
	h3.Labels = nil
	got, err = s.RegisterHost(ctx, h3, t2.Add(time.Second))
	if err != nil {
		t.Fatalf("RegisterHost without labels: %v", err)
	}
	if len(got.Labels) != 0 {
		t.Fatalf("labels after registering none = %v", got.Labels)
	}
}

func testHeartbeat(t *testing.T, s storage.Store) {
	ctx := testCtx(t)
	b := base()
	known, err := s.Heartbeat(ctx, "ghost", time.Unix(b, 0))
	if err != nil || known {
		t.Fatalf("Heartbeat(ghost) = %v, %v; want false, nil", known, err)
	}
	if hs := mustHosts(t, s); len(hs) != 0 {
		t.Fatalf("a heartbeat of an unknown host listed it: %v", hostIDs(hs))
	}
	if _, err := s.RegisterHost(ctx, sampleHost("hb"), time.Unix(b, 0)); err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	for _, at := range []int64{b + 30, b + 60} {
		known, err = s.Heartbeat(ctx, "hb", time.Unix(at, 0))
		if err != nil || !known {
			t.Fatalf("Heartbeat(hb) = %v, %v; want true, nil", known, err)
		}
		h, ok := findHost(mustHosts(t, s), "hb")
		if !ok {
			t.Fatal("hb not listed")
		}
		if h.LastHeartbeat != at || h.FirstSeen != b || h.LastRegistered != b {
			t.Fatalf("after heartbeat at %d: LastHeartbeat %d FirstSeen %d LastRegistered %d", at, h.LastHeartbeat, h.FirstSeen, h.LastRegistered)
		}
		if d := diffHostInfo(h, sampleHost("hb")); d != "" {
			t.Fatalf("heartbeat changed the info: %s", d)
		}
	}
	// Re-registration keeps the last heartbeat.
	got, err := s.RegisterHost(ctx, sampleHost("hb"), time.Unix(b+90, 0))
	if err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	if got.LastHeartbeat != b+60 {
		t.Fatalf("re-registration LastHeartbeat = %d, want %d", got.LastHeartbeat, b+60)
	}
}

func testHostsDataOnly(t *testing.T, s storage.Store) {
	ctx := testCtx(t)
	b := base()
	mustWrite(t, s, storage.Snapshot{HostID: "data-only", Timestamp: b + 5, Samples: []storage.Sample{{Series: "v", Value: 1}}})
	mustWrite(t, s, storage.Snapshot{HostID: "data-only", Timestamp: b, Samples: []storage.Sample{{Series: "v", Value: 0}}})
	if _, err := s.RegisterHost(ctx, sampleHost("reg-data"), time.Unix(b, 0)); err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	mustWrite(t, s, storage.Snapshot{HostID: "reg-data", Timestamp: b + 7})
	if _, err := s.RegisterHost(ctx, sampleHost("reg-nodata"), time.Unix(b, 0)); err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}

	hs := mustHosts(t, s)
	if want := []string{"data-only", "reg-data", "reg-nodata"}; !slices.Equal(hostIDs(hs), want) {
		t.Fatalf("Hosts = %v, want %v", hostIDs(hs), want)
	}
	if h := hs[0]; h.LastData != b+5 || h.FirstSeen != 0 || h.LastRegistered != 0 || h.Hostname != "" || len(h.Labels) != 0 {
		t.Fatalf("data-only host = %+v, want only ID and LastData %d", h, b+5)
	}
	if h := hs[1]; h.LastData != b+7 || h.FirstSeen != b || h.Hostname == "" {
		t.Fatalf("registered host with data = %+v, want LastData %d and its registration", h, b+7)
	}
	if h := hs[2]; h.LastData != 0 || h.FirstSeen != b {
		t.Fatalf("registered host without data = %+v", h)
	}
	// A registration returns LastData too.
	got, err := s.RegisterHost(ctx, sampleHost("reg-data"), time.Unix(b+8, 0))
	if err != nil {
		t.Fatalf("RegisterHost: %v", err)
	}
	if got.LastData != b+7 {
		t.Fatalf("RegisterHost returned LastData %d, want %d", got.LastData, b+7)
	}
}

func testInvalidRefused(t *testing.T, s storage.Store) {
	ctx := testCtx(t)
	b := base()
	good := storage.Snapshot{HostID: "ok-host", Timestamp: b, Samples: []storage.Sample{{Series: "v", Value: 1}}}
	withSample := func(smp storage.Sample) storage.Snapshot {
		return storage.Snapshot{HostID: "ok-host", Timestamp: b + 1, Samples: []storage.Sample{smp}}
	}
	for _, tc := range []struct {
		name string
		bad  storage.Snapshot
	}{
		{"colon in host id", storage.Snapshot{HostID: "web:01", Timestamp: b}},
		{"brace in host id", storage.Snapshot{HostID: "web{01}", Timestamp: b}},
		{"empty host id", storage.Snapshot{HostID: "", Timestamp: b}},
		{"host id too long", storage.Snapshot{HostID: strings.Repeat("h", storage.MaxHostIDLen+1), Timestamp: b}},
		{"host id with space", storage.Snapshot{HostID: "web 01", Timestamp: b}},
		{"zero timestamp", storage.Snapshot{HostID: "ok-host", Timestamp: 0}},
		{"brace in series", withSample(storage.Sample{Series: "cpu{", Value: 1})},
		{"colon in series", withSample(storage.Sample{Series: "cpu:usage", Value: 1})},
		{"empty series", withSample(storage.Sample{Series: "", Value: 1})},
		{"label value with comma", withSample(storage.Sample{Series: "net.rx{iface=a,b}", Value: 1})},
		{"NaN", withSample(storage.Sample{Series: "v", Value: math.NaN()})},
		{"+Inf", withSample(storage.Sample{Series: "v", Value: math.Inf(1)})},
		{"unit not UTF-8", withSample(storage.Sample{Series: "v", Value: 1, Unit: "\xff"})},
		{"bad tag name", storage.Snapshot{HostID: "ok-host", Timestamp: b + 1, Tags: map[string]string{"bad:tag": "x"}}},
	} {
		for _, batch := range [][]storage.Snapshot{{good, tc.bad}, {tc.bad, good}} {
			err := s.WriteSnapshots(ctx, batch)
			if !errors.Is(err, storage.ErrInvalid) {
				t.Fatalf("%s: WriteSnapshots = %v, want ErrInvalid", tc.name, err)
			}
		}
	}
	if got := mustRange(t, s, storage.RangeQuery{HostID: "ok-host", From: 0, To: 1 << 62}); len(got) != 0 {
		t.Fatalf("a refused batch stored %d snapshots of its valid part", len(got))
	}
	if hs := mustHosts(t, s); len(hs) != 0 {
		t.Fatalf("a refused batch listed hosts %v", hostIDs(hs))
	}
	for _, res := range storage.RollupResolutions() {
		if got := mustRollup(t, s, storage.RollupQuery{HostID: "ok-host", Resolution: res, From: 0, To: 1 << 62}); len(got) != 0 {
			t.Fatalf("a refused batch rolled up %d series at %s", len(got), res)
		}
	}

	for _, id := range []string{"web:01", "web{01}", "", "a b", "-x"} {
		if _, err := s.Range(ctx, storage.RangeQuery{HostID: id, From: 0, To: 1 << 62}); !errors.Is(err, storage.ErrInvalid) {
			t.Fatalf("Range(%q) = %v, want ErrInvalid", id, err)
		}
		if _, _, err := s.Latest(ctx, id); !errors.Is(err, storage.ErrInvalid) {
			t.Fatalf("Latest(%q) = %v, want ErrInvalid", id, err)
		}
		if _, err := s.Heartbeat(ctx, id, time.Unix(b, 0)); !errors.Is(err, storage.ErrInvalid) {
			t.Fatalf("Heartbeat(%q) = %v, want ErrInvalid", id, err)
		}
		if _, err := s.RegisterHost(ctx, sampleHost(id), time.Unix(b, 0)); !errors.Is(err, storage.ErrInvalid) {
			t.Fatalf("RegisterHost(%q) = %v, want ErrInvalid", id, err)
		}
		for _, res := range storage.RollupResolutions() {
			if _, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: id, Resolution: res, From: 0, To: 1 << 62}); !errors.Is(err, storage.ErrInvalid) {
				t.Fatalf("RangeRollup(%q, %s) = %v, want ErrInvalid", id, res, err)
			}
		}
	}
	if hs := mustHosts(t, s); len(hs) != 0 {
		t.Fatalf("refused registrations listed hosts %v", hostIDs(hs))
	}
}

func testRetention(t *testing.T, s storage.Store) {
	now := time.Now().Unix()
	old := now - int64(Retention/time.Second) - 120
	recent := now - 60
	mk := func(id string, ts int64) storage.Snapshot {
		return storage.Snapshot{HostID: id, Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: float64(ts)}}}
	}
	mustWrite(t, s, mk("ret", old), mk("ret", recent), mk("ret-old", old))
	got := mustRange(t, s, storage.RangeQuery{HostID: "ret", From: 0, To: now + 3600})
	checkSnapshots(t, "Range across the retention", got, []storage.Snapshot{mk("ret", recent)})
	if got := mustRange(t, s, storage.RangeQuery{HostID: "ret-old", From: 0, To: now + 3600}); len(got) != 0 {
		t.Fatalf("Range(ret-old) returned %v, older than the retention", timestamps(got))
	}
	if snap, ok, err := s.Latest(testCtx(t), "ret-old"); err != nil || ok {
		t.Fatalf("Latest(ret-old) = %d, ok %v, err %v; want not ok", snap.Timestamp, ok, err)
	}
	hs := mustHosts(t, s)
	if want := []string{"ret"}; !slices.Equal(hostIDs(hs), want) {
		t.Fatalf("Hosts = %v, want %v (ret-old is past the retention)", hostIDs(hs), want)
	}
	if hs[0].LastData != recent {
		t.Fatalf("ret LastData = %d, want %d", hs[0].LastData, recent)
	}
}

func testConcurrentWriters(t *testing.T, s storage.Store) {
	ctx := testCtx(t)
	b := base()
	const writers, batches, perBatch = 6, 20, 2
	var wg sync.WaitGroup
	errs := make(chan error, writers+2)
	stop := make(chan struct{})
	for w := 0; w < writers; w++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			// Two writers share each host, on disjoint timestamps.
			host := fmt.Sprintf("cw-%d", w%3)
			for i := 0; i < batches; i++ {
				var batch []storage.Snapshot
				for k := 0; k < perBatch; k++ {
					ts := b + int64(w/3)*1000 + int64(i*perBatch+k)
					batch = append(batch, storage.Snapshot{HostID: host, Timestamp: ts,
						Samples: []storage.Sample{{Series: "w", Value: float64(w)}, {Series: "i", Value: float64(i)}}})
				}
				if _, err := s.RegisterHost(ctx, sampleHost(host), time.Unix(b, 0)); err != nil {
					errs <- fmt.Errorf("writer %d RegisterHost: %w", w, err)
					return
				}
				if err := s.WriteSnapshots(ctx, batch); err != nil {
					errs <- fmt.Errorf("writer %d batch %d: %w", w, i, err)
					return
				}
			}
		}()
	}
	var readers sync.WaitGroup
	for r := 0; r < 2; r++ {
		readers.Add(1)
		go func() {
			defer readers.Done()
			for {
				select {
				case <-stop:
					return
				default:
				}
				if _, err := s.Range(ctx, storage.RangeQuery{HostID: "cw-0", From: 0, To: 1 << 62}); err != nil {
					errs <- fmt.Errorf("reader Range: %w", err)
					return
				}
				if _, _, err := s.Latest(ctx, "cw-1"); err != nil {
					errs <- fmt.Errorf("reader Latest: %w", err)
					return
				}
				if _, err := s.Hosts(ctx); err != nil {
					errs <- fmt.Errorf("reader Hosts: %w", err)
					return
				}
			}
		}()
	}
	wg.Wait()
	close(stop)
	readers.Wait()
	close(errs)
	for err := range errs {
		t.Fatal(err)
	}
	for h := 0; h < 3; h++ {
		id := fmt.Sprintf("cw-%d", h)
		got := mustRange(t, s, storage.RangeQuery{HostID: id, From: 0, To: 1 << 62})
		if want := 2 * batches * perBatch; len(got) != want {
			t.Fatalf("%s has %d snapshots, want %d", id, len(got), want)
		}
		for _, sn := range got {
			w := int(sn.Samples[1].Value) // samples sorted: "i", "w"
			if w%3 != h || sn.Timestamp < b+int64(w/3)*1000 {
				t.Fatalf("%s snapshot %d written by writer %d", id, sn.Timestamp, w)
			}
		}
	}
	if hs := mustHosts(t, s); len(hs) != 3 {
		t.Fatalf("Hosts = %v", hostIDs(hs))
	}
	for h := 0; h < 3; h++ {
		id := fmt.Sprintf("cw-%d", h)
		for _, res := range storage.RollupResolutions() {
			var n int64
			for _, sr := range mustRollup(t, s, storage.RollupQuery{HostID: id, Resolution: res, From: 0, To: 1 << 62, Match: storage.NewMatcher([]string{"w"})}) {
				for _, p := range sr.Points {
					n += p.Count
				}
			}
			if want := int64(2 * batches * perBatch); n != want {
				t.Fatalf("%s: %s rollups counted %d snapshots, want %d", id, res, n, want)
			}
		}
	}
}

func testEmptyBatchAndPing(t *testing.T, s storage.Store) {
	ctx := testCtx(t)
	if err := s.Ping(ctx); err != nil {
		t.Fatalf("Ping: %v", err)
	}
	if err := s.WriteSnapshots(ctx, nil); err != nil {
		t.Fatalf("WriteSnapshots(nil): %v", err)
	}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{}); err != nil {
		t.Fatalf("WriteSnapshots([]): %v", err)
	}
	if hs := mustHosts(t, s); len(hs) != 0 {
		t.Fatalf("Hosts after empty writes = %v", hostIDs(hs))
	}
}

func testCanceledContext(t *testing.T, s storage.Store) {
	ctx, cancel := context.WithCancel(t.Context())
	cancel()
	snap := storage.Snapshot{HostID: "cancel", Timestamp: base(), Samples: []storage.Sample{{Series: "v", Value: 1}}}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{snap}); !errors.Is(err, context.Canceled) {
		t.Fatalf("WriteSnapshots with a canceled context = %v, want context.Canceled", err)
	}
	if _, err := s.Range(ctx, storage.RangeQuery{HostID: "cancel", From: 0, To: 1 << 62}); !errors.Is(err, context.Canceled) {
		t.Fatalf("Range with a canceled context = %v, want context.Canceled", err)
	}
	if _, err := s.RangeRollup(ctx, storage.RollupQuery{HostID: "cancel", Resolution: storage.Minute, From: 0, To: 1 << 62}); !errors.Is(err, context.Canceled) {
		t.Fatalf("RangeRollup with a canceled context = %v, want context.Canceled", err)
	}
	if got := mustRange(t, s, storage.RangeQuery{HostID: "cancel", From: 0, To: 1 << 62}); len(got) != 0 {
		t.Fatalf("a write with a canceled context stored %d snapshots", len(got))
	}
}

// Latencies runs op b.N times and reports the median and 99th percentile
// (the backends' range-latency benchmarks share it).
func Latencies(b *testing.B, op func() error) {
	d := make([]time.Duration, 0, b.N)
	b.ReportAllocs()
	b.ResetTimer()
	for i := 0; i < b.N; i++ {
		start := time.Now()
		if err := op(); err != nil {
			b.Fatal(err)
		}
		d = append(d, time.Since(start))
	}
	b.StopTimer()
	slices.Sort(d)
	b.ReportMetric(float64(d[len(d)/2].Microseconds())/1000, "p50-ms")
	b.ReportMetric(float64(d[len(d)*99/100].Microseconds())/1000, "p99-ms")
}
