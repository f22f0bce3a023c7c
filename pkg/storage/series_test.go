package storage

import (
	"errors"
	"math"
	"strings"
	"testing"
)

func TestSeriesKeyRoundTrip(t *testing.T) {
	tests := []struct {
		name   string
		metric string
		labels map[string]string
		want   string
	}{
		{"no labels", "cpu.usage_percent", nil, "cpu.usage_percent"},
		{"empty label map", "mem.used_percent", map[string]string{}, "mem.used_percent"},
		{"one label", "net.rx_bytes_per_sec", map[string]string{"iface": "eth0"}, "net.rx_bytes_per_sec{iface=eth0}"},
		{"labels sorted", "disk.used_percent", map[string]string{"mount": "/", "device": "sda1"}, "disk.used_percent{device=sda1,mount=/}"},
		{"non-ascii value", "temp.celsius", map[string]string{"sensor": "Küche 1"}, "temp.celsius{sensor=Küche 1}"},
		{"underscore name", "_x", map[string]string{"_a": "b"}, "_x{_a=b}"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SeriesKey(tc.metric, tc.labels)
			if err != nil {
				t.Fatalf("SeriesKey(%q, %v): %v", tc.metric, tc.labels, err)
			}
			if got != tc.want {
				t.Fatalf("SeriesKey(%q, %v) = %q, want %q", tc.metric, tc.labels, got, tc.want)
			}
			name, labels, err := ParseSeries(got)
			if err != nil {
				t.Fatalf("ParseSeries(%q): %v", got, err)
			}
			if name != tc.metric {
				t.Fatalf("ParseSeries(%q) name = %q, want %q", got, name, tc.metric)
			}
			if len(labels) != len(tc.labels) {
				t.Fatalf("ParseSeries(%q) labels = %v, want %v", got, labels, tc.labels)
			}
			for k, v := range tc.labels {
				if labels[k] != v {
					t.Fatalf("ParseSeries(%q) label %q = %q, want %q", got, k, labels[k], v)
				}
			}
		})
	}
}

func TestSeriesKeyRefuses(t *testing.T) {
	many := map[string]string{}
	for i := 0; i <= MaxLabels; i++ {
		many[string(rune('a'+i))] = "v"
	}
	tests := []struct {
		name   string
		metric string
		labels map[string]string
	}{
		{"empty name", "", nil},
		{"name starts with digit", "1cpu", nil},
		{"name with brace", "cpu{", nil},
		{"name with colon", "cpu:usage", nil},
		{"name too long", "a" + strings.Repeat("b", MaxMetricNameLen), nil},
		{"label value with comma", "net.rx", map[string]string{"iface": "eth0,eth1"}},
		{"label value with equals", "net.rx", map[string]string{"iface": "a=b"}},
		{"label value with brace", "net.rx", map[string]string{"iface": "a}"}},
		{"label value with quote", "net.rx", map[string]string{"iface": `a"b`}},
		{"label value with backslash", "net.rx", map[string]string{"iface": `a\b`}},
		{"label value with newline", "net.rx", map[string]string{"iface": "a\nb"}},
		{"label value empty", "net.rx", map[string]string{"iface": ""}},
		{"label value too long", "net.rx", map[string]string{"iface": strings.Repeat("x", MaxLabelValueLen+1)}},
		{"label value invalid utf8", "net.rx", map[string]string{"iface": "\xff"}},
		{"label name with dot", "net.rx", map[string]string{"if.ace": "eth0"}},
		{"label name empty", "net.rx", map[string]string{"": "eth0"}},
		{"too many labels", "net.rx", many},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			got, err := SeriesKey(tc.metric, tc.labels)
			if err == nil {
				t.Fatalf("SeriesKey(%q, %v) = %q, want an error", tc.metric, tc.labels, got)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("SeriesKey error %v does not wrap ErrInvalid", err)
			}
		})
	}
}

