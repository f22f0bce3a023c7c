package service

import (
	"fmt"
	"maps"
	"math"
	"slices"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/monitorhq/monitor/pkg/pbwire"
	"github.com/monitorhq/monitor/pkg/storage"
)

// A Subscribe stream's messages are encoded by the broker itself
// (batchEncoder) instead of through the generated code. The profile of the
// stream (BENCHMARKS.md, "Profiling") had ToProto and the generated
// marshalling as nearly all of its CPU: every stored sample's series key
// parsed back into a Go map (storage.ParseSeries), then that map sized and
// written by reflection, twice (gRPC's codec sizes a message before it
// marshals it). A series key names the same metric every time, so what it
// turns into on the wire — the Metric's name field and its label entries —
// is encoded once per stream and appended from then on; a sample costs its
// value and unit.
//
// The output is the generated code's deterministic encoding of
// ToProto's messages (fields in number order, map entries sorted by key,
// zero values omitted), so every client decodes it as before.
//
// The field numbers and the size and append helpers are pkg/pbwire's,
// shared with the other hand-written codecs.

// maxEncodedSeries bounds an encoder's cache: a stream of ever new series
// (a cardinality bomb stored by some agent) empties it rather than growing
// it without bound.
const maxEncodedSeries = 1 << 16

// seriesWire is what a series key turns into in a Metric: the name field
// and the label entries, encoded. ok is false for a key ParseSeries refuses
// (its samples are left out, as ToProto does).
type seriesWire struct {
	fields []byte
	ok     bool
}

// batchEncoder encodes one Subscribe stream's StoredBatch messages. It is
// not safe for concurrent use: each stream has its own.
type batchEncoder struct {
	series map[string]*seriesWire
	// Scratch, reused from one batch to the next.
	wires []*seriesWire // per sample of the batch
	sizes []int         // per snapshot: its encoded size
	keys  []string      // a snapshot's tag keys, sorted
}

func newBatchEncoder() *batchEncoder {
	return &batchEncoder{series: map[string]*seriesWire{}}
}

// wire returns what series turns into, from the cache or encoded now.
func (e *batchEncoder) wire(series string) *seriesWire {
	if w := e.series[series]; w != nil {
		return w
	}
	w := &seriesWire{}
	name, labels, err := storage.ParseSeries(series)
	if err == nil {
		w.ok = true
		w.fields = pbwire.AppendString(w.fields, pbwire.MetricName, name)
		for _, k := range slices.Sorted(maps.Keys(labels)) {
			w.fields = pbwire.AppendEntry(w.fields, pbwire.MetricLabels, k, labels[k])
		}
	}
	if len(e.series) >= maxEncodedSeries {
		clear(e.series)
	}
	e.series[series] = w
	return w
}

