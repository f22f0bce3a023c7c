package chunk

import (
	"crypto/sha256"
	"encoding/binary"
	"errors"
	"fmt"
	"maps"
	"math"
	"math/rand/v2"
	"slices"
	"strings"
	"testing"

	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/storage"
)

// canonical is s as a chunk returns it: samples sorted by series, a
// repeated series keeping its last value, empty tags nil.
func canonical(s storage.Snapshot) storage.Snapshot {
	out := s
	out.Samples = slices.Clone(storage.LastSamples(s.Samples))
	slices.SortStableFunc(out.Samples, func(a, b storage.Sample) int { return strings.Compare(a.Series, b.Series) })
	if len(out.Samples) == 0 {
		out.Samples = nil
	}
	if len(out.Tags) == 0 {
		out.Tags = nil
	}
	return out
}

func diff(got, want storage.Snapshot) string {
	if got.HostID != want.HostID || got.Timestamp != want.Timestamp {
		return fmt.Sprintf("snapshot %s@%d, want %s@%d", got.HostID, got.Timestamp, want.HostID, want.Timestamp)
	}
	if len(got.Tags) != len(want.Tags) {
		return fmt.Sprintf("@%d tags %v, want %v", got.Timestamp, got.Tags, want.Tags)
	}
	for k, v := range want.Tags {
		if g, ok := got.Tags[k]; !ok || g != v {
			return fmt.Sprintf("@%d tag %q = %q, want %q", got.Timestamp, k, g, v)
		}
	}
	if len(got.Samples) != len(want.Samples) {
		return fmt.Sprintf("@%d %d samples, want %d", got.Timestamp, len(got.Samples), len(want.Samples))
	}
	for i := range want.Samples {
		g, w := got.Samples[i], want.Samples[i]
		if g.Series != w.Series || g.Unit != w.Unit || math.Float64bits(g.Value) != math.Float64bits(w.Value) {
			return fmt.Sprintf("@%d sample %d = %+v (%#x), want %+v (%#x)", got.Timestamp, i, g, math.Float64bits(g.Value), w, math.Float64bits(w.Value))
		}
	}
	return ""
}

func roundTrip(t *testing.T, snaps []storage.Snapshot) []byte {
	t.Helper()
	b, err := Encode(nil, snaps)
	if err != nil {
		t.Fatalf("Encode: %v", err)
	}
	got, err := NewDecoder().Decode(nil, b, snaps[0].HostID, math.MinInt64, math.MaxInt64, nil)
	if err != nil {
		t.Fatalf("Decode: %v", err)
	}
	if len(got) != len(snaps) {
		t.Fatalf("decoded %d snapshots, want %d", len(got), len(snaps))
	}
	for i := range snaps {
		if d := diff(got[i], canonical(snaps[i])); d != "" {
			t.Fatalf("snapshot %d: %s", i, d)
		}
	}
	first, last, n, err := Span(b)
	if err != nil || first != snaps[0].Timestamp || last != snaps[len(snaps)-1].Timestamp || n != len(snaps) {
		t.Fatalf("Span = %d, %d, %d, %v", first, last, n, err)
	}
	return b
}

var specials = []float64{
	math.NaN(), math.Float64frombits(0x7ff8000000000abc), math.Inf(1), math.Inf(-1),
	0, math.Copysign(0, -1), math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64,
	1e-9, 0.1, 1 << 53, 1<<53 + 2, -(1 << 62), 123456789.123456789,
}

// randomValue draws from the shapes metrics take.
func randomValue(r *rand.Rand, prev float64, i int) float64 {
	switch r.IntN(10) {
	case 0:
		return specials[r.IntN(len(specials))]
	case 1:
		return prev // repeated
	case 2:
		return math.Round(r.Float64()*10000) / 100 // a percentage
	case 3:
		return float64(r.Int64N(1 << 40)) // a byte count
	case 4:
		if r.IntN(4) == 0 {
			return 0 // a counter reset
		}
		return prev + float64(r.IntN(1000))
	case 5:
		return r.NormFloat64() * 1e6
	case 6:
		return float64(i) * 0.25
	default:
		return prev + math.Round(r.Float64()*100-50)/10
	}
}

