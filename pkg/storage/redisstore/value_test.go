package redisstore

import (
	"encoding/json"
	"math"
	"testing"
)

var codecValues = []float64{
	0, math.Copysign(0, -1), 1, -1, 75.5, 0.1, 1e-6, 9.99e-7, 1e-7, 1e-9, -1e-9, 1e15, 1e20, 1e21, -1e21, 1e100,
	123456789.123456789, 1 << 53, math.MaxFloat64, -math.MaxFloat64, math.SmallestNonzeroFloat64, 2.5e-308,
}

var codecUnits = []string{"", "%", "bytes/s", "°C", `a"b`, `a\b`, "tab\there", "\x01", "<&>", "µs\u2028"}

// TestAppendValueMatchesEncodingJSON: what we write is byte for byte what
// encoding/json (without HTML escaping) would write for the same object.
func TestAppendValueMatchesEncodingJSON(t *testing.T) {
	type obj struct {
		Value float64 `json:"value"`
		Unit  string  `json:"unit"`
	}
	for _, v := range codecValues {
		for _, u := range codecUnits {
			got := string(appendValue(nil, v, u))
			want, err := marshalNoHTML(obj{v, u})
			if err != nil {
				t.Fatal(err)
			}
			if got != want {
				t.Errorf("appendValue(%v, %q) = %s, encoding/json = %s", v, u, got, want)
			}
			back, unit, err := decodeValue(got)
			if err != nil || math.Float64bits(back) != math.Float64bits(v) || unit != u {
				t.Errorf("decodeValue(%s) = %v, %q, %v; want %v, %q", got, back, unit, err, v, u)
			}
		}
	}
}

func marshalNoHTML(v any) (string, error) {
	var b []byte
	buf := jsonBuffer{&b}
	enc := json.NewEncoder(buf)
	enc.SetEscapeHTML(false)
	if err := enc.Encode(v); err != nil {
		return "", err
	}
	return string(b[:len(b)-1]), nil // Encode adds a newline
}

type jsonBuffer struct{ b *[]byte }

func (w jsonBuffer) Write(p []byte) (int, error) { *w.b = append(*w.b, p...); return len(p), nil }

func TestDecodeValue(t *testing.T) {
	for _, tc := range []struct {
		in   string
		v    float64
		unit string
		fast bool
	}{
		{`{"value":75.5,"unit":"%"}`, 75.5, "%", true},
		{`{"value":-0,"unit":""}`, math.Copysign(0, -1), "", true},
		{`{"value":1E+3,"unit":"x"}`, 1000, "x", true},
		{`{"value":42}`, 42, "", true},
		{`{"value":1,"unit":"°C"}`, 1, "°C", true},
		{`{ "value": 1, "unit": "%" }`, 1, "%", false},
		{`{"unit":"%","value":2}`, 2, "%", false},
		{`{"value":3,"unit":"a\"b"}`, 3, `a"b`, false},
		{`{"value":4,"unit":"\u00b0"}`, 4, "°", false},
		{`{"value":5,"unit":"%","extra":1}`, 5, "%", false},
		{`{"VALUE":6}`, 6, "", false},
		{"{\"value\":7,\"unit\":\"\xff\"}", 7, "\ufffd", false},
	} {
		_, _, fast := decodeValueFast(tc.in)
		if fast != tc.fast {
			t.Errorf("decodeValueFast(%s) ok = %v, want %v", tc.in, fast, tc.fast)
		}
		v, unit, err := decodeValue(tc.in)
		if err != nil || math.Float64bits(v) != math.Float64bits(tc.v) || unit != tc.unit {
			t.Errorf("decodeValue(%s) = %v, %q, %v; want %v, %q", tc.in, v, unit, err, tc.v, tc.unit)
		}
	}
	for _, bad := range []string{
		``, `{}`, `{"unit":"%"}`, `{"value":null}`, `{"value":"1"}`, `{"value":1e400}`, `{"value":01}`,
		`{"value":.5}`, `{"value":+1}`, `{"value":NaN}`, `{"value":Infinity}`, `{"value":0x10}`, `{"value":1,"unit":"%"`,
		`{"value":1,"unit":"%"}x`, `{"value":1,"unit":5}`, `[1]`, `75.5`,
	} {
		if v, unit, err := decodeValue(bad); err == nil {
			t.Errorf("decodeValue(%s) = %v, %q; want an error", bad, v, unit)
		}
	}
}

// FuzzDecodeValue: the hand parser and encoding/json agree on every input.
func FuzzDecodeValue(f *testing.F) {
	for _, s := range []string{
		`{"value":75.5,"unit":"%"}`, `{"value":-0}`, `{"value":1e-9,"unit":"s"}`, `{"value":1,"unit":"a\"b"}`,
		`{"value":01}`, `{"value":1,"unit":"%"} `, "{\"value\":7,\"unit\":\"\xff\"}", `{"value":1e400}`,
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		v, unit, err := decodeValue(s)
		sv, sunit, serr := decodeValueSlow(s)
		if (err == nil) != (serr == nil) {
			t.Fatalf("decodeValue(%q) err %v, encoding/json err %v", s, err, serr)
		}
		if err == nil && (math.Float64bits(v) != math.Float64bits(sv) || unit != sunit) {
			t.Fatalf("decodeValue(%q) = %v %q, encoding/json = %v %q", s, v, unit, sv, sunit)
		}
	})
}

func BenchmarkDecodeValue(b *testing.B) {
	in := string(appendValue(nil, 1234.5678, "bytes/s"))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := decodeValue(in); err != nil {
			b.Fatal(err)
		}
	}
}

func BenchmarkDecodeValueEncodingJSON(b *testing.B) {
	in := string(appendValue(nil, 1234.5678, "bytes/s"))
	b.ReportAllocs()
	for i := 0; i < b.N; i++ {
		if _, _, err := decodeValueSlow(in); err != nil {
			b.Fatal(err)
		}
	}
}
