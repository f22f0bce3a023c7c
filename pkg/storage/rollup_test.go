package storage

import (
	"encoding/binary"
	"errors"
	"fmt"
	"math"
	"reflect"
	"testing"
	"unsafe"
)

func TestBucketStart(t *testing.T) {
	for _, tc := range []struct {
		res  Resolution
		ts   int64
		want int64
	}{
		{Minute, 1755100754, 1755100740},
		{Minute, 1755100740, 1755100740},
		{Hour, 1755100754, 1755097200},
		{Hour, 3599, 0},
		{Minute, -1, -60},
	} {
		if got := tc.res.BucketStart(tc.ts); got != tc.want {
			t.Errorf("%s.BucketStart(%d) = %d, want %d", tc.res, tc.ts, got, tc.want)
		}
	}
}

func TestAggregate(t *testing.T) {
	var a Aggregate
	a.Add(20, 5, "ms")
	a.Add(10, 1, "s") // older: Last stays
	a.Add(30, -2, "ms")
	want := Aggregate{Min: -2, Max: 5, Sum: 4, Count: 3, Last: -2, LastTS: 30, Unit: "ms"}
	if a != want {
		t.Fatalf("after three samples: %+v, want %+v", a, want)
	}
	if a.Avg() != 4.0/3 {
		t.Fatalf("Avg = %v", a.Avg())
	}
	b := Aggregate{Min: -10, Max: 1, Sum: 1, Count: 2, Last: 7, LastTS: 25, Unit: "s"}
	a.Merge(b)
	if a.Min != -10 || a.Count != 5 || a.Sum != 5 || a.Last != -2 || a.LastTS != 30 {
		t.Fatalf("merge of older data moved Last or missed counts: %+v", a)
	}
	var empty Aggregate
	empty.Merge(Aggregate{})
	if empty != (Aggregate{}) || empty.Avg() != 0 {
		t.Fatalf("empty merge: %+v", empty)
	}
	empty.Merge(b)
	if empty != b {
		t.Fatalf("merge into empty = %+v, want %+v", empty, b)
	}
}

func TestLastSamples(t *testing.T) {
	sorted := []Sample{{Series: "a"}, {Series: "b"}}
	if got := LastSamples(sorted); &got[0] != &sorted[0] {
		t.Fatal("sorted samples were copied")
	}
	unsortedUnique := []Sample{{Series: "b"}, {Series: "a"}}
	if got := LastSamples(unsortedUnique); &got[0] != &unsortedUnique[0] {
		t.Fatal("unique samples were copied")
	}
	dup := []Sample{{Series: "b", Value: 1}, {Series: "a", Value: 2}, {Series: "b", Value: 3}}
	if got := LastSamples(dup); !reflect.DeepEqual(got, []Sample{{Series: "a", Value: 2}, {Series: "b", Value: 3}}) {
		t.Fatalf("LastSamples = %v", got)
	}
}

func TestRollupBucketCodec(t *testing.T) {
	start := int64(1755097200)
	aggs := []SeriesAggregate{
		{"cpu.usage_percent", Aggregate{Min: 0.5, Max: 99, Sum: 1234.25, Count: 720, Last: 12, LastTS: start + 3595, Unit: "%"}},
		{"edge.neg_zero", Aggregate{Min: math.Copysign(0, -1), Max: math.MaxFloat64, Sum: math.SmallestNonzeroFloat64, Count: 1, Last: -1e-300, LastTS: start}},
		{"temp{sensor=Küche 1}", Aggregate{Min: -3, Max: -3, Sum: -3, Count: 1, Last: -3, LastTS: start + 1, Unit: "°C"}},
	}
	data := AppendRollupBucket(nil, start, aggs)
	strs := map[string]string{}
	got, err := DecodeRollupBucket(nil, data, start, strs)
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != len(aggs) {
		t.Fatalf("decoded %d, want %d", len(got), len(aggs))
	}
	for i := range aggs {
		g, w := got[i], aggs[i]
		if g.Series != w.Series || g.Unit != w.Unit || g.Count != w.Count || g.LastTS != w.LastTS ||
			math.Float64bits(g.Min) != math.Float64bits(w.Min) || math.Float64bits(g.Max) != math.Float64bits(w.Max) ||
			math.Float64bits(g.Sum) != math.Float64bits(w.Sum) || math.Float64bits(g.Last) != math.Float64bits(w.Last) {
			t.Fatalf("series %d = %+v, want %+v", i, g, w)
		}
	}
	// Interned: a second decode shares the strings.
	again, _ := DecodeRollupBucket(nil, data, start, strs)
	if unsafe.StringData(again[0].Series) != unsafe.StringData(got[0].Series) {
		t.Fatal("series names not interned across decodes")
	}
	for _, bad := range [][]byte{nil, {2}, data[:len(data)-1], append(append([]byte{}, data...), 0)} {
		if _, err := DecodeRollupBucket(nil, bad, start, nil); !errors.Is(err, ErrCorruptRollup) {
			t.Errorf("decode of %d bytes = %v, want ErrCorruptRollup", len(bad), err)
		}
	}
}