func randomSnapshots(r *rand.Rand, n, series int) []storage.Snapshot {
	out := make([]storage.Snapshot, n)
	ts := r.Int64N(2_000_000_000)
	vals := make([]float64, series)
	tags := map[string]string{"env": "prod"}
	for i := range out {
		switch r.IntN(6) {
		case 0: // irregular intervals
			ts += 1 + r.Int64N(100000)
		case 1:
			ts += 1 + r.Int64N(3)
		default:
			ts += 5
		}
		if r.IntN(20) == 0 {
			tags = map[string]string{"env": fmt.Sprint(r.IntN(3))}
			if r.IntN(3) == 0 {
				tags = nil
			}
		}
		s := storage.Snapshot{HostID: "h", Timestamp: ts, Tags: tags}
		for k := 0; k < series; k++ {
			if r.IntN(15) == 0 {
				continue // a series missing from this snapshot
			}
			vals[k] = randomValue(r, vals[k], i)
			unit := "%"
			if k%3 == 0 && r.IntN(30) == 0 {
				unit = "bytes"
			}
			s.Samples = append(s.Samples, storage.Sample{Series: fmt.Sprintf("m.%d{k=%d}", k*7%series, k), Value: vals[k], Unit: unit})
		}
		if len(s.Samples) > 1 && r.IntN(10) == 0 { // a repeated series, last wins
			s.Samples = append(s.Samples, storage.Sample{Series: s.Samples[0].Series, Value: 42})
		}
		out[i] = s
	}
	return out
}

func TestRoundTripProperties(t *testing.T) {
	r := rand.New(rand.NewPCG(1, 2))
	for iter := 0; iter < 300; iter++ {
		n := 1 + r.IntN(300)
		roundTrip(t, randomSnapshots(r, n, r.IntN(12)))
	}
}

func TestRoundTripShapes(t *testing.T) {
	mk := func(n int, ts func(i int) int64, v func(i int) float64) []storage.Snapshot {
		out := make([]storage.Snapshot, n)
		for i := range out {
			out[i] = storage.Snapshot{HostID: "h", Timestamp: ts(i), Samples: []storage.Sample{{Series: "x", Value: v(i), Unit: "u"}}}
		}
		return out
	}
	every5 := func(i int) int64 { return 1_700_000_000 + int64(i)*5 }
	for _, tc := range []struct {
		name string
		snap []storage.Snapshot
	}{
		{"one snapshot", mk(1, every5, func(int) float64 { return 3.5 })},
		{"NaN", mk(10, every5, func(int) float64 { return math.NaN() })},
		{"+Inf and -Inf", mk(10, every5, func(i int) float64 { return math.Inf(1 - 2*(i%2)) })},
		{"-0", mk(10, every5, func(int) float64 { return math.Copysign(0, -1) })},
		{"repeated", mk(500, every5, func(int) float64 { return 16 << 30 })},
		{"counter with resets", mk(500, every5, func(i int) float64 { return float64((i % 97) * 1500) })},
		{"irregular intervals", mk(500, func(i int) int64 { return int64(i*i*i) + int64(i%7) }, func(i int) float64 { return float64(i) })},
		{"huge gaps", mk(4, func(i int) int64 { return []int64{math.MinInt64, -1, 0, math.MaxInt64}[i] }, func(i int) float64 { return float64(i) })},
		{"no samples", []storage.Snapshot{{HostID: "h", Timestamp: 1}, {HostID: "h", Timestamp: 2, Tags: map[string]string{"a": "b"}}}},
		{"specials mixed with decimals", mk(len(specials)*3, every5, func(i int) float64 {
			if i%3 == 0 {
				return specials[i/3]
			}
			return float64(i) / 100
		})},
		{"decimal at max scale", mk(10, every5, func(i int) float64 { return float64(i) * 1e-15 })},
	} {
		t.Run(tc.name, func(t *testing.T) { roundTrip(t, tc.snap) })
	}
}