func TestParseSeriesRefuses(t *testing.T) {
	for _, s := range []string{
		"", "cpu{", "cpu{}", "cpu{a}", "cpu{a=b", "cpu{a=b}x", "cpu{a=b,}", "cpu{,a=b}",
		"cpu{b=1,a=2}", // not sorted
		"cpu{a=1,a=2}", // repeated
		"cpu{a=b}}", "cpu{a=b=c}", "{a=b}", "cpu{a=}", "cpu{=b}", "cpu{a=b{c}",
		"cpu usage", "cpu:usage",
	} {
		if name, labels, err := ParseSeries(s); err == nil {
			t.Errorf("ParseSeries(%q) = %q, %v; want an error", s, name, labels)
		} else if !errors.Is(err, ErrInvalid) {
			t.Errorf("ParseSeries(%q) error %v does not wrap ErrInvalid", s, err)
		}
	}
}

// FuzzParseSeries checks that ParseSeries never panics, that every refusal
// wraps ErrInvalid, and that whatever it accepts is canonical: SeriesKey of
// the parts gives the input back.
func FuzzParseSeries(f *testing.F) {
	for _, s := range []string{
		"cpu.usage_percent",
		"net.rx_bytes_per_sec{iface=eth0}",
		"disk.used_percent{device=sda1,mount=/}",
		"cpu{b=1,a=2}",
		"cpu{a=b}}",
		"temp{sensor=Küche}",
		"x{a=\xff}",
	} {
		f.Add(s)
	}
	f.Fuzz(func(t *testing.T, s string) {
		name, labels, err := ParseSeries(s)
		if verr := ValidateSeries(s); (verr == nil) != (err == nil) {
			t.Fatalf("ValidateSeries(%q) = %v but ParseSeries = %v: they must agree", s, verr, err)
		}
		if err != nil {
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("ParseSeries(%q) error %v does not wrap ErrInvalid", s, err)
			}
			return
		}
		back, err := SeriesKey(name, labels)
		if err != nil {
			t.Fatalf("ParseSeries(%q) accepted it, SeriesKey(%q, %v) refused: %v", s, name, labels, err)
		}
		if back != s {
			t.Fatalf("ParseSeries(%q) then SeriesKey = %q: not canonical", s, back)
		}
	})
}

func TestValidateHostID(t *testing.T) {
	tests := []struct {
		id string
		ok bool
	}{
		{"web-01", true},
		{"db.prod_3", true},
		{"A", true},
		{"9lives", true},
		{strings.Repeat("h", MaxHostIDLen), true},
		{"", false},
		{"host:1", false},  // colon: the key separator
		{"host{1}", false}, // braces: Redis Cluster hash tags
		{"{host", false},   // brace first
		{"host}", false},   // closing brace
		{"-host", false},   // separator first
		{".host", false},   // separator first
		{"host 1", false},  // space
		{"host/1", false},  // slash
		{"hôst", false},    // non-ASCII
		{"host\n", false},  // control character
		{strings.Repeat("h", MaxHostIDLen+1), false}, // too long
	}
	for _, tc := range tests {
		err := ValidateHostID(tc.id)
		if tc.ok && err != nil {
			t.Errorf("ValidateHostID(%q) = %v, want ok", tc.id, err)
		}
		if !tc.ok {
			if err == nil {
				t.Errorf("ValidateHostID(%q) = nil, want an error", tc.id)
			} else if !errors.Is(err, ErrInvalid) {
				t.Errorf("ValidateHostID(%q) error %v does not wrap ErrInvalid", tc.id, err)
			}
		}
	}
}

