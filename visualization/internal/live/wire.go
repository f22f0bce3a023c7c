package live

import (
	"errors"
	"fmt"
	"math"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"

	"github.com/monitorhq/monitor/pkg/pbwire"
	"github.com/monitorhq/monitor/pkg/storage"
)

// The feed decodes the brokers' StoredBatch messages itself (batch)
// instead of through the generated code. The profile of the live path
// (BENCHMARKS.md, "Profiling") had protobuf decoding as two thirds of its
// CPU — a Go map per metric with labels, eight allocations per metric —
// and storage.SeriesKey building and sorting the same maps again most of
// the rest. A broker sends the same metrics every time, and a metric's
// bytes on the wire without its value (name, unit, priority, labels) are
// the same every time (a broker writes the labels in key order). batch
// looks those bytes up in the feed's cache of what they turned into — the
// series key, checked, and the unit — and reads only the value. The same
// for a snapshot's tags: equal bytes give the same (read-only) map.
// Everything else — a metric seen for the first time, unusual encodings —
// is decoded field by field with the generated code's semantics: proto3
// strings must be UTF-8, the last of a repeated scalar wins, map entries
// with the same key keep the last, unknown fields (and known ones with an
// unexpected wire type) are skipped.
//
// The field numbers, the field reader and the string and map entry
// decoding are pkg/pbwire's, shared with the other hand-written codecs.

// maxCached bounds each of the cache's maps: a stream of ever new series
// or tags (a cardinality bomb) empties them rather than growing them
// without bound.
const maxCached = 1 << 16

var errDecode = errors.New("live: cannot decode StoredBatch")

// metricInfo is what a metric's bytes without its value turn into.
type metricInfo struct {
	series  string
	unit    string
	invalid bool // no series key (storage.SeriesKey refused it)
}

// wireCache is a feed's cache of decoded metrics and tags, shared by its
// streams; safe for concurrent use. Its values are never modified.
type wireCache struct {
	mu      sync.RWMutex
	metrics map[string]*metricInfo
	tags    map[string]map[string]string
}

func newWireCache() *wireCache {
	return &wireCache{metrics: map[string]*metricInfo{}, tags: map[string]map[string]string{}}
}

func (c *wireCache) metric(key []byte) *metricInfo {
	c.mu.RLock()
	defer c.mu.RUnlock()
	return c.metrics[string(key)]
}

func (c *wireCache) putMetric(key []byte, m *metricInfo) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.metrics) >= maxCached {
		clear(c.metrics)
	}
	c.metrics[string(key)] = m
}

func (c *wireCache) tagMap(key []byte) (map[string]string, bool) {
	c.mu.RLock()
	defer c.mu.RUnlock()
	m, ok := c.tags[string(key)]
	return m, ok
}

func (c *wireCache) putTags(key []byte, m map[string]string) {
	c.mu.Lock()
	defer c.mu.Unlock()
	if len(c.tags) >= maxCached {
		clear(c.tags)
	}
	c.tags[string(key)] = m
}

// batch is a StoredBatch as the feed reads it. It satisfies the legacy
// protobuf message interface with an Unmarshal method, which gRPC's codec
// calls with the message's bytes (session receives it with RecvMsg). One
// batch is reused by a stream for every message: its slices are valid
// until the next.
type batch struct {
	cache   *wireCache
	dropped uint64
	snaps   []wireSnap
	samples []Sample // every snapshot's samples, back to back
	invalid uint64   // metrics left out: no series key

	tagKey, key []byte // scratch: a snapshot's tag entries, a metric's bytes without its value
}

// wireSnap is one snapshot of a batch: its samples are samples[from:to].
type wireSnap struct {
	host     string
	ts       int64
	tags     map[string]string // nil: none sent; shared, read-only
	from, to int
}

func (b *batch) Reset() {
	b.dropped, b.invalid = 0, 0
	b.snaps, b.samples = b.snaps[:0], b.samples[:0]
}
func (b *batch) String() string {
	return fmt.Sprintf("live.batch{snapshots: %d, dropped: %d}", len(b.snaps), b.dropped)
}
func (b *batch) ProtoMessage() {}

// snapSamples returns the samples of the batch's i-th snapshot.
func (b *batch) snapSamples(i int) []Sample { return b.samples[b.snaps[i].from:b.snaps[i].to] }

// Unmarshal decodes a StoredBatch into b (replacing what b held).
func (b *batch) Unmarshal(data []byte) error {
	if err := b.unmarshal(data); err != nil {
		return fmt.Errorf("%w: %w", errDecode, err)
	}
	return nil
}