func TestDecodeRangeAndMatcher(t *testing.T) {
	r := rand.New(rand.NewPCG(3, 4))
	snaps := randomSnapshots(r, 200, 8)
	b, err := Encode(nil, snaps)
	if err != nil {
		t.Fatal(err)
	}
	m := storage.NewMatcher([]string{"m.1", "m.5"})
	from, to := snaps[40].Timestamp, snaps[120].Timestamp
	got, err := NewDecoder().Decode(nil, b, "h", from, to, m)
	if err != nil {
		t.Fatal(err)
	}
	var want []storage.Snapshot
	for _, s := range snaps[40:121] {
		c := canonical(s)
		c.Samples = slices.DeleteFunc(slices.Clone(c.Samples), func(x storage.Sample) bool { return !m.Match(x.Series) })
		if len(c.Samples) == 0 {
			c.Samples = nil
		}
		want = append(want, c)
	}
	if len(got) != len(want) {
		t.Fatalf("%d snapshots, want %d", len(got), len(want))
	}
	for i := range want {
		if d := diff(got[i], want[i]); d != "" {
			t.Fatal(d)
		}
	}
	if got, err := NewDecoder().Decode(nil, b, "h", to+1e12, to+2e12, nil); err != nil || len(got) != 0 {
		t.Fatalf("after the chunk: %d snapshots, %v", len(got), err)
	}
}

func TestEncodeRefuses(t *testing.T) {
	if _, err := Encode(nil, nil); err == nil {
		t.Fatal("Encode(nil) succeeded")
	}
	two := []storage.Snapshot{{HostID: "h", Timestamp: 5}, {HostID: "h", Timestamp: 5}}
	if _, err := Encode(nil, two); err == nil {
		t.Fatal("Encode of a repeated timestamp succeeded")
	}
}

func TestDecodeCorrupt(t *testing.T) {
	r := rand.New(rand.NewPCG(5, 6))
	b, err := Encode(nil, randomSnapshots(r, 50, 5))
	if err != nil {
		t.Fatal(err)
	}
	d := NewDecoder()
	for cut := 0; cut < len(b); cut++ {
		if _, err := d.Decode(nil, b[:cut], "h", math.MinInt64, math.MaxInt64, nil); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("truncated at %d of %d: err %v, want ErrCorrupt", cut, len(b), err)
		}
	}
	if _, err := d.Decode(nil, append(slices.Clone(b), 0), "h", math.MinInt64, math.MaxInt64, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("trailing byte: %v", err)
	}
	bad := slices.Clone(b)
	bad[0] = 9
	if _, err := d.Decode(nil, bad, "h", math.MinInt64, math.MaxInt64, nil); !errors.Is(err, ErrCorrupt) {
		t.Fatalf("version 9: %v", err)
	}
}

func TestXORAndTimestampStreams(t *testing.T) {
	r := rand.New(rand.NewPCG(7, 8))
	for iter := 0; iter < 200; iter++ {
		n := 1 + r.IntN(500)
		vals := make([]float64, n)
		ts := make([]int64, n)
		var xe XOREncoder
		var te TimestampEncoder
		for i := range vals {
			prev := 0.0
			if i > 0 {
				prev = vals[i-1]
			}
			vals[i] = randomValue(r, prev, i)
			if r.IntN(3) == 0 {
				vals[i] = math.Float64frombits(r.Uint64())
			}
			ts[i] = int64(r.Uint64())
			if r.IntN(2) == 0 && i > 0 {
				ts[i] = ts[i-1] + 5
			}
			xe.Append(vals[i])
			te.Append(ts[i])
		}
		xd, td := NewXORDecoder(xe.Bytes()), NewTimestampDecoder(te.Bytes())
		for i := range vals {
			v, err := xd.Next()
			if err != nil || math.Float64bits(v) != math.Float64bits(vals[i]) {
				t.Fatalf("value %d = %v (%v), want %v", i, v, err, vals[i])
			}
			got, err := td.Next()
			if err != nil || got != ts[i] {
				t.Fatalf("timestamp %d = %d (%v), want %d", i, got, err, ts[i])
			}
		}
	}
}

func TestRecordRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(9, 10))
	d := NewDecoder()
	for _, s := range randomSnapshots(r, 200, 10) {
		b := AppendRecord(nil, &s)
		got := storage.Snapshot{HostID: s.HostID, Timestamp: s.Timestamp}
		if err := d.DecodeRecord(b, nil, &got); err != nil {
			t.Fatal(err)
		}
		if df := diff(got, canonical(s)); df != "" {
			t.Fatal(df)
		}
		for cut := 0; cut < len(b); cut++ {
			var x storage.Snapshot
			if err := d.DecodeRecord(b[:cut], nil, &x); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("record cut at %d: %v", cut, err)
			}
		}
	}
}

// loadgenSnapshots is an hour of one simulated host at 5 s: the catalogue
// of pkg/loadgen with its random walk (walk) or independent draws per
// snapshot (the harness's Template, !walk).
func loadgenSnapshots(tb testing.TB, n int, walk bool) []storage.Snapshot {
	tpl, err := loadgen.NewTemplate(50)
	if err != nil {
		tb.Fatal(err)
	}
	out := make([]storage.Snapshot, n)
	for i := range out {
		seed := uint64(i)
		if walk {
			seed = 7
		}
		out[i] = tpl.Snapshot("h", 1_700_000_000+int64(i)*5, seed)
		if walk && i > 0 {
			// Each series moves from its previous value by a step of the
			// size the next draw makes from its start.
			base := tpl.Snapshot("h", 0, 7)
			draw := tpl.Snapshot("h", 0, uint64(i)+100)
			for k := range out[i].Samples {
				step := (draw.Samples[k].Value - base.Samples[k].Value) / 8
				v := out[i-1].Samples[k].Value + step
				if math.Abs(v) >= 1000 {
					v = math.Round(v)
				} else {
					v = math.Round(v*100) / 100
				}
				out[i].Samples[k].Value = v
			}
		}
	}
	return out
}

func TestCompressionOnLoadgenData(t *testing.T) {
	for _, walk := range []bool{false, true} {
		snaps := loadgenSnapshots(t, 720, walk)
		b := roundTrip(t, snaps)
		perSample := float64(len(b)) / float64(720*50)
		t.Logf("walk=%v: %d bytes for 720 snapshots x 50 series: %.2f bytes/sample", walk, len(b), perSample)
		if perSample > 2 {
			t.Errorf("walk=%v: %.2f bytes/sample, want <= 2", walk, perSample)
		}
	}
}

func BenchmarkEncode(b *testing.B) {
	snaps := loadgenSnapshots(b, 720, false)
	b.ReportAllocs()
	var buf []byte
	for i := 0; i < b.N; i++ {
		var err error
		if buf, err = Encode(buf[:0], snaps); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(len(buf))/float64(720*50), "bytes/sample")
}

func BenchmarkDecode(b *testing.B) {
	snaps := loadgenSnapshots(b, 720, false)
	buf, err := Encode(nil, snaps)
	if err != nil {
		b.Fatal(err)
	}
	d := NewDecoder()
	b.ReportAllocs()
	b.ResetTimer()
	var out []storage.Snapshot
	for i := 0; i < b.N; i++ {
		if out, err = d.Decode(out[:0], buf, "h", math.MinInt64, math.MaxInt64, nil); err != nil {
			b.Fatal(err)
		}
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*720*50), "ns/sample")
}