func TestValidateSnapshot(t *testing.T) {
	good := func() Snapshot {
		return Snapshot{
			HostID:    "web-01",
			Timestamp: 1700000000,
			Tags:      map[string]string{"env": "prod", "note": "rack 4, row \"b\""},
			Samples: []Sample{
				{Series: "cpu.usage_percent", Value: 12.5, Unit: "%"},
				{Series: "net.rx_bytes_per_sec{iface=eth0}", Value: 0, Unit: "bytes/s"},
				{Series: "temp.celsius{sensor=cpu}", Value: -3, Unit: "°C"},
			},
		}
	}
	if s := good(); ValidateSnapshot(&s) != nil {
		t.Fatalf("ValidateSnapshot(good) = %v", ValidateSnapshot(&s))
	}
	tests := []struct {
		name   string
		mutate func(s *Snapshot)
		want   string
	}{
		{"colon in host id", func(s *Snapshot) { s.HostID = "web:01" }, "host id"},
		{"brace in host id", func(s *Snapshot) { s.HostID = "web{01}" }, "host id"},
		{"empty host id", func(s *Snapshot) { s.HostID = "" }, "host id is empty"},
		{"too long host id", func(s *Snapshot) { s.HostID = strings.Repeat("a", MaxHostIDLen+1) }, "limit is 128"},
		{"zero timestamp", func(s *Snapshot) { s.Timestamp = 0 }, "timestamp"},
		{"negative timestamp", func(s *Snapshot) { s.Timestamp = -5 }, "timestamp"},
		{"NaN value", func(s *Snapshot) { s.Samples[0].Value = math.NaN() }, "not a finite number"},
		{"+Inf value", func(s *Snapshot) { s.Samples[0].Value = math.Inf(1) }, "not a finite number"},
		{"-Inf value", func(s *Snapshot) { s.Samples[0].Value = math.Inf(-1) }, "not a finite number"},
		{"label value with comma", func(s *Snapshot) { s.Samples[1].Series = "net.rx_bytes_per_sec{iface=eth0,1}" }, "no '='"},
		{"brace in series", func(s *Snapshot) { s.Samples[0].Series = "cpu{" }, "labels must be"},
		{"empty series", func(s *Snapshot) { s.Samples[0].Series = "" }, "metric name is empty"},
		{"unsorted labels", func(s *Snapshot) { s.Samples[0].Series = "x{b=1,a=2}" }, "not sorted"},
		{"bad tag name", func(s *Snapshot) { s.Tags["bad-name"] = "x" }, "label name"},
		{"tag value with control char", func(s *Snapshot) { s.Tags["env"] = "a\x00b" }, "control character"},
		{"tag value too long", func(s *Snapshot) { s.Tags["env"] = strings.Repeat("x", MaxTagValueLen+1) }, "limit is 1024"},
		{"unit invalid utf8", func(s *Snapshot) { s.Samples[0].Unit = "\xff" }, "UTF-8"},
		{"unit too long", func(s *Snapshot) { s.Samples[0].Unit = strings.Repeat("u", MaxUnitLen+1) }, "unit is"},
		{"unit with newline", func(s *Snapshot) { s.Samples[0].Unit = "a\nb" }, "control character"},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			s := good()
			tc.mutate(&s)
			err := ValidateSnapshot(&s)
			if err == nil {
				t.Fatalf("ValidateSnapshot = nil, want an error containing %q", tc.want)
			}
			if !errors.Is(err, ErrInvalid) {
				t.Fatalf("error %v does not wrap ErrInvalid", err)
			}
			if !strings.Contains(err.Error(), tc.want) {
				t.Fatalf("error %q does not contain %q", err, tc.want)
			}
		})
	}
}

func TestValidateValue(t *testing.T) {
	for _, v := range []float64{0, math.Copysign(0, -1), -1, 1e-9, 1e15, math.MaxFloat64, math.SmallestNonzeroFloat64} {
		if err := ValidateValue(v); err != nil {
			t.Errorf("ValidateValue(%v) = %v", v, err)
		}
	}
	for _, v := range []float64{math.NaN(), math.Inf(1), math.Inf(-1)} {
		if err := ValidateValue(v); !errors.Is(err, ErrInvalid) {
			t.Errorf("ValidateValue(%v) = %v, want ErrInvalid", v, err)
		}
	}
}
