package ingest

import (
	"fmt"
	"math"
	"math/rand/v2"
	"reflect"
	"slices"
	"testing"
	"time"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	monitorpb "github.com/monitorhq/monitor/proto"
)

var wireNow = time.Unix(1_800_000_000, 0)

var wideLim = Limits{MaxBatchSnapshots: 100, MaxSamplesPerSnapshot: 100, MaxFutureSkew: 10 * time.Minute, MaxAge: 7 * 24 * time.Hour}

// sameResult compares what the two decoders led Convert to: stored
// snapshots exactly, rejections by item (their reasons may name a
// different one of several bad labels: a map has no order).
func sameResult(t *testing.T, what string, got, want Result, reasons bool) {
	t.Helper()
	if !reflect.DeepEqual(got.Snapshots, want.Snapshots) || got.Samples != want.Samples {
		t.Fatalf("%s: stored\n%+v\nwant\n%+v", what, got.Snapshots, want.Snapshots)
	}
	key := func(r *monitorpb.Rejection) string {
		k := fmt.Sprintf("%d/%d/%s/%s/%d/%s", r.GetSeq(), r.GetSnapshotIndex(), r.GetHostId(), r.GetMetric(), r.GetTimestamp(), r.GetReason())
		if !reasons {
			k = fmt.Sprintf("%d/%d/%s/%s/%d", r.GetSeq(), r.GetSnapshotIndex(), r.GetHostId(), r.GetMetric(), r.GetTimestamp())
		}
		return k
	}
	g, w := make([]string, 0), make([]string, 0)
	for _, r := range got.Rejections {
		g = append(g, key(r))
	}
	for _, r := range want.Rejections {
		w = append(w, key(r))
	}
	slices.Sort(g)
	slices.Sort(w)
	if !slices.Equal(g, w) {
		t.Fatalf("%s: rejections\n%q\nwant\n%q", what, g, w)
	}
}

// decodeAndConvert is the broker's path: the IngestRequest's bytes
// through Request.Unmarshal, then ConvertBatch.
func decodeAndConvert(t *testing.T, b *monitorpb.Batch, lim Limits) Result {
	t.Helper()
	data, err := proto.Marshal(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: b}})
	if err != nil {
		t.Fatal(err)
	}
	var r Request
	if err := r.Unmarshal(data); err != nil {
		t.Fatalf("decode: %v", err)
	}
	if r.Batch == nil || r.Hello != nil {
		t.Fatalf("decoded %v, want a batch", &r)
	}
	return ConvertBatch(r.Batch, wireNow, lim)
}

func TestWireDecoderMatchesGeneratedCode(t *testing.T) {
	ts := wireNow.Unix()
	b := &monitorpb.Batch{Seq: 7, Snapshots: []*monitorpb.Snapshot{
		{HostId: "web-1", Timestamp: ts, Tags: map[string]string{"dc": "eu", "bad tag": "x"}, Metrics: []*monitorpb.Metric{
			metric("cpu.usage_percent", 12.5, nil),
			metric("cpu.usage_percent", 13, nil),
			metric("mem.used_percent", math.NaN(), nil),
			metric("net.rx_bytes_per_sec", 1, map[string]string{"interface": "eth0"}),
			metric("disk.io", 2, map[string]string{"device": "sda", "mode": "read"}),
			metric("bad name!", 1, nil),
			{Name: "x.y", Value: 1, Unit: "a unit longer than thirty-two bytes, refused"},
			{Name: "x.z", Value: math.Inf(1), Unit: "a unit longer than thirty-two bytes, refused"},
			metric("fs.used", 1, map[string]string{"bad label": "v"}),
			{Name: "no.value", Unit: "%", Priority: monitorpb.Priority_PRIORITY_HIGH},
		}},
		{HostId: "host:with:colons", Timestamp: ts},
		{HostId: "web-2", Timestamp: ts + 3600},
		{HostId: "web-3", Timestamp: ts - 8*24*3600},
		{HostId: "web-4", Timestamp: ts},
	}}
	want := Convert(b, wireNow, wideLim)
	// Twice: the second time every valid metric comes from the cache.
	for round := range 2 {
		sameResult(t, fmt.Sprintf("round %d", round), decodeAndConvert(t, b, wideLim), want, true)
	}
	small := Limits{MaxBatchSnapshots: 2, MaxSamplesPerSnapshot: 3, MaxFutureSkew: time.Minute, MaxAge: time.Hour}
	sameResult(t, "small limits", decodeAndConvert(t, b, small), Convert(b, wireNow, small), true)
}