// BenchmarkXOROnly is what plain Gorilla XOR costs on the same data, for
// comparison with the decimal columns.
func BenchmarkXOROnly(b *testing.B) {
	snaps := loadgenSnapshots(b, 720, false)
	size := 0
	for i := 0; i < b.N; i++ {
		size = 0
		for k := 0; k < 50; k++ {
			var e XOREncoder
			for j := range snaps {
				e.Append(snaps[j].Samples[k].Value)
			}
			size += len(e.Bytes())
		}
	}
	b.ReportMetric(float64(size)/float64(720*50), "bytes/sample")
}

func FuzzDecode(f *testing.F) {
	r := rand.New(rand.NewPCG(11, 12))
	for i := 0; i < 4; i++ {
		b, err := Encode(nil, randomSnapshots(r, 1+r.IntN(40), 4))
		if err != nil {
			f.Fatal(err)
		}
		f.Add(b)
	}
	f.Add([]byte{1, 1, 8, 0, 0, 0, 0, 0, 0, 0, 1, 1, 0, 0})
	f.Fuzz(func(t *testing.T, b []byte) {
		d := NewDecoder()
		out, err := d.Decode(nil, b, "h", math.MinInt64, math.MaxInt64, nil)
		if err != nil {
			if !errors.Is(err, ErrCorrupt) {
				t.Fatalf("error %v does not wrap ErrCorrupt", err)
			}
			return
		}
		// A part of the range decodes to the same part (the decoder stops
		// at the last snapshot wanted).
		lo, hi := len(out)/3, len(out)*2/3
		part, err := d.Decode(nil, b, "h", out[lo].Timestamp, out[hi].Timestamp, nil)
		if err != nil || len(part) != hi-lo+1 {
			t.Fatalf("part %d..%d: %d snapshots, %v", lo, hi, len(part), err)
		}
		for i := range part {
			if df := diff(part[i], canonical(out[lo+i])); df != "" {
				t.Fatal(df)
			}
		}
		// What decodes re-encodes to a chunk that decodes the same.
		again, err := Encode(nil, out)
		if err != nil {
			t.Fatalf("re-encode: %v", err)
		}
		out2, err := d.Decode(nil, again, "h", math.MinInt64, math.MaxInt64, nil)
		if err != nil || len(out2) != len(out) {
			t.Fatalf("re-decode: %d snapshots, %v", len(out2), err)
		}
		for i := range out {
			if df := diff(out2[i], canonical(out[i])); df != "" {
				t.Fatal(df)
			}
		}
		var s storage.Snapshot
		_ = d.DecodeRecord(b, nil, &s)
	})
}

// FuzzRoundTrip builds snapshots from the fuzzer's bytes (timestamps and
// raw float bits) and checks Encode → Decode gives them back.
func FuzzRoundTrip(f *testing.F) {
	f.Add([]byte("0123456789abcdef0123456789abcdef"), uint8(3))
	f.Fuzz(func(t *testing.T, data []byte, series uint8) {
		k := int(series%6) + 1
		var snaps []storage.Snapshot
		ts := int64(0)
		for len(data) >= 2+8*k {
			ts += 1 + int64(binary.LittleEndian.Uint16(data))%300
			data = data[2:]
			s := storage.Snapshot{HostID: "h", Timestamp: ts}
			for j := 0; j < k; j++ {
				s.Samples = append(s.Samples, storage.Sample{Series: fmt.Sprint("s", j), Value: math.Float64frombits(binary.LittleEndian.Uint64(data))})
				data = data[8:]
			}
			snaps = append(snaps, s)
		}
		if len(snaps) == 0 {
			return
		}
		roundTrip(t, snaps)
	})
}

// schemaRecord encodes s as a version 2 record and returns it with its
// schemas.
func schemaRecord(s *storage.Snapshot) ([]byte, map[SchemaID][]byte) {
	schemas := map[SchemaID][]byte{}
	rec := AppendSchemaRecord(nil, s, func(id SchemaID, b []byte) { schemas[id] = slices.Clone(b) })
	return rec, schemas
}

