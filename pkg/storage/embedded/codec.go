package embedded

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"

	"github.com/monitorhq/monitor/pkg/storage"
)

// Snapshot value encoding, format version 1 (all varints are Go's
// encoding/binary varints):
//
//	byte     version (1)
//	uvarint  tag count, then per tag: uvarint len, name; uvarint len, value
//	uvarint  sample count, then per sample, sorted by series:
//	           uvarint len, series; uvarint len, unit; byte kind; value
//	           kind 0: float64 bits, 8 bytes little-endian
//	           kind 1: zigzag varint, for integral values with |v| < 2^53
//	                   (not -0): counters and byte counts, 1-8 bytes
//
// The host id and timestamp are the bucket name and key, not repeated here.
// A decoder refuses a wrong version, a length past the end, an unknown
// kind and trailing bytes with an error.

const (
	formatVersion = 1
	kindFloat     = 0
	kindInt       = 1
	maxExactInt   = 1 << 53
)

var errCorrupt = errors.New("corrupt snapshot value")

// sampleOrder returns the indexes of samples sorted by series with a
// repeated series keeping its last occurrence, or nil when samples are
// already strictly sorted (the agent's usual order). buf is reused.
func sampleOrder(samples []storage.Sample, buf []int) []int {
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

// appendSnapshot appends the encoding of s; order is from sampleOrder.
func appendSnapshot(b []byte, s *storage.Snapshot, order []int) []byte {
	b = append(b, formatVersion)
	b = binary.AppendUvarint(b, uint64(len(s.Tags)))
	for k, v := range s.Tags {
		b = appendString(b, k)
		b = appendString(b, v)
	}
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

func appendString(b []byte, s string) []byte {
	b = binary.AppendUvarint(b, uint64(len(s)))
	return append(b, s...)
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

// decoder decodes snapshot values, sharing one string per distinct series,
// unit and tag across the snapshots of a read: a range of 720 snapshots
// allocates each series name once, not 720 times.
type decoder struct {
	strs    map[string]string
	scratch []storage.Sample
}

func newDecoder() *decoder { return &decoder{strs: make(map[string]string, 64)} }

func (d *decoder) intern(b []byte) string {
	if s, ok := d.strs[string(b)]; ok { // no allocation for the lookup
		return s
	}
	s := string(b)
	d.strs[s] = s
	return s
}

// reader walks an encoded value; the first error sticks.
type reader struct {
	b   []byte
	err error
}

func (r *reader) fail(what string) {
	if r.err == nil {
		r.err = fmt.Errorf("%w: %s", errCorrupt, what)
	}
}

func (r *reader) byte() byte {
	if r.err != nil {
		return 0
	}
	if len(r.b) == 0 {
		r.fail("truncated")
		return 0
	}
	c := r.b[0]
	r.b = r.b[1:]
	return c
}

func (r *reader) uvarint() uint64 {
	if r.err != nil {
		return 0
	}
	v, n := binary.Uvarint(r.b)
	if n <= 0 {
		r.fail("bad varint")
		return 0
	}
	r.b = r.b[n:]
	return v
}

func (r *reader) bytes() []byte {
	n := r.uvarint()
	if r.err != nil {
		return nil
	}
	if n > uint64(len(r.b)) {
		r.fail("length past the end")
		return nil
	}
	out := r.b[:n]
	r.b = r.b[n:]
	return out
}

// count reads an element count and checks it against the bytes left, each
// element taking at least min bytes, so garbage cannot make us allocate.
func (r *reader) count(min int) int {
	n := r.uvarint()
	if r.err != nil {
		return 0
	}
	if n > uint64(len(r.b)/min) {
		r.fail("count past the end")
		return 0
	}
	return int(n)
}

// decode decodes a value into s's Tags and Samples (those m selects).
// Strings are interned in d; nothing refers to data after it returns.
func (d *decoder) decode(data []byte, m *storage.Matcher, s *storage.Snapshot) error {
	r := reader{b: data}
	if v := r.byte(); r.err == nil && v != formatVersion {
		return fmt.Errorf("%w: format version %d, want %d", errCorrupt, v, formatVersion)
	}
	if n := r.count(2); n > 0 {
		s.Tags = make(map[string]string, n)
		for i := 0; i < n && r.err == nil; i++ {
			k := r.bytes()
			v := r.bytes()
			if r.err == nil {
				s.Tags[d.intern(k)] = d.intern(v)
			}
		}
	}
	n := r.count(4)
	d.scratch = d.scratch[:0]
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
			x, k := binary.Varint(r.b)
			if k <= 0 {
				r.fail("bad integer")
				break
			}
			r.b = r.b[k:]
			v = float64(x)
		default:
			r.fail(fmt.Sprintf("unknown value kind %d", kind))
		}
		if r.err != nil {
			break
		}
		name := d.intern(series)
		if m != nil && !m.Match(name) {
			continue
		}
		d.scratch = append(d.scratch, storage.Sample{Series: name, Value: v, Unit: d.intern(unit)})
	}
	if r.err != nil {
		return r.err
	}
	if len(r.b) != 0 {
		return fmt.Errorf("%w: %d trailing bytes", errCorrupt, len(r.b))
	}
	if len(d.scratch) > 0 {
		s.Samples = slices.Clone(d.scratch)
	}
	return nil
}