func TestMergeRollupBucket(t *testing.T) {
	old := []SeriesAggregate{
		{"a", Aggregate{Min: 1, Max: 1, Sum: 1, Count: 1, Last: 1, LastTS: 10}},
		{"c", Aggregate{Min: 3, Max: 3, Sum: 3, Count: 1, Last: 3, LastTS: 10}},
	}
	add := map[string]*Aggregate{
		"b": {Min: 2, Max: 2, Sum: 2, Count: 1, Last: 2, LastTS: 20},
		"c": {Min: 5, Max: 5, Sum: 5, Count: 1, Last: 5, LastTS: 20},
	}
	got := MergeRollupBucket(old, add)
	want := []SeriesAggregate{
		{"a", Aggregate{Min: 1, Max: 1, Sum: 1, Count: 1, Last: 1, LastTS: 10}},
		{"b", Aggregate{Min: 2, Max: 2, Sum: 2, Count: 1, Last: 2, LastTS: 20}},
		{"c", Aggregate{Min: 3, Max: 5, Sum: 8, Count: 2, Last: 5, LastTS: 20}},
	}
	if !reflect.DeepEqual(got, want) {
		t.Fatalf("merge = %+v, want %+v", got, want)
	}
	if old[1].Count != 1 {
		t.Fatal("merge changed its input")
	}
}