// Hand-made encodings the generated code accepts: a label key twice (the
// last wins), the value twice (the last wins), a snapshot's host id twice,
// an unknown field, the batch field twice (merged).
func TestWireDecoderEdgeEncodings(t *testing.T) {
	entry := func(k, v string) []byte {
		var e []byte
		e = protowire.AppendTag(e, 1, protowire.BytesType)
		e = protowire.AppendString(e, k)
		e = protowire.AppendTag(e, 2, protowire.BytesType)
		return protowire.AppendString(e, v)
	}
	var m []byte
	m = protowire.AppendTag(m, 1, protowire.BytesType)
	m = protowire.AppendString(m, "net.rx")
	m = protowire.AppendTag(m, 2, protowire.Fixed64Type)
	m = protowire.AppendFixed64(m, math.Float64bits(1))
	m = protowire.AppendTag(m, 5, protowire.BytesType)
	m = protowire.AppendBytes(m, entry("if", "eth0"))
	m = protowire.AppendTag(m, 5, protowire.BytesType)
	m = protowire.AppendBytes(m, entry("if", "eth1"))
	m = protowire.AppendTag(m, 99, protowire.VarintType) // unknown
	m = protowire.AppendVarint(m, 5)
	m = protowire.AppendTag(m, 2, protowire.Fixed64Type)
	m = protowire.AppendFixed64(m, math.Float64bits(2))
	var s []byte
	s = protowire.AppendTag(s, 1, protowire.BytesType)
	s = protowire.AppendString(s, "first")
	s = protowire.AppendTag(s, 2, protowire.VarintType)
	s = protowire.AppendVarint(s, uint64(wireNow.Unix()))
	s = protowire.AppendTag(s, 4, protowire.BytesType)
	s = protowire.AppendBytes(s, m)
	s = protowire.AppendTag(s, 1, protowire.BytesType)
	s = protowire.AppendString(s, "second")
	var b1, b2 []byte
	b1 = protowire.AppendTag(b1, 1, protowire.VarintType)
	b1 = protowire.AppendVarint(b1, 3)
	b1 = protowire.AppendTag(b1, 2, protowire.BytesType)
	b1 = protowire.AppendBytes(b1, s)
	b2 = protowire.AppendTag(b2, 2, protowire.BytesType)
	b2 = protowire.AppendBytes(b2, s)
	var req []byte
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, b1)
	req = protowire.AppendTag(req, 2, protowire.BytesType)
	req = protowire.AppendBytes(req, b2)

	var pb monitorpb.IngestRequest
	if err := proto.Unmarshal(req, &pb); err != nil {
		t.Fatal(err)
	}
	want := Convert(pb.GetBatch(), wireNow, wideLim)
	if len(want.Snapshots) != 2 || want.Snapshots[0].HostID != "second" || want.Snapshots[0].Samples[0].Series != "net.rx{if=eth1}" || want.Snapshots[0].Samples[0].Value != 2 {
		t.Fatalf("the generated code's reading changed: %+v", want.Snapshots)
	}
	for round := range 2 {
		var r Request
		if err := r.Unmarshal(req); err != nil {
			t.Fatal(err)
		}
		sameResult(t, fmt.Sprintf("round %d", round), ConvertBatch(r.Batch, wireNow, wideLim), want, true)
	}
}

