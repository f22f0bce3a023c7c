package ingest

import (
	"fmt"
	"iter"
	"math"
	"slices"
	"strings"
	"sync"

	"google.golang.org/protobuf/encoding/protowire"
	"google.golang.org/protobuf/proto"

	"github.com/monitorhq/monitor/pkg/pbwire"
	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// The broker decodes an agent's batches itself (DecodeBatch) instead of
// through the generated code. The profile of the ingest path (BENCHMARKS.md,
// "Profiling") had protobuf decoding as its largest part: a Go map per
// metric with labels, eight allocations per metric, and the garbage
// collection they cause; then SeriesKey building and sorting the same
// label maps again in Convert. An agent sends the same 50 metrics every
// time, and a metric's bytes on the wire without its value (name, unit,
// priority, labels) are the same every time. DecodeBatch looks those bytes
// up in a process-wide cache of what Convert derived from them (the
// series key, checked; the unit, checked) and, on a hit, reads only the
// value. Everything else — a metric seen for the first time, unusual
// encodings, tags — is decoded field by field into plain slices, with the
// generated code's semantics: proto3 strings must be UTF-8, the last of
// a repeated scalar wins, map entries with the same key keep the last,
// messages repeated are merged, unknown fields are skipped.
//
// The field numbers, the field reader and the string and map entry
// decoding are pkg/pbwire's, shared with the other hand-written codecs.

// Batch is an agent's batch as Convert reads it.
type Batch struct {
	Seq       uint64
	Snapshots []Snapshot
}

// Snapshot is one snapshot of a Batch.
type Snapshot struct {
	HostID    string
	Timestamp int64
	Tags      map[string]string
	Metrics   []Metric
}

// Metric is one metric of a Snapshot. Labels are in wire order and may
// repeat a key (the last wins, as in a protobuf map).
type Metric struct {
	Name   string
	Value  float64
	Unit   string
	Labels []Pair

	known   *metricInfo // from the cache: name, labels and unit checked
	wireKey string      // the metric's bytes without its value, for the cache
}

// Pair is a label.
type Pair struct{ Key, Value string }

// FromProto is b as Convert reads it.
func FromProto(b *monitorpb.Batch) *Batch {
	out := &Batch{Seq: b.GetSeq(), Snapshots: make([]Snapshot, len(b.GetSnapshots()))}
	for i, s := range b.GetSnapshots() {
		o := &out.Snapshots[i]
		o.HostID, o.Timestamp, o.Tags = s.GetHostId(), s.GetTimestamp(), s.GetTags()
		o.Metrics = make([]Metric, len(s.GetMetrics()))
		for j, m := range s.GetMetrics() {
			mm := &o.Metrics[j]
			mm.Name, mm.Value, mm.Unit = m.GetName(), m.GetValue(), m.GetUnit()
			for k, v := range m.GetLabels() {
				mm.Labels = append(mm.Labels, Pair{k, v})
			}
		}
	}
	return out
}

// metricInfo is what Convert derived from a valid metric's bytes.
type metricInfo struct {
	name, series, unit string
}

// metricCache maps a metric's wire bytes without its value to its
// metricInfo. It holds valid metrics only and is emptied when it reaches
// maxCached entries (a cardinality bomb cannot grow it without bound).
var metricCache = struct {
	sync.RWMutex
	m map[string]*metricInfo
}{m: map[string]*metricInfo{}}

const maxCached = 1 << 16

func rememberMetric(key string, info *metricInfo) {
	metricCache.Lock()
	if len(metricCache.m) >= maxCached {
		clear(metricCache.m)
	}
	metricCache.m[key] = info
	metricCache.Unlock()
}

// DecodeBatch decodes an IngestRequest's Batch message (the bytes of
// field 2, without its tag).
func DecodeBatch(data []byte) (*Batch, error) {
	b := &Batch{}
	d := decoder{}
	metricCache.RLock()
	err := d.batch(b, data)
	metricCache.RUnlock()
	if err != nil {
		return nil, fmt.Errorf("decode batch: %w", err)
	}
	return b, nil
}

type decoder struct {
	key []byte // scratch: a metric's bytes without its value
}

func (d *decoder) batch(b *Batch, data []byte) error {
	for len(data) > 0 {
		num, typ, v, x, n, err := pbwire.Next(data)
		if err != nil {
			return err
		}
		data = data[n:]
		switch {
		case num == pbwire.BatchSeq && typ == protowire.VarintType:
			b.Seq = x
		case num == pbwire.BatchSnapshots && typ == protowire.BytesType:
			b.Snapshots = append(b.Snapshots, Snapshot{})
			if err := d.snapshot(&b.Snapshots[len(b.Snapshots)-1], v); err != nil {
				return err
			}
		}
	}
	return nil
}

func (d *decoder) snapshot(s *Snapshot, data []byte) error {
	for len(data) > 0 {
		num, typ, v, x, n, err := pbwire.Next(data)
		if err != nil {
			return err
		}
		data = data[n:]
		switch {
		case num == pbwire.SnapshotHostID && typ == protowire.BytesType:
			if s.HostID, err = pbwire.String(num, v); err != nil {
				return fmt.Errorf("host id: %w", err)
			}
		case num == pbwire.SnapshotTimestamp && typ == protowire.VarintType:
			s.Timestamp = int64(x)
		case num == pbwire.SnapshotTags && typ == protowire.BytesType:
			k, val, err := pbwire.Entry(v)
			if err != nil {
				return fmt.Errorf("tag: %w", err)
			}
			if s.Tags == nil {
				s.Tags = map[string]string{}
			}
			s.Tags[k] = val
		case num == pbwire.SnapshotMetrics && typ == protowire.BytesType:
			if s.Metrics == nil {
				s.Metrics = make([]Metric, 0, 64)
			}
			s.Metrics = append(s.Metrics, Metric{})
			if err := d.metric(&s.Metrics[len(s.Metrics)-1], v); err != nil {
				return err
			}
		}
	}
	return nil
}

// metric decodes one Metric, from the cache when its bytes without the
// value are known.
func (d *decoder) metric(m *Metric, data []byte) error {
	// The common encoding: the value once, as fixed64, and every other
	// field a known one. Its key is the bytes around the value.
	at, tagLen, values, plain := -1, 0, 0, true
	for p := data; len(p) > 0 && plain; {
		num, typ, _, _, n, err := pbwire.Next(p)
		if err != nil {
			return err
		}
		switch {
		case num == pbwire.MetricValue && typ == protowire.Fixed64Type:
			at, tagLen = len(data)-len(p), n-8
			values++
		case num == pbwire.MetricName, num == pbwire.MetricUnit, num == pbwire.MetricLabels:
			plain = typ == protowire.BytesType
		case num == pbwire.MetricPriority:
			plain = typ == protowire.VarintType
		default:
			plain = false
		}
		p = p[n:]
	}
	if plain && values <= 1 {
		if at >= 0 {
			v, _ := protowire.ConsumeFixed64(data[at+tagLen:])
			m.Value = math.Float64frombits(v)
			d.key = append(append(d.key[:0], data[:at]...), data[at+tagLen+8:]...)
		} else {
			d.key = append(d.key[:0], data...)
		}
		if info := metricCache.m[string(d.key)]; info != nil {
			m.Name, m.Unit, m.known = info.name, info.unit, info
			return nil
		}
		m.wireKey = string(d.key)
	}
	for len(data) > 0 {
		num, typ, v, x, n, err := pbwire.Next(data)
		if err != nil {
			return err
		}
		data = data[n:]
		switch {
		case num == pbwire.MetricName && typ == protowire.BytesType:
			if m.Name, err = pbwire.String(num, v); err != nil {
				return fmt.Errorf("metric name: %w", err)
			}
		case num == pbwire.MetricValue && typ == protowire.Fixed64Type:
			m.Value = math.Float64frombits(x)
		case num == pbwire.MetricUnit && typ == protowire.BytesType:
			if m.Unit, err = pbwire.String(num, v); err != nil {
				return fmt.Errorf("metric unit: %w", err)
			}
		case num == pbwire.MetricLabels && typ == protowire.BytesType:
			k, val, err := pbwire.Entry(v)
			if err != nil {
				return fmt.Errorf("metric label: %w", err)
			}
			m.Labels = append(m.Labels, Pair{k, val})
		}
	}
	return nil
}

// seriesKey is storage.SeriesKey of name and labels (the last of a
// repeated key wins), with its checks and its error messages, without a
// map.
func seriesKey(name string, labels []Pair) (string, error) {
	if err := storage.ValidateMetricName(name); err != nil {
		return "", err
	}
	if len(labels) == 0 {
		return name, nil
	}
	// Sort by key, stably, then keep the last of each key.
	sorted := slices.Clone(labels)
	slices.SortStableFunc(sorted, func(a, b Pair) int { return strings.Compare(a.Key, b.Key) })
	uniq := sorted[:0]
	for i, p := range sorted {
		if i+1 < len(sorted) && sorted[i+1].Key == p.Key {
			continue
		}
		uniq = append(uniq, p)
	}
	if len(uniq) > storage.MaxLabels {
		return "", fmt.Errorf("%w: metric %q has %d labels, the limit is %d", storage.ErrInvalid, name, len(uniq), storage.MaxLabels)
	}
	size := len(name) + 2
	for _, p := range uniq {
		if err := storage.ValidateLabelName(p.Key); err != nil {
			return "", fmt.Errorf("metric %q: %w", name, err)
		}
		if err := storage.ValidateLabelValue(p.Value); err != nil {
			return "", fmt.Errorf("metric %q label %q: %w", name, p.Key, err)
		}
		size += len(p.Key) + len(p.Value) + 2
	}
	var b strings.Builder
	b.Grow(size)
	b.WriteString(name)
	b.WriteByte('{')
	for i, p := range uniq {
		if i > 0 {
			b.WriteByte(',')
		}
		b.WriteString(p.Key)
		b.WriteByte('=')
		b.WriteString(p.Value)
	}
	b.WriteByte('}')
	return b.String(), nil
}

// Request is an IngestRequest read by the broker's own decoder: a Hello,
// a Batch, or neither. It satisfies the legacy protobuf message interface
// with an Unmarshal method, which gRPC's codec calls with the message's
// bytes (service.Ingest receives it with RecvMsg).
type Request struct {
	Hello *monitorpb.Hello
	Batch *Batch
}

func (r *Request) Reset() { *r = Request{} }
func (r *Request) String() string {
	return fmt.Sprintf("ingest.Request{hello: %v, batch: %v}", r.Hello != nil, r.Batch != nil)
}
func (r *Request) ProtoMessage() {}

// BatchSeq is the batch's sequence number; false for a request without a
// batch (broker/internal/authz checks host ids through it).
func (r *Request) BatchSeq() (uint64, bool) {
	if r.Batch == nil {
		return 0, false
	}
	return r.Batch.Seq, true
}

// SnapshotHosts yields each snapshot's index and host id.
func (r *Request) SnapshotHosts() iter.Seq2[int, string] {
	return func(yield func(int, string) bool) {
		if r.Batch == nil {
			return
		}
		for i := range r.Batch.Snapshots {
			if !yield(i, r.Batch.Snapshots[i].HostID) {
				return
			}
		}
	}
}

// Unmarshal decodes an IngestRequest (oneof kind: the last one wins; a
// message field repeated is merged, as protobuf does).
func (r *Request) Unmarshal(data []byte) error {
	var batches [][]byte
	for len(data) > 0 {
		num, typ, v, _, n, err := pbwire.Next(data)
		if err != nil {
			return fmt.Errorf("decode ingest request: %w", err)
		}
		data = data[n:]
		if typ != protowire.BytesType {
			continue
		}
		switch num {
		case pbwire.IngestRequestHello:
			if r.Hello == nil {
				r.Hello = &monitorpb.Hello{}
			}
			if err := (proto.UnmarshalOptions{Merge: true}).Unmarshal(v, r.Hello); err != nil {
				return err
			}
			batches = nil
		case pbwire.IngestRequestBatch:
			r.Hello = nil
			batches = append(batches, v)
		}
	}
	if len(batches) == 0 {
		return nil
	}
	if len(batches) == 1 {
		b, err := DecodeBatch(batches[0])
		if err != nil {
			return err
		}
		r.Batch = b
		return nil
	}
	// Merged: the concatenation of the occurrences is their merge.
	b, err := DecodeBatch(slices.Concat(batches...))
	if err != nil {
		return err
	}
	r.Batch = b
	return nil
}
