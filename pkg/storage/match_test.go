package storage

import (
	"slices"
	"testing"
)

func TestMatcher(t *testing.T) {
	series := []string{
		"cpu.usage_percent",
		"cpu.usage_percent{cpu=0}",
		"cpu.usage_percentile",
		"net.rx_bytes_per_sec{iface=eth0}",
		"net.rx_bytes_per_sec{iface=eth1}",
		"mem.used_percent",
	}
	tests := []struct {
		name  string
		names []string
		want  []string
	}{
		{"nil matches all", nil, series},
		{"family matches labelled and bare", []string{"cpu.usage_percent"}, []string{"cpu.usage_percent", "cpu.usage_percent{cpu=0}"}},
		{"exact series", []string{"net.rx_bytes_per_sec{iface=eth1}"}, []string{"net.rx_bytes_per_sec{iface=eth1}"}},
		{"prefix", []string{"net.*"}, []string{"net.rx_bytes_per_sec{iface=eth0}", "net.rx_bytes_per_sec{iface=eth1}"}},
		{"prefix inside a name", []string{"cpu.usage_percent*"}, []string{"cpu.usage_percent", "cpu.usage_percent{cpu=0}", "cpu.usage_percentile"}},
		{"star alone matches all", []string{"*"}, series},
		{"several kinds", []string{"mem.used_percent", "net.rx_bytes_per_sec{iface=eth0}"}, []string{"net.rx_bytes_per_sec{iface=eth0}", "mem.used_percent"}},
		{"no match", []string{"disk.*", "load1"}, nil},
	}
	for _, tc := range tests {
		t.Run(tc.name, func(t *testing.T) {
			m := NewMatcher(tc.names)
			var got []string
			for _, s := range series {
				if m.Match(s) {
					got = append(got, s)
				}
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("NewMatcher(%q) matched %q, want %q", tc.names, got, tc.want)
			}

			snap := Snapshot{HostID: "h", Timestamp: 1}
			for i, s := range series {
				snap.Samples = append(snap.Samples, Sample{Series: s, Value: float64(i)})
			}
			m.Filter(&snap)
			got = got[:0]
			for _, smp := range snap.Samples {
				got = append(got, smp.Series)
				if smp.Value != float64(slices.Index(series, smp.Series)) {
					t.Fatalf("Filter moved values: %q has %v", smp.Series, smp.Value)
				}
			}
			if len(got) == 0 {
				got = nil
			}
			if !slices.Equal(got, tc.want) {
				t.Fatalf("Filter kept %q, want %q", got, tc.want)
			}
		})
	}
}

func TestNewMatcherEmptyIsNil(t *testing.T) {
	if m := NewMatcher([]string{}); m != nil {
		t.Fatalf("NewMatcher([]) = %v, want nil (match all)", m)
	}
}