func TestWireDecoderRefusesWhatTheGeneratedCodeRefuses(t *testing.T) {
	bad := string([]byte{0xff, 0xfe})
	for name, b := range map[string]*monitorpb.Batch{
		"host":        {Snapshots: []*monitorpb.Snapshot{{HostId: bad}}},
		"metric name": {Snapshots: []*monitorpb.Snapshot{{HostId: "h", Metrics: []*monitorpb.Metric{{Name: bad}}}}},
		"unit":        {Snapshots: []*monitorpb.Snapshot{{HostId: "h", Metrics: []*monitorpb.Metric{{Name: "a.b", Unit: bad}}}}},
		"label value": {Snapshots: []*monitorpb.Snapshot{{HostId: "h", Metrics: []*monitorpb.Metric{{Name: "a.b", Labels: map[string]string{"k": bad}}}}}},
		"tag key":     {Snapshots: []*monitorpb.Snapshot{{HostId: "h", Tags: map[string]string{bad: "v"}}}},
	} {
		data, err := proto.MarshalOptions{}.Marshal(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: b}})
		if err == nil {
			if perr := proto.Unmarshal(data, &monitorpb.IngestRequest{}); perr == nil {
				t.Fatalf("%s: the generated code accepts invalid UTF-8", name)
			}
		} else {
			// Marshal refuses it too; build the bytes by hand instead.
			continue
		}
		var r Request
		if err := r.Unmarshal(data); err == nil {
			t.Fatalf("%s: invalid UTF-8 accepted", name)
		}
	}
	var r Request
	if err := r.Unmarshal([]byte{0x12, 0x05, 0x0a}); err == nil {
		t.Fatal("a truncated message was accepted")
	}
}

// Random batches: the broker's decoder and the generated code lead Convert
// to the same result, first from scratch and then from the cache.
func TestWireDecoderRandomBatches(t *testing.T) {
	rng := rand.New(rand.NewPCG(1, 2))
	pick := func(xs ...string) string { return xs[rng.IntN(len(xs))] }
	for i := range 300 {
		b := &monitorpb.Batch{Seq: uint64(i + 1)}
		for range rng.IntN(4) {
			s := &monitorpb.Snapshot{HostId: pick("a", "b-1", "bad host", ""), Timestamp: wireNow.Unix() - int64(rng.IntN(100))}
			if rng.IntN(2) == 0 {
				s.Tags = map[string]string{pick("env", "dc", "1bad"): pick("x", "")}
			}
			for range rng.IntN(8) {
				m := &monitorpb.Metric{Name: pick("cpu.usage", "mem.used", "bad name", "", "x"), Value: []float64{1, -2.5, math.NaN(), 0}[rng.IntN(4)],
					Unit: pick("%", "", "bytes"), Priority: monitorpb.Priority(rng.IntN(3))}
				if rng.IntN(2) == 0 {
					m.Labels = map[string]string{pick("core", "device", "bad key"): pick("0", "sda", "")}
				}
				s.Metrics = append(s.Metrics, m)
			}
			b.Snapshots = append(b.Snapshots, s)
		}
		want := Convert(b, wireNow, wideLim)
		sameResult(t, fmt.Sprintf("batch %d", i), decodeAndConvert(t, b, wideLim), want, false)
		sameResult(t, fmt.Sprintf("batch %d again", i), decodeAndConvert(t, b, wideLim), want, false)
	}
}

// FuzzWireDecoder: on any bytes, the broker's decoder and the generated
// code agree on whether the batch decodes, and then on what Convert makes
// of it.
func FuzzWireDecoder(f *testing.F) {
	seed, _ := proto.Marshal(&monitorpb.Batch{Seq: 1, Snapshots: []*monitorpb.Snapshot{{HostId: "h", Timestamp: wireNow.Unix(),
		Tags: map[string]string{"env": "x"}, Metrics: []*monitorpb.Metric{metric("cpu.usage_percent", 1, map[string]string{"core": "0"})}}}})
	f.Add(seed)
	f.Add([]byte{})
	f.Fuzz(func(t *testing.T, data []byte) {
		var pb monitorpb.Batch
		perr := proto.Unmarshal(data, &pb)
		got, err := DecodeBatch(data)
		if (perr == nil) != (err == nil) {
			t.Fatalf("generated code: %v; broker's decoder: %v", perr, err)
		}
		if err != nil {
			return
		}
		sameResult(t, "fuzz", ConvertBatch(got, wireNow, wideLim), Convert(&pb, wireNow, wideLim), false)
	})
}
