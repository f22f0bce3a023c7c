package chunk

import (
	"encoding/binary"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/monitorhq/monitor/pkg/storage"
)

// A record is one snapshot, uncompressed (the host id and timestamp are
// the record's key, not repeated in it); all varints are Go's
// encoding/binary varints:
//
//	byte     record version (1)
//	uvarint  tag count, then per tag: string name, string value
//	uvarint  sample count, then per sample, sorted by series:
//	           string series, string unit, byte kind, value
//	           kind 0: float64 bits, 8 bytes little-endian
//	           kind 1: zigzag varint, for integral values with |v| < 2^53
//	                   (not -0): counters and byte counts, 1-8 bytes
//
// It is the embedded backend's snapshot value of format 1, unchanged, so
// files written before chunks read as they are.

// RecordVersion is the record format version.
const RecordVersion = 1

const (
	kindFloat   = 0
	kindInt     = 1
	maxExactInt = 1 << 53
)

// SampleOrder returns the indexes of samples sorted by series with a
// repeated series keeping its last occurrence, or nil when samples are
// already strictly sorted (the agent's usual order). buf is reused.
func SampleOrder(samples []storage.Sample, buf []int) []int {
	sorted := true
	for i := 1; i < len(samples); i++ {
		if samples[i-1].Series >= samples[i].Series {
			sorted = false
			break
		}
	}
	if sorted {
		return nil
	}
	buf = buf[:0]
	for i := range samples {
		buf = append(buf, i)
	}
	slices.SortStableFunc(buf, func(a, b int) int { return strings.Compare(samples[a].Series, samples[b].Series) })
	out := buf[:0]
	for i := 0; i < len(buf); i++ {
		if i+1 < len(buf) && samples[buf[i]].Series == samples[buf[i+1]].Series {
			continue // a later one of the same series follows
		}
		out = append(out, buf[i])
	}
	return out
}

// AppendRecord appends the record of s to b.
func AppendRecord(b []byte, s *storage.Snapshot) []byte {
	b = append(b, RecordVersion)
	b = binary.AppendUvarint(b, uint64(len(s.Tags)))
	for k, v := range s.Tags {
		b = appendString(b, k)
		b = appendString(b, v)
	}
	order := SampleOrder(s.Samples, nil)
	if order == nil {
		b = binary.AppendUvarint(b, uint64(len(s.Samples)))
		for i := range s.Samples {
			b = appendSample(b, &s.Samples[i])
		}
		return b
	}
	b = binary.AppendUvarint(b, uint64(len(order)))
	for _, i := range order {
		b = appendSample(b, &s.Samples[i])
	}
	return b
}

func appendSample(b []byte, smp *storage.Sample) []byte {
	b = appendString(b, smp.Series)
	b = appendString(b, smp.Unit)
	v := smp.Value
	if v == math.Trunc(v) && math.Abs(v) < maxExactInt && !(v == 0 && math.Signbit(v)) {
		b = append(b, kindInt)
		return binary.AppendVarint(b, int64(v))
	}
	b = append(b, kindFloat)
	return binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
}

// DecodeRecord decodes a record of either version into s.Tags and
// s.Samples (those m selects, nil when none); nothing refers to data after
// it returns. Records with the same tags may share one map: read-only. A version 2 record needs its schema (AddSchema), else the
// error is ErrNoSchema.
func (d *Decoder) DecodeRecord(data []byte, m *storage.Matcher, s *storage.Snapshot) error {
	r := byteReader{b: data}
	switch v := r.byte(); {
	case r.err != nil:
		return r.err
	case v == RecordVersionSchema:
		return d.decodeSchemaRecord(&r, m, s)
	case v != RecordVersion:
		return corrupt("record version %d, want %d or %d", v, RecordVersion, RecordVersionSchema)
	}
	s.Tags = d.readTags(&r)
	n := r.count(4)
	d.recs = d.recs[:0]
	var prev string
	for i := 0; i < n && r.err == nil; i++ {
		series := r.bytes()
		unit := r.bytes()
		kind := r.byte()
		var v float64
		switch kind {
		case kindFloat:
			if len(r.b) < 8 {
				r.fail("truncated float")
				break
			}
			v = math.Float64frombits(binary.LittleEndian.Uint64(r.b))
			r.b = r.b[8:]
		case kindInt:
			v = float64(r.varint())
		default:
			r.fail(fmt.Sprintf("unknown value kind %d", kind))
		}
		if r.err != nil {
			break
		}
		name := d.intern(series)
		if i > 0 && name <= prev {
			return corrupt("record samples not sorted")
		}
		prev = name
		if m != nil && !m.Match(name) {
			continue
		}
		d.recs = append(d.recs, storage.Sample{Series: name, Value: v, Unit: d.intern(unit)})
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return corrupt("record has %d trailing bytes", len(r.b))
	}
	if len(d.recs) > 0 {
		s.Samples = d.keep(d.recs)
	}
	return nil
}

// keep returns a copy of samples in the Decoder's record arena: the
// records of one range share a few large allocations instead of one each
// (blocks start small, for a Decoder that decodes one record, and double).
// A block is never written again once handed out, so the copies stay the
// caller's.
func (d *Decoder) keep(samples []storage.Sample) []storage.Sample {
	n := len(samples)
	if cap(d.arena)-len(d.arena) < n {
		d.block = min(max(2*d.block, 4*n), 4096)
		d.arena = make([]storage.Sample, 0, max(d.block, n))
	}
	start := len(d.arena)
	d.arena = append(d.arena, samples...)
	return d.arena[start:len(d.arena):len(d.arena)]
}

// readTags reads a record's tags. A record with the same tags as the one
// the Decoder read before shares its map (records of a host mostly have
// the same tags): the maps are read-only.
func (d *Decoder) readTags(r *byteReader) map[string]string {
	n := r.count(2)
	if n == 0 {
		return nil
	}
	d.tagBuf = d.tagBuf[:0]
	for i := 0; i < n && r.err == nil; i++ {
		k := r.bytes()
		v := r.bytes()
		if r.err == nil {
			d.tagBuf = append(d.tagBuf, d.intern(k), d.intern(v))
		}
	}
	if r.err != nil {
		return nil
	}
	if m := d.lastTags; len(m) == n {
		same := true
		for i := 0; i < len(d.tagBuf) && same; i += 2 {
			v, ok := m[d.tagBuf[i]]
			same = ok && v == d.tagBuf[i+1]
		}
		if same {
			return m
		}
	}
	m := make(map[string]string, n)
	for i := 0; i < len(d.tagBuf); i += 2 {
		m[d.tagBuf[i]] = d.tagBuf[i+1]
	}
	d.lastTags = m
	return m
}
