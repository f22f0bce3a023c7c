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
// resolution and bucket start), shared by the backends. Version 2, what
// AppendRollupBucket writes:
//
//	byte     format version (2)
//	uvarint  series count, then per series, sorted by series:
//	           uvarint  bytes the key shares with the previous series' key
//	                    (front coding: cpu.core_usage_percent{cpu=cpu1}
//	                    after …{cpu=cpu0} costs 3 bytes, not 34)
//	           uvarint len, the rest of the key
//	           uvarint 0 when the unit is the previous series', else
//	                    its length + 1, then the unit
//	           min, max, sum, last: AppendValue's form (a varint for
//	                    integers and short decimals, else the float64)
//	           uvarint count; uvarint LastTS - bucket start
//
// Version 1 (read, never written since): per series uvarint len, series;
// uvarint len, unit; min, max, sum, last as float64 little-endian, 8
// bytes each; uvarint count; uvarint LastTS - bucket start. About 3.3 KB
// for the load generator's 50 series against about 1.5 KB in version 2.
//
// The bucket start is not stored: it is the key's.
const (
	rollupBucketVersion1 = 1
	rollupBucketVersion  = 2
)

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
	prev, prevUnit := "", ""
	for i := range aggs {
		a := &aggs[i]
		shared := 0
		for shared < len(prev) && shared < len(a.Series) && prev[shared] == a.Series[shared] {
			shared++
		}
		b = binary.AppendUvarint(b, uint64(shared))
		b = binary.AppendUvarint(b, uint64(len(a.Series)-shared))
		b = append(b, a.Series[shared:]...)
		if i > 0 && a.Unit == prevUnit {
			b = append(b, 0)
		} else {
			b = binary.AppendUvarint(b, uint64(len(a.Unit))+1)
			b = append(b, a.Unit...)
		}
		for _, v := range [4]float64{a.Min, a.Max, a.Sum, a.Last} {
			b = AppendValue(b, v)
		}
		b = binary.AppendUvarint(b, uint64(a.Count))
		b = binary.AppendUvarint(b, uint64(a.LastTS-start))
		prev, prevUnit = a.Series, a.Unit
	}
	return b
}

// DecodeRollupBucket decodes a bucket (either version) starting at start,
// appending its aggregates (sorted by series) to dst. Strings are copied
// out of data; with a non-nil strs, each distinct series and unit is
// allocated once across calls (a range of 1440 buckets shares 50 names,
// not 72,000).
func DecodeRollupBucket(dst []SeriesAggregate, data []byte, start int64, strs map[string]string) ([]SeriesAggregate, error) {
	fail := func(what string) ([]SeriesAggregate, error) {
		return dst, fmt.Errorf("%w: %s", ErrCorruptRollup, what)
	}
	if len(data) == 0 {
		return fail("empty")
	}
	version := data[0]
	if version != rollupBucketVersion1 && version != rollupBucketVersion {
		return fail(fmt.Sprintf("format version %d, want %d or %d", version, rollupBucketVersion1, rollupBucketVersion))
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
	intern := func(b []byte) string {
		if strs == nil {
			return string(b)
		}
		if s, ok := strs[string(b)]; ok { // no allocation for the lookup
			return s
		}
		s := string(b)
		strs[s] = s
		return s
	}
	str := func() (string, bool) {
		n, ok := uvarint()
		if !ok || n > uint64(len(data)) {
			return "", false
		}
		b := data[:n]
		data = data[n:]
		return intern(b), true
	}
	n, ok := uvarint()
	// Each series takes at least 1+1+32+1+1 bytes in version 1, 1+1+1+8+1+1
	// in version 2.
	minSize := uint64(36)
	if version == rollupBucketVersion {
		minSize = 13
	}
	if !ok || n > uint64(len(data))/minSize {
		return fail("bad series count")
	}
	dst = slices.Grow(dst, int(n))
	var key []byte // version 2: the previous key, rebuilt
	prevUnit := ""
	for i := uint64(0); i < n; i++ {
		var a SeriesAggregate
		if version == rollupBucketVersion1 {
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
		} else {
			shared, ok1 := uvarint()
			rest, ok2 := uvarint()
			if !ok1 || !ok2 || shared > uint64(len(key)) || rest > uint64(len(data)) {
				return fail("bad series name")
			}
			key = append(key[:shared], data[:rest]...)
			data = data[rest:]
			a.Series = intern(key)
			u, ok3 := uvarint()
			switch {
			case !ok3 || (u == 0 && i == 0):
				return fail("bad unit of " + a.Series)
			case u == 0:
				a.Unit = prevUnit
			case u-1 > uint64(len(data)):
				return fail("bad unit of " + a.Series)
			default:
				a.Unit = intern(data[:u-1])
				data = data[u-1:]
			}
			prevUnit = a.Unit
			for _, f := range []*float64{&a.Min, &a.Max, &a.Sum, &a.Last} {
				v, m := DecodeValue(data)
				if m == 0 {
					return fail("truncated aggregate of " + a.Series)
				}
				*f = v
				data = data[m:]
			}
		}
		if i > 0 && a.Series <= dst[len(dst)-1].Series {
			return fail("series not sorted")
		}
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