func TestSchemaRecordRoundTrip(t *testing.T) {
	r := rand.New(rand.NewPCG(13, 14))
	d := NewDecoder()
	known := map[SchemaID][]byte{}
	snaps := randomSnapshots(r, 300, 10)
	// Series of several families, some not contiguous in sorted order
	// (cpu.a < cpu_x < cpu{k=v}), some coming and going.
	for i := range snaps {
		snaps[i].Samples = append(snaps[i].Samples, storage.Sample{Series: "cpu.a", Value: 1.5}, storage.Sample{Series: "cpu_x", Value: 2, Unit: "u"},
			storage.Sample{Series: "cpu{k=v}", Value: -3.25})
		if i%3 == 0 {
			snaps[i].Samples = append(snaps[i].Samples, storage.Sample{Series: fmt.Sprintf("process.cpu_percent{pid=%d}", i), Value: 0.1 * float64(i)})
		}
	}
	for _, s := range snaps {
		rec, schemas := schemaRecord(&s)
		missing, ok := d.RecordSchemas(rec)
		if !ok {
			t.Fatal("RecordSchemas: not a version 2 record")
		}
		for _, id := range missing {
			if _, ok := schemas[id]; !ok {
				t.Fatalf("RecordSchemas reports %x, not one of the record's", id)
			}
		}
		if len(missing) > 0 {
			var miss storage.Snapshot
			if err := d.DecodeRecord(rec, nil, &miss); !errors.Is(err, ErrNoSchema) {
				t.Fatalf("record of an unknown schema: %v, want ErrNoSchema", err)
			}
		}
		for id, b := range schemas {
			if k, ok := known[id]; ok && string(k) != string(b) {
				t.Fatalf("one id, two schemas")
			}
			known[id] = b
			if err := d.AddSchema(id, b); err != nil {
				t.Fatal(err)
			}
		}
		if missing, _ := d.RecordSchemas(rec); len(missing) != 0 {
			t.Fatalf("schemas %x still missing", missing)
		}
		got := storage.Snapshot{HostID: s.HostID, Timestamp: s.Timestamp}
		if err := d.DecodeRecord(rec, nil, &got); err != nil {
			t.Fatal(err)
		}
		if df := diff(got, canonical(s)); df != "" {
			t.Fatal(df)
		}
		m := storage.NewMatcher([]string{"m.2", "cpu"})
		part := storage.Snapshot{HostID: s.HostID, Timestamp: s.Timestamp}
		if err := d.DecodeRecord(rec, m, &part); err != nil {
			t.Fatal(err)
		}
		want := slices.DeleteFunc(slices.Clone(canonical(s).Samples), func(x storage.Sample) bool { return !m.Match(x.Series) })
		if df := diff(part, storage.Snapshot{HostID: s.HostID, Timestamp: s.Timestamp, Tags: part.Tags, Samples: want}); df != "" {
			t.Fatalf("with a matcher: %s", df)
		}
		for cut := 0; cut < len(rec); cut++ {
			var x storage.Snapshot
			if err := d.DecodeRecord(rec[:cut], nil, &x); !errors.Is(err, ErrCorrupt) {
				t.Fatalf("record cut at %d of %d: %v", cut, len(rec), err)
			}
		}
	}
	// Series that come and go change only their family's schema.
	t.Logf("%d snapshots, %d distinct schemas", len(snaps), len(known))
	// A schema whose bytes do not hash to its id is refused.
	_, schemas := schemaRecord(&snaps[0])
	for id, b := range schemas {
		id[0] ^= 1
		if err := NewDecoder().AddSchema(id, b); !errors.Is(err, ErrCorrupt) {
			t.Fatalf("AddSchema with a wrong id: %v", err)
		}
	}
}

