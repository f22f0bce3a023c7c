package live

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"sync"
	"unicode/utf8"

	"google.golang.org/protobuf/encoding/protowire"

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
// Field numbers are proto/monitor.proto's.
const (
	fBatchSnapshots, fBatchDropped = 1, 2
	fSnapHost, fSnapTS             = 1, 2
	fSnapTags, fSnapMetrics        = 3, 4
	fMetricName, fMetricValue      = 1, 2
	fMetricUnit, fMetricLabels     = 3, 5
	fEntryKey, fEntryValue         = 1, 2
)

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
	b.Reset()
	for len(data) > 0 {
		num, typ, v, n, err := field(data)
		if err != nil {
			return err
		}
		switch {
		case num == fBatchSnapshots && typ == protowire.BytesType:
			if err := b.snapshot(v); err != nil {
				return err
			}
		case num == fBatchDropped && typ == protowire.VarintType:
			b.dropped, _ = protowire.ConsumeVarint(v)
		}
		data = data[n:]
	}
	return nil
}

// field splits the first field off data: its number, wire type, value
// (the payload of a length-delimited field, else the raw value) and
// total length.
func field(data []byte) (protowire.Number, protowire.Type, []byte, int, error) {
	num, typ, n := protowire.ConsumeTag(data)
	if n < 0 {
		return 0, 0, nil, 0, fmt.Errorf("%w: %v", errDecode, protowire.ParseError(n))
	}
	if num > protowire.MaxValidNumber {
		return 0, 0, nil, 0, fmt.Errorf("%w: field number %d", errDecode, num)
	}
	m := protowire.ConsumeFieldValue(num, typ, data[n:])
	if m < 0 {
		return 0, 0, nil, 0, fmt.Errorf("%w: field %d: %v", errDecode, num, protowire.ParseError(m))
	}
	v := data[n : n+m]
	if typ == protowire.BytesType {
		v, _ = protowire.ConsumeBytes(v)
	}
	return num, typ, v, n + m, nil
}

func (b *batch) snapshot(data []byte) error {
	s := wireSnap{from: len(b.samples)}
	var host []byte
	b.tagKey = b.tagKey[:0]
	for len(data) > 0 {
		num, typ, v, n, err := field(data)
		if err != nil {
			return err
		}
		switch {
		case num == fSnapHost && typ == protowire.BytesType:
			if !utf8.Valid(v) {
				return fmt.Errorf("%w: host id %q is not valid UTF-8", errDecode, v)
			}
			host = v
		case num == fSnapTS && typ == protowire.VarintType:
			u, _ := protowire.ConsumeVarint(v)
			s.ts = int64(u)
		case num == fSnapTags && typ == protowire.BytesType:
			b.tagKey = append(b.tagKey, data[:n]...)
		case num == fSnapMetrics && typ == protowire.BytesType:
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
		_, _, v, n, err := field(data) // every one is a tag entry
		if err != nil {
			return nil, err
		}
		k, val, err := entry(v)
		if err != nil {
			return nil, fmt.Errorf("tag: %w", err)
		}
		m[k] = val
		data = data[n:]
	}
	b.cache.putTags(entries, m)
	return m, nil
}

// entry decodes a map<string, string> entry.
func entry(data []byte) (k, v string, err error) {
	var kb, vb []byte
	for len(data) > 0 {
		num, typ, val, n, err := field(data)
		if err != nil {
			return "", "", err
		}
		if typ == protowire.BytesType && (num == fEntryKey || num == fEntryValue) {
			if !utf8.Valid(val) {
				return "", "", fmt.Errorf("%w: map entry field %d %q is not valid UTF-8", errDecode, num, val)
			}
			if num == fEntryKey {
				kb = val
			} else {
				vb = val
			}
		}
		data = data[n:]
	}
	return string(kb), string(vb), nil
}

// metric decodes one Metric into a sample, its series and unit from the
// cache when its bytes without the value are known.
func (b *batch) metric(data []byte) error {
	key := b.key[:0]
	var value float64
	for len(data) > 0 {
		num, typ, _, n, err := field(data)
		if err != nil {
			return err
		}
		if num == fMetricValue && typ == protowire.Fixed64Type {
			value = math.Float64frombits(binary.LittleEndian.Uint64(data[n-8 : n]))
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
		num, typ, v, n, err := field(data)
		if err != nil {
			return nil, err
		}
		if typ == protowire.BytesType && (num == fMetricName || num == fMetricUnit) && !utf8.Valid(v) {
			return nil, fmt.Errorf("%w: metric field %d %q is not valid UTF-8", errDecode, num, v)
		}
		if typ == protowire.BytesType {
			switch num {
			case fMetricName:
				name = v
			case fMetricUnit:
				unit = v
			case fMetricLabels:
				k, val, err := entry(v)
				if err != nil {
					return nil, fmt.Errorf("label: %w", err)
				}
				if labels == nil {
					labels = map[string]string{}
				}
				labels[k] = val
			}
		}
		data = data[n:]
	}
	series, err := storage.SeriesKey(string(name), labels)
	if err != nil {
		return &metricInfo{invalid: true}, nil
	}
	return &metricInfo{series: series, unit: string(unit)}, nil
}
