package live

import (
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"testing"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/pkg/pbwire"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// decoded is a batch as the feed hands it on, for comparison.
type decoded struct {
	dropped, invalid uint64
	snaps            []decodedSnap
}

type decodedSnap struct {
	host    string
	ts      int64
	tags    map[string]string
	samples []Sample
}

// viaGenerated is what the feed made of data before wire.go: the
// generated code's decoding, then storage.SeriesKey per metric.
func viaGenerated(data []byte) (decoded, error) {
	var pb monitorpb.StoredBatch
	if err := proto.Unmarshal(data, &pb); err != nil {
		return decoded{}, err
	}
	out := decoded{dropped: pb.GetDropped()}
	for _, s := range pb.GetSnapshots() {
		d := decodedSnap{host: s.GetHostId(), ts: s.GetTimestamp(), tags: s.GetTags(), samples: []Sample{}}
		for _, m := range s.GetMetrics() {
			key, err := storage.SeriesKey(m.GetName(), m.GetLabels())
			if err != nil {
				out.invalid++
				continue
			}
			d.samples = append(d.samples, Sample{Series: key, Value: m.GetValue(), Unit: m.GetUnit()})
		}
		out.snaps = append(out.snaps, d)
	}
	return out, nil
}

func viaBatch(b *batch, data []byte) (decoded, error) {
	if err := b.Unmarshal(data); err != nil {
		return decoded{}, err
	}
	out := decoded{dropped: b.dropped, invalid: b.invalid}
	for i, s := range b.snaps {
		out.snaps = append(out.snaps, decodedSnap{host: s.host, ts: s.ts, tags: s.tags, samples: append([]Sample{}, b.snapSamples(i)...)})
	}
	return out, nil
}

func sameDecoded(a, b decoded) bool {
	if a.dropped != b.dropped || a.invalid != b.invalid || len(a.snaps) != len(b.snaps) {
		return false
	}
	for i := range a.snaps {
		x, y := a.snaps[i], b.snaps[i]
		if x.host != y.host || x.ts != y.ts || (x.tags == nil) != (y.tags == nil) || !maps.Equal(x.tags, y.tags) {
			return false
		}
		if !slices.EqualFunc(x.samples, y.samples, func(p, q Sample) bool {
			return p.Series == q.Series && p.Unit == q.Unit && math.Float64bits(p.Value) == math.Float64bits(q.Value)
		}) {
			return false
		}
	}
	return true
}

// check decodes data both ways, twice with the same batch (the second
// time from the cache) and fails unless they agree.
func check(t testing.TB, b *batch, data []byte) {
	t.Helper()
	want, werr := viaGenerated(data)
	for round := range 2 {
		got, err := viaBatch(b, data)
		if (err != nil) != (werr != nil) {
			t.Fatalf("round %d, %x: error %v, the generated code's %v", round, data, err, werr)
		}
		if err == nil && !sameDecoded(got, want) {
			t.Fatalf("round %d, %x: decoded\n%+v\nthe generated code\n%+v", round, data, got, want)
		}
	}
}

func tag(num protowire.Number, typ protowire.Type) []byte { return protowire.AppendTag(nil, num, typ) }

func str(num protowire.Number, s string) []byte {
	return protowire.AppendString(tag(num, protowire.BytesType), s)
}

func msg(num protowire.Number, parts ...[]byte) []byte {
	return protowire.AppendBytes(tag(num, protowire.BytesType), slices.Concat(parts...))
}

func varint(num protowire.Number, v uint64) []byte {
	return protowire.AppendVarint(tag(num, protowire.VarintType), v)
}

func fixed(num protowire.Number, v float64) []byte {
	return protowire.AppendFixed64(tag(num, protowire.Fixed64Type), math.Float64bits(v))
}

func TestBatchDecodesEdgeEncodings(t *testing.T) {
	cpu := msg(pbwire.SnapshotMetrics, str(pbwire.MetricName, "cpu.usage_percent"), fixed(pbwire.MetricValue, 42), str(pbwire.MetricUnit, "%"))
	cases := []struct {
		name string
		data []byte
	}{
		{"empty", nil},
		{"gap marker only", varint(pbwire.StoredBatchDropped, 3)},
		{"dropped repeated: the last wins", slices.Concat(varint(pbwire.StoredBatchDropped, 3), varint(pbwire.StoredBatchDropped, 9))},
		{"a snapshot", msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "web-1"), varint(pbwire.SnapshotTimestamp, 1500), msg(pbwire.SnapshotTags, str(1, "role"), str(2, "web")), cpu)},
		{"fields out of order, repeated scalars", msg(pbwire.StoredBatchSnapshots, cpu, varint(pbwire.SnapshotTimestamp, 1), str(pbwire.SnapshotHostID, "a"), varint(pbwire.SnapshotTimestamp, 1500), str(pbwire.SnapshotHostID, "web-1"))},
		{"tag key repeated: the last wins", msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "h"), msg(pbwire.SnapshotTags, str(1, "k"), str(2, "a")), msg(pbwire.SnapshotTags, str(1, "k"), str(2, "b")))},
		{"tag entry without key or value", msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "h"), msg(pbwire.SnapshotTags, str(2, "v")), msg(pbwire.SnapshotTags, str(1, "k")))},
		{"labels in any order, repeated", msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "h"), msg(pbwire.SnapshotMetrics,
			msg(pbwire.MetricLabels, str(2, "sda"), str(1, "device")), str(pbwire.MetricName, "disk.io"), msg(pbwire.MetricLabels, str(1, "mount"), str(2, "/")),
			fixed(pbwire.MetricValue, 1), fixed(pbwire.MetricValue, 2), msg(pbwire.MetricLabels, str(1, "device"), str(2, "nvme0n1"))))},
		{"unknown fields and wrong wire types skipped", msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "h"), varint(pbwire.SnapshotHostID, 5), str(pbwire.SnapshotTimestamp, "x"), varint(99, 1),
			msg(pbwire.SnapshotMetrics, str(pbwire.MetricName, "m"), varint(pbwire.MetricValue, 7), fixed(pbwire.MetricName, 1), varint(4, 2), str(77, "?"), msg(pbwire.MetricLabels, varint(1, 3), str(1, "a"), str(2, "b"))),
			tag(60, protowire.StartGroupType), varint(1, 1), tag(60, protowire.EndGroupType))},
		{"invalid series counted", msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "h"),
			msg(pbwire.SnapshotMetrics, str(pbwire.MetricName, "bad name"), fixed(pbwire.MetricValue, 1)), cpu,
			msg(pbwire.SnapshotMetrics, str(pbwire.MetricName, "m"), msg(pbwire.MetricLabels, str(1, "k"), str(2, "a,b"))))},
		{"zero and negative zero", msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "h"), msg(pbwire.SnapshotMetrics, str(pbwire.MetricName, "m")), msg(pbwire.SnapshotMetrics, str(pbwire.MetricName, "n"), fixed(pbwire.MetricValue, math.Copysign(0, -1))))},
		{"an empty snapshot", msg(pbwire.StoredBatchSnapshots)},
		{"invalid UTF-8 host id", msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "\xff"), str(pbwire.SnapshotHostID, "h"))},
		{"invalid UTF-8 tag", msg(pbwire.StoredBatchSnapshots, msg(pbwire.SnapshotTags, str(1, "k"), str(2, "\xc3")))},
		{"invalid UTF-8 unit", msg(pbwire.StoredBatchSnapshots, msg(pbwire.SnapshotMetrics, str(pbwire.MetricName, "m"), str(pbwire.MetricUnit, "\xff"), str(pbwire.MetricUnit, "%")))},
		{"invalid UTF-8 label", msg(pbwire.StoredBatchSnapshots, msg(pbwire.SnapshotMetrics, str(pbwire.MetricName, "m"), msg(pbwire.MetricLabels, str(1, "k"), str(2, "\xff"))))},
		{"truncated", msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "web-1"), cpu)[:20]},
		{"field number 0", varint(0, 1)},
		{"bad length", []byte{0x0a, 0x80}},
	}
	for _, tc := range cases {
		t.Run(tc.name, func(t *testing.T) { check(t, &batch{cache: newWireCache()}, tc.data) })
	}
}