// TestSchemaRecordSize: on the load generator's series a version 2 record
// is several times smaller than a version 1 record.
func TestSchemaRecordSize(t *testing.T) {
	s := loadgenSnapshots(t, 1, false)[0]
	v1 := AppendRecord(nil, &s)
	v2, schemas := schemaRecord(&s)
	size := 0
	for _, b := range schemas {
		size += len(b)
	}
	t.Logf("FIGURE record of 50 series: version 1 %d bytes, version 2 %d bytes (+ %d schemas of %d bytes per head)", len(v1), len(v2), len(schemas), size)
	if len(v2)*4 > len(v1) {
		t.Errorf("version 2 record %d bytes, version 1 %d: want 4x smaller", len(v2), len(v1))
	}
}

// FuzzSchemaRecord decodes arbitrary schemas and records: no panic, errors
// wrap ErrCorrupt (or ErrNoSchema), and what decodes re-encodes to a
// record that decodes the same.
func FuzzSchemaRecord(f *testing.F) {
	r := rand.New(rand.NewPCG(15, 16))
	for _, s := range randomSnapshots(r, 4, 4) {
		rec, schemas := schemaRecord(&s)
		for _, b := range schemas {
			f.Add(b, rec)
			break
		}
	}
	f.Fuzz(func(t *testing.T, sch, rec []byte) {
		d := NewDecoder()
		sum := sha256.Sum256(sch)
		if err := d.AddSchema(SchemaID(sum[:SchemaIDLen]), sch); err != nil && !errors.Is(err, ErrCorrupt) {
			t.Fatalf("AddSchema error %v does not wrap ErrCorrupt", err)
		}
		d.RecordSchemas(rec)
		var a storage.Snapshot
		if err := d.DecodeRecord(rec, nil, &a); err != nil {
			if !errors.Is(err, ErrCorrupt) && !errors.Is(err, ErrNoSchema) {
				t.Fatalf("error %v wraps neither ErrCorrupt nor ErrNoSchema", err)
			}
			return
		}
		rec2, schemas := schemaRecord(&a)
		d2 := NewDecoder()
		for id, b := range schemas {
			if err := d2.AddSchema(id, b); err != nil {
				t.Fatal(err)
			}
		}
		var b storage.Snapshot
		if err := d2.DecodeRecord(rec2, nil, &b); err != nil {
			t.Fatal(err)
		}
		if df := diff(b, canonical(a)); df != "" {
			t.Fatal(df)
		}
	})
}

func BenchmarkAppendRecord(b *testing.B) {
	s := loadgenSnapshots(b, 1, false)[0]
	var buf []byte
	b.Run("version1", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			buf = AppendRecord(buf[:0], &s)
		}
		b.ReportMetric(float64(len(buf)), "bytes/record")
	})
	b.Run("schema", func(b *testing.B) {
		b.ReportAllocs()
		for i := 0; i < b.N; i++ {
			buf = AppendSchemaRecord(buf[:0], &s, func(SchemaID, []byte) {})
		}
		b.ReportMetric(float64(len(buf)), "bytes/record")
	})
}

// BenchmarkDecodeRecords decodes an hour's head: 720 records of 50 series.
func BenchmarkDecodeRecords(b *testing.B) {
	snaps := loadgenSnapshots(b, 720, false)
	for _, version := range []int{RecordVersion, RecordVersionSchema} {
		b.Run(fmt.Sprint("version", version), func(b *testing.B) {
			recs := make([][]byte, len(snaps))
			schemas := map[SchemaID][]byte{}
			for i := range snaps {
				if version == RecordVersion {
					recs[i] = AppendRecord(nil, &snaps[i])
					continue
				}
				var sch map[SchemaID][]byte
				recs[i], sch = schemaRecord(&snaps[i])
				maps.Copy(schemas, sch)
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; i < b.N; i++ {
				d := NewDecoder()
				for id, sch := range schemas {
					if err := d.AddSchema(id, sch); err != nil {
						b.Fatal(err)
					}
				}
				for j, rec := range recs {
					s := storage.Snapshot{HostID: "h", Timestamp: snaps[j].Timestamp}
					if err := d.DecodeRecord(rec, nil, &s); err != nil {
						b.Fatal(err)
					}
				}
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*720*50), "ns/sample")
		})
	}
}