func (b *batch) unmarshal(data []byte) error {
	b.Reset()
	for len(data) > 0 {
		num, typ, v, x, n, err := pbwire.Next(data)
		if err != nil {
			return err
		}
		switch {
		case num == pbwire.StoredBatchSnapshots && typ == protowire.BytesType:
			if err := b.snapshot(v); err != nil {
				return err
			}
		case num == pbwire.StoredBatchDropped && typ == protowire.VarintType:
			b.dropped = x
		}
		data = data[n:]
	}
	return nil
}

func (b *batch) snapshot(data []byte) error {
	s := wireSnap{from: len(b.samples)}
	var host []byte
	b.tagKey = b.tagKey[:0]
	for len(data) > 0 {
		num, typ, v, x, n, err := pbwire.Next(data)
		if err != nil {
			return err
		}
		switch {
		case num == pbwire.SnapshotHostID && typ == protowire.BytesType:
			if err := pbwire.ValidUTF8(num, v); err != nil {
				return fmt.Errorf("host id: %w", err)
			}
			host = v
		case num == pbwire.SnapshotTimestamp && typ == protowire.VarintType:
			s.ts = int64(x)
		case num == pbwire.SnapshotTags && typ == protowire.BytesType:
			b.tagKey = append(b.tagKey, data[:n]...)
		case num == pbwire.SnapshotMetrics && typ == protowire.BytesType:
			if err := b.metric(v); err != nil {
				return err
			}
		}
		data = data[n:]
	}
	s.host = string(host)
	if len(b.tagKey) > 0 {
		tags, err := b.tags(b.tagKey)
		if err != nil {
			return err
		}
		s.tags = tags
	}
	s.to = len(b.samples)
	b.snaps = append(b.snaps, s)
	return nil
}

// tags returns the map of a snapshot's tag entries (their bytes, back to
// back), from the cache or decoded now.
func (b *batch) tags(entries []byte) (map[string]string, error) {
	if m, ok := b.cache.tagMap(entries); ok {
		return m, nil
	}
	m := map[string]string{}
	for data := entries; len(data) > 0; {
		_, _, v, _, n, err := pbwire.Next(data) // every one is a tag entry
		if err != nil {
			return nil, err
		}
		k, val, err := pbwire.Entry(v)
		if err != nil {
			return nil, fmt.Errorf("tag: %w", err)
		}
		m[k] = val
		data = data[n:]
	}
	b.cache.putTags(entries, m)
	return m, nil
}

// metric decodes one Metric into a sample, its series and unit from the
// cache when its bytes without the value are known.
func (b *batch) metric(data []byte) error {
	key := b.key[:0]
	var value float64
	for len(data) > 0 {
		num, typ, _, x, n, err := pbwire.Next(data)
		if err != nil {
			return err
		}
		if num == pbwire.MetricValue && typ == protowire.Fixed64Type {
			value = math.Float64frombits(x)
		} else {
			key = append(key, data[:n]...)
		}
		data = data[n:]
	}
	info := b.cache.metric(key)
	if info == nil {
		var err error
		if info, err = decodeMetric(key); err != nil {
			return err
		}
		b.cache.putMetric(key, info)
	}
	b.key = key
	if info.invalid {
		b.invalid++
		return nil
	}
	b.samples = append(b.samples, Sample{Series: info.series, Value: value, Unit: info.unit})
	return nil
}

// decodeMetric decodes a Metric's fields other than the value.
func decodeMetric(data []byte) (*metricInfo, error) {
	var name, unit []byte
	var labels map[string]string
	for len(data) > 0 {
		num, typ, v, _, n, err := pbwire.Next(data)
		if err != nil {
			return nil, err
		}
		data = data[n:]
		if typ != protowire.BytesType {
			continue
		}
		switch num {
		case pbwire.MetricName, pbwire.MetricUnit:
			if err := pbwire.ValidUTF8(num, v); err != nil {
				return nil, fmt.Errorf("metric: %w", err)
			}
			if num == pbwire.MetricName {
				name = v
			} else {
				unit = v
			}
		case pbwire.MetricLabels:
			k, val, err := pbwire.Entry(v)
			if err != nil {
				return nil, fmt.Errorf("label: %w", err)
			}
			if labels == nil {
				labels = map[string]string{}
			}
			labels[k] = val
		}
	}
	series, err := storage.SeriesKey(string(name), labels)
	if err != nil {
		return &metricInfo{invalid: true}, nil
	}
	return &metricInfo{series: series, unit: string(unit)}, nil
}