// randomBatch encodes a random StoredBatch with the generated code (label
// and tag maps in random order, as a broker with the generated code sends
// them).
func randomBatch(r *rand.Rand) []byte {
	names := []string{"cpu.usage_percent", "disk.used_bytes", "net.rx_bytes_per_sec", "load.1", "bad name"}
	labelKeys := []string{"cpu", "device", "mount", "interface", "9bad"}
	values := []string{"eth0", "/", "sda", "cpu1", "a=b", ""}
	pb := &monitorpb.StoredBatch{}
	if r.IntN(3) == 0 {
		pb.Dropped = r.Uint64N(100)
	}
	for range r.IntN(4) {
		s := &monitorpb.Snapshot{HostId: fmt.Sprintf("host-%d", r.IntN(5)), Timestamp: r.Int64N(1 << 40)}
		if r.IntN(2) == 0 {
			s.Tags = map[string]string{}
			for range r.IntN(3) {
				s.Tags[labelKeys[r.IntN(4)]] = values[r.IntN(len(values))]
			}
		}
		for range r.IntN(20) {
			m := &monitorpb.Metric{Name: names[r.IntN(len(names))], Value: r.NormFloat64(), Unit: []string{"", "%", "bytes"}[r.IntN(3)], Priority: monitorpb.Priority(r.IntN(3))}
			if r.IntN(2) == 0 {
				m.Labels = map[string]string{}
				for range 1 + r.IntN(3) {
					m.Labels[labelKeys[r.IntN(len(labelKeys))]] = values[r.IntN(len(values))]
				}
			}
			s.Metrics = append(s.Metrics, m)
		}
		pb.Snapshots = append(pb.Snapshots, s)
	}
	data, err := proto.Marshal(pb)
	if err != nil {
		panic(err)
	}
	return data
}

