package loadgen

import (
	"fmt"
	"math"
	"sort"

	"google.golang.org/grpc/encoding"
	"google.golang.org/grpc/mem"
	"google.golang.org/protobuf/encoding/protowire"
)

// The generator encodes its batches itself: a metric's name, unit,
// priority and labels never change, so their protobuf bytes are made once
// per catalogue entry and a snapshot is those bytes plus 8 bytes of value
// per metric. Marshaling 50 messages with label maps through reflection
// for every snapshot cost the load generator more CPU than the broker under
// test spends decoding them; the bytes on the wire are the same messages
// (TestWireMatchesProto).
//
// Field numbers are proto/monitor.proto's.
const (
	fReqBatch        = 2 // IngestRequest.batch
	fBatchSeq        = 1 // Batch.seq
	fBatchSnapshots  = 2 // Batch.snapshots
	fSnapHost        = 1 // Snapshot.host_id
	fSnapTimestamp   = 2 // Snapshot.timestamp
	fSnapTags        = 3 // Snapshot.tags
	fSnapMetrics     = 4 // Snapshot.metrics
	fMetricName      = 1
	fMetricValue     = 2
	fMetricUnit      = 3
	fMetricPriority  = 4
	fMetricLabels    = 5
	fMapKey, fMapVal = 1, 2
)

// encoder holds the constant parts of every metric.
type encoder struct {
	static [][]byte // per metric: name, unit, priority, labels
	tags   []byte   // the snapshot's tags
}

func appendMapEntry(b []byte, field protowire.Number, k, v string) []byte {
	b = protowire.AppendTag(b, field, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(protowire.SizeTag(fMapKey)+protowire.SizeBytes(len(k))+protowire.SizeTag(fMapVal)+protowire.SizeBytes(len(v))))
	b = protowire.AppendTag(b, fMapKey, protowire.BytesType)
	b = protowire.AppendString(b, k)
	b = protowire.AppendTag(b, fMapVal, protowire.BytesType)
	return protowire.AppendString(b, v)
}

func appendMap(b []byte, field protowire.Number, m map[string]string) []byte {
	keys := make([]string, 0, len(m))
	for k := range m {
		keys = append(keys, k)
	}
	sort.Strings(keys)
	for _, k := range keys {
		b = appendMapEntry(b, field, k, m[k])
	}
	return b
}

func newEncoder(defs []metricDef, tags map[string]string) *encoder {
	e := &encoder{tags: appendMap(nil, fSnapTags, tags)}
	for _, d := range defs {
		var b []byte
		b = protowire.AppendTag(b, fMetricName, protowire.BytesType)
		b = protowire.AppendString(b, d.name)
		if d.unit != "" {
			b = protowire.AppendTag(b, fMetricUnit, protowire.BytesType)
			b = protowire.AppendString(b, d.unit)
		}
		if d.priority != 0 {
			b = protowire.AppendTag(b, fMetricPriority, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(d.priority))
		}
		b = appendMap(b, fMetricLabels, d.labels)
		e.static = append(e.static, b)
	}
	return e
}

// snapshot appends the encoded Snapshot message (without its own tag) of
// hostID at ts with vals to b.
func (e *encoder) snapshot(b []byte, hostID string, ts int64, vals []float64) []byte {
	b = protowire.AppendTag(b, fSnapHost, protowire.BytesType)
	b = protowire.AppendString(b, hostID)
	b = protowire.AppendTag(b, fSnapTimestamp, protowire.VarintType)
	b = protowire.AppendVarint(b, uint64(ts))
	b = append(b, e.tags...)
	for i, st := range e.static {
		b = protowire.AppendTag(b, fSnapMetrics, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(len(st)+protowire.SizeTag(fMetricValue)+protowire.SizeFixed64()))
		b = append(b, st...)
		b = protowire.AppendTag(b, fMetricValue, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, math.Float64bits(vals[i]))
	}
	return b
}

// batch returns the encoded IngestRequest{batch: {seq, snapshots}}, each
// element of snaps an encoded Snapshot.
func batchRequest(seq uint64, snaps [][]byte) rawMsg {
	inner := protowire.SizeTag(fBatchSeq) + protowire.SizeVarint(seq)
	for _, s := range snaps {
		inner += protowire.SizeTag(fBatchSnapshots) + protowire.SizeBytes(len(s))
	}
	b := make([]byte, 0, protowire.SizeTag(fReqBatch)+protowire.SizeBytes(inner))
	b = protowire.AppendTag(b, fReqBatch, protowire.BytesType)
	b = protowire.AppendVarint(b, uint64(inner))
	b = protowire.AppendTag(b, fBatchSeq, protowire.VarintType)
	b = protowire.AppendVarint(b, seq)
	for _, s := range snaps {
		b = protowire.AppendTag(b, fBatchSnapshots, protowire.BytesType)
		b = protowire.AppendBytes(b, s)
	}
	return b
}

// rawMsg is an already encoded message.
type rawMsg []byte

// rawCodec sends rawMsg as is and everything else as protobuf.
type rawCodec struct{ proto encoding.CodecV2 }

func newRawCodec() (rawCodec, error) {
	c := encoding.GetCodecV2("proto")
	if c == nil {
		return rawCodec{}, fmt.Errorf("grpc has no proto codec registered")
	}
	return rawCodec{proto: c}, nil
}

func (c rawCodec) Marshal(v any) (mem.BufferSlice, error) {
	if r, ok := v.(rawMsg); ok {
		return mem.BufferSlice{mem.SliceBuffer(r)}, nil
	}
	return c.proto.Marshal(v)
}

func (c rawCodec) Unmarshal(data mem.BufferSlice, v any) error { return c.proto.Unmarshal(data, v) }

// Name is "proto": the bytes are protobuf, so the content type stays.
func (c rawCodec) Name() string { return "proto" }