// encode returns the StoredBatch message of snaps with dropped as its gap
// marker, in a new slice (gRPC may still hold the previous message's bytes
// when Send returns).
func (e *batchEncoder) encode(snaps []storage.Snapshot, dropped uint64) []byte {
	e.wires = e.wires[:0]
	e.sizes = e.sizes[:0]
	total := 0
	if dropped != 0 {
		total += protowire.SizeTag(pbwire.StoredBatchDropped) + protowire.SizeVarint(dropped)
	}
	for i := range snaps {
		s := &snaps[i]
		n := 0
		if s.HostID != "" {
			n += pbwire.SizeString(pbwire.SnapshotHostID, s.HostID)
		}
		if s.Timestamp != 0 {
			n += protowire.SizeTag(pbwire.SnapshotTimestamp) + protowire.SizeVarint(uint64(s.Timestamp))
		}
		for k, v := range s.Tags {
			n += pbwire.SizeEntry(pbwire.SnapshotTags, k, v)
		}
		for j := range s.Samples {
			smp := &s.Samples[j]
			w := e.wire(smp.Series)
			e.wires = append(e.wires, w)
			if w.ok {
				m := metricSize(w, smp)
				n += protowire.SizeTag(pbwire.SnapshotMetrics) + protowire.SizeBytes(m)
			}
		}
		e.sizes = append(e.sizes, n)
		total += protowire.SizeTag(pbwire.StoredBatchSnapshots) + protowire.SizeBytes(n)
	}
	b := make([]byte, 0, total)
	wires := e.wires
	for i := range snaps {
		s := &snaps[i]
		b = protowire.AppendTag(b, pbwire.StoredBatchSnapshots, protowire.BytesType)
		b = protowire.AppendVarint(b, uint64(e.sizes[i]))
		if s.HostID != "" {
			b = pbwire.AppendString(b, pbwire.SnapshotHostID, s.HostID)
		}
		if s.Timestamp != 0 {
			b = protowire.AppendTag(b, pbwire.SnapshotTimestamp, protowire.VarintType)
			b = protowire.AppendVarint(b, uint64(s.Timestamp))
		}
		if len(s.Tags) > 0 {
			e.keys = e.keys[:0]
			for k := range s.Tags {
				e.keys = append(e.keys, k)
			}
			slices.Sort(e.keys)
			for _, k := range e.keys {
				b = pbwire.AppendEntry(b, pbwire.SnapshotTags, k, s.Tags[k])
			}
		}
		for j := range s.Samples {
			smp, w := &s.Samples[j], wires[j]
			if !w.ok {
				continue
			}
			b = protowire.AppendTag(b, pbwire.SnapshotMetrics, protowire.BytesType)
			b = protowire.AppendVarint(b, uint64(metricSize(w, smp)))
			b = appendMetric(b, w, smp)
		}
		wires = wires[len(s.Samples):]
	}
	if dropped != 0 {
		b = protowire.AppendTag(b, pbwire.StoredBatchDropped, protowire.VarintType)
		b = protowire.AppendVarint(b, dropped)
	}
	if len(b) != total {
		// A size and an append disagree: a bug here, never the data's.
		panic(fmt.Sprintf("service: StoredBatch encoded in %d bytes, sized %d", len(b), total))
	}
	return b
}

// metricSize is the size of the Metric of smp, whose series is w.
func metricSize(w *seriesWire, smp *storage.Sample) int {
	n := len(w.fields)
	if math.Float64bits(smp.Value) != 0 {
		n += protowire.SizeTag(pbwire.MetricValue) + protowire.SizeFixed64()
	}
	if smp.Unit != "" {
		n += pbwire.SizeString(pbwire.MetricUnit, smp.Unit)
	}
	return n
}

// appendMetric appends the Metric of smp in field number order: name,
// value, unit, labels (the name is the first of w.fields).
func appendMetric(b []byte, w *seriesWire, smp *storage.Sample) []byte {
	_, _, n := protowire.ConsumeField(w.fields)
	b = append(b, w.fields[:n]...)
	if bits := math.Float64bits(smp.Value); bits != 0 {
		b = protowire.AppendTag(b, pbwire.MetricValue, protowire.Fixed64Type)
		b = protowire.AppendFixed64(b, bits)
	}
	if smp.Unit != "" {
		b = pbwire.AppendString(b, pbwire.MetricUnit, smp.Unit)
	}
	return append(b, w.fields[n:]...)
}

// encodedBatch is an encoded StoredBatch handed to stream.SendMsg: it
// satisfies the legacy protobuf message interface with a Marshal method,
// which gRPC's codec calls (twice: to size, then to write; both get the
// same bytes).
type encodedBatch struct{ b []byte }

func (m *encodedBatch) Reset() { m.b = nil }
func (m *encodedBatch) String() string {
	return fmt.Sprintf("service.encodedBatch{%d bytes}", len(m.b))
}
func (m *encodedBatch) ProtoMessage()            {}
func (m *encodedBatch) Marshal() ([]byte, error) { return m.b, nil }