// appendRollupBucketV1 is the version 1 encoder, as it was, for the
// buckets stores wrote before version 2.
func appendRollupBucketV1(b []byte, start int64, aggs []SeriesAggregate) []byte {
	b = append(b, rollupBucketVersion1)
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

// TestRollupBucketVersions: version 2 round-trips every value bit for bit
// (front-coded keys, repeated units, decimals, specials), version 1
// buckets decode to the same aggregates, and version 2 is less than half
// the size on the load generator's kind of series.
func TestRollupBucketVersions(t *testing.T) {
	start := int64(1755097200)
	var aggs []SeriesAggregate
	specials := []float64{0, math.Copysign(0, -1), math.NaN(), math.Inf(1), math.Inf(-1), 1e300, -1e-300, 47.83, 0.125, 1 << 60, 123456.789}
	for i := 0; i < 40; i++ {
		unit := "%"
		if i%7 == 3 {
			unit = "bytes"
		}
		v := float64(i*37%1000) / 100
		aggs = append(aggs, SeriesAggregate{fmt.Sprintf("cpu.core_usage_percent{cpu=cpu%02d}", i), Aggregate{
			Min: v, Max: v + 1.5, Sum: v * 12.37, Count: int64(i + 1), Last: specials[i%len(specials)], LastTS: start + int64(i), Unit: unit}})
	}
	aggs = append(aggs, SeriesAggregate{"mem.used_bytes", Aggregate{Min: 1 << 30, Max: 1 << 31, Sum: 3 << 30, Count: 2, Last: 1 << 31, LastTS: start + 59, Unit: ""}},
		SeriesAggregate{"z", Aggregate{Min: math.SmallestNonzeroFloat64, Max: math.MaxFloat64, Sum: math.NaN(), Count: 1, Last: math.Copysign(0, -1), LastTS: start}})
	same := func(what string, got []SeriesAggregate) {
		t.Helper()
		if len(got) != len(aggs) {
			t.Fatalf("%s: %d aggregates, want %d", what, len(got), len(aggs))
		}
		for i := range aggs {
			g, w := got[i], aggs[i]
			if g.Series != w.Series || g.Unit != w.Unit || g.Count != w.Count || g.LastTS != w.LastTS ||
				math.Float64bits(g.Min) != math.Float64bits(w.Min) || math.Float64bits(g.Max) != math.Float64bits(w.Max) ||
				math.Float64bits(g.Sum) != math.Float64bits(w.Sum) || math.Float64bits(g.Last) != math.Float64bits(w.Last) {
				t.Fatalf("%s: series %d = %+v, want %+v", what, i, g, w)
			}
		}
	}
	v2 := AppendRollupBucket(nil, start, aggs)
	got, err := DecodeRollupBucket(nil, v2, start, map[string]string{})
	if err != nil {
		t.Fatal(err)
	}
	same("version 2", got)
	v1 := appendRollupBucketV1(nil, start, aggs)
	if got, err = DecodeRollupBucket(nil, v1, start, nil); err != nil {
		t.Fatal(err)
	}
	same("version 1", got)
	t.Logf("FIGURE %d series: version 1 %d bytes, version 2 %d bytes", len(aggs), len(v1), len(v2))
	if 2*len(v2) > len(v1) {
		t.Errorf("version 2 is %d bytes, version 1 %d: want under half", len(v2), len(v1))
	}
	for cut := 0; cut < len(v2); cut++ {
		if _, err := DecodeRollupBucket(nil, v2[:cut], start, nil); !errors.Is(err, ErrCorruptRollup) {
			t.Fatalf("version 2 cut at %d of %d: %v", cut, len(v2), err)
		}
	}
}

// FuzzDecodeRollupBucket: any input decodes or fails with
// ErrCorruptRollup, never panics, and what decodes encodes back the same.
func FuzzDecodeRollupBucket(f *testing.F) {
	f.Add(AppendRollupBucket(nil, 60, []SeriesAggregate{{"v", Aggregate{Min: 1, Max: 2, Sum: 3, Count: 2, Last: 2, LastTS: 61, Unit: "u"}}}))
	f.Add(appendRollupBucketV1(nil, 60, []SeriesAggregate{{"v", Aggregate{Min: 1, Max: 2, Sum: 3, Count: 2, Last: 2, LastTS: 61, Unit: "u"}}}))
	f.Add([]byte{1, 0})
	f.Add([]byte{1, 200, 1})
	f.Add([]byte{2, 1, 0, 1, 'v', 0})
	f.Fuzz(func(t *testing.T, data []byte) {
		got, err := DecodeRollupBucket(nil, data, 60, nil)
		if err != nil {
			if !errors.Is(err, ErrCorruptRollup) {
				t.Fatalf("error %v is not ErrCorruptRollup", err)
			}
			return
		}
		for _, a := range got {
			if a.LastTS < 60 {
				t.Fatalf("LastTS %d before the bucket start", a.LastTS)
			}
		}
		again, err := DecodeRollupBucket(nil, AppendRollupBucket(nil, 60, got), 60, nil)
		if err != nil || !reflect.DeepEqual(fixNaN(again), fixNaN(got)) {
			t.Fatalf("re-encoding changed %+v into %+v (%v)", got, again, err)
		}
	})
}

// fixNaN makes NaN fields comparable.
func fixNaN(in []SeriesAggregate) []SeriesAggregate {
	out := make([]SeriesAggregate, len(in))
	for i, a := range in {
		for _, f := range []*float64{&a.Min, &a.Max, &a.Sum, &a.Last} {
			if math.IsNaN(*f) {
				*f = 0
			}
		}
		out[i] = a
	}
	return out
}
