package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"slices"
	"strings"
)

// The encoding of one rollup bucket (every series' aggregate of one host,
// resolution and bucket start), shared by the backends:
//
//	byte     format version (1)
//	uvarint  series count, then per series, sorted by series:
//	           uvarint len, series; uvarint len, unit;
//	           min, max, sum, last: float64 little-endian, 8 bytes each;
//	           uvarint count; uvarint LastTS - bucket start
//
// The bucket start is not stored: it is the key's.
const rollupBucketVersion = 1

// ErrCorruptRollup marks a rollup bucket that does not decode.
var ErrCorruptRollup = errors.New("corrupt rollup bucket")

// SeriesAggregate is one series' aggregate in a bucket.
type SeriesAggregate struct {
	Series string
	Aggregate
}

// AppendRollupBucket appends the encoding of a bucket starting at start;
// aggs must be sorted by series, each LastTS within the bucket.
func AppendRollupBucket(b []byte, start int64, aggs []SeriesAggregate) []byte {
	b = append(b, rollupBucketVersion)
	b = binary.AppendUvarint(b, uint64(len(aggs)))
	for i := range aggs {
		a := &aggs[i]
		b = binary.AppendUvarint(b, uint64(len(a.Series)))
		b = append(b, a.Series...)
		b = binary.AppendUvarint(b, uint64(len(a.Unit)))
		b = append(b, a.Unit...)
		for _, v := range [4]float64{a.Min, a.Max, a.Sum, a.Last} {
			b = binary.LittleEndian.AppendUint64(b, math.Float64bits(v))
		}
		b = binary.AppendUvarint(b, uint64(a.Count))
		b = binary.AppendUvarint(b, uint64(a.LastTS-start))
	}
	return b
}

// DecodeRollupBucket decodes a bucket starting at start, appending its
// aggregates (sorted by series) to dst. Strings are copied out of data;
// with a non-nil strs, each distinct series and unit is allocated once
// across calls (a range of 1440 buckets shares 50 names, not 72,000).
func DecodeRollupBucket(dst []SeriesAggregate, data []byte, start int64, strs map[string]string) ([]SeriesAggregate, error) {
	fail := func(what string) ([]SeriesAggregate, error) {
		return dst, fmt.Errorf("%w: %s", ErrCorruptRollup, what)
	}
	if len(data) == 0 || data[0] != rollupBucketVersion {
		if len(data) == 0 {
			return fail("empty")
		}
		return fail(fmt.Sprintf("format version %d, want %d", data[0], rollupBucketVersion))
	}
	data = data[1:]
	uvarint := func() (uint64, bool) {
		v, n := binary.Uvarint(data)
		if n <= 0 {
			return 0, false
		}
		data = data[n:]
		return v, true
	}
	str := func() (string, bool) {
		n, ok := uvarint()
		if !ok || n > uint64(len(data)) {
			return "", false
		}
		b := data[:n]
		data = data[n:]
		if strs == nil {
			return string(b), true
		}
		if s, ok := strs[string(b)]; ok { // no allocation for the lookup
			return s, true
		}
		s := string(b)
		strs[s] = s
		return s, true
	}
	n, ok := uvarint()
	// Each series takes at least 1+1+32+1+1 bytes.
	if !ok || n > uint64(len(data)/36) {
		return fail("bad series count")
	}
	dst = slices.Grow(dst, int(n))
	for i := uint64(0); i < n; i++ {
		var a SeriesAggregate
		var ok1, ok2 bool
		if a.Series, ok1 = str(); !ok1 {
			return fail("bad series name")
		}
		if a.Unit, ok2 = str(); !ok2 || len(data) < 32 {
			return fail("truncated aggregate of " + a.Series)
		}
		a.Min = math.Float64frombits(binary.LittleEndian.Uint64(data))
		a.Max = math.Float64frombits(binary.LittleEndian.Uint64(data[8:]))
		a.Sum = math.Float64frombits(binary.LittleEndian.Uint64(data[16:]))
		a.Last = math.Float64frombits(binary.LittleEndian.Uint64(data[24:]))
		data = data[32:]
		count, ok3 := uvarint()
		off, ok4 := uvarint()
		// A bucket holds at most an hour of seconds; far larger numbers
		// are corruption, not data.
		if !ok3 || !ok4 || count > math.MaxInt32 || off > math.MaxInt32 {
			return fail("bad count of " + a.Series)
		}
		a.Count, a.LastTS = int64(count), start+int64(off)
		dst = append(dst, a)
	}
	if len(data) != 0 {
		return fail(fmt.Sprintf("%d trailing bytes", len(data)))
	}
	return dst, nil
}

// MergeRollupBucket merges add into the sorted aggregates of a bucket and
// returns them sorted; add maps series to the new samples' aggregate.
func MergeRollupBucket(old []SeriesAggregate, add map[string]*Aggregate) []SeriesAggregate {
	out := make([]SeriesAggregate, 0, len(old)+len(add))
	for _, o := range old {
		if a, ok := add[o.Series]; ok {
			o.Merge(*a)
		}
		out = append(out, o)
	}
	n := len(out)
	for series, a := range add {
		if _, found := slices.BinarySearchFunc(out[:n], series, func(x SeriesAggregate, s string) int { return strings.Compare(x.Series, s) }); !found {
			out = append(out, SeriesAggregate{Series: series, Aggregate: *a})
		}
	}
	if len(out) > n {
		slices.SortFunc(out, func(x, y SeriesAggregate) int { return strings.Compare(x.Series, y.Series) })
	}
	return out
}