func TestBatchDecodesRandomBatches(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	b := &batch{cache: newWireCache()} // one cache for all: hits and misses mixed
	for range 500 {
		check(t, b, randomBatch(r))
	}
}

// TestWireCacheIsBounded: ever new series empty the cache instead of
// growing it.
func TestWireCacheIsBounded(t *testing.T) {
	b := &batch{cache: newWireCache()}
	for i := range maxCached + 10 {
		data := msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "h"), msg(pbwire.SnapshotTags, str(1, "k"), str(2, fmt.Sprint(i))),
			msg(pbwire.SnapshotMetrics, str(pbwire.MetricName, "m"), msg(pbwire.MetricLabels, str(1, "i"), str(2, fmt.Sprint(i)))))
		if i%9999 == 0 || i >= maxCached {
			check(t, b, data)
		} else if err := b.Unmarshal(data); err != nil {
			t.Fatal(err)
		}
	}
	if n, m := len(b.cache.metrics), len(b.cache.tags); n > maxCached || m > maxCached {
		t.Fatalf("cache holds %d metrics and %d tag sets, the bound is %d", n, m, maxCached)
	}
}

// FuzzBatch: on any bytes the feed's decoder fails exactly when the
// generated code does, and otherwise agrees with it.
func FuzzBatch(f *testing.F) {
	r := rand.New(rand.NewPCG(5, 6))
	for range 8 {
		f.Add(randomBatch(r))
	}
	f.Add(msg(pbwire.StoredBatchSnapshots, str(pbwire.SnapshotHostID, "h"), msg(pbwire.SnapshotMetrics, str(pbwire.MetricName, "m"), msg(pbwire.MetricLabels, str(1, "k"), str(2, "v")))))
	b := &batch{cache: newWireCache()}
	f.Fuzz(func(t *testing.T, data []byte) { check(t, b, data) })
}
