package ingest

import (
	"math"
	"strings"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

var lim = Limits{MaxBatchSnapshots: 3, MaxSamplesPerSnapshot: 4, MaxFutureSkew: 10 * time.Minute, MaxAge: 7 * 24 * time.Hour}

func metric(name string, v float64, labels map[string]string) *monitorpb.Metric {
	return &monitorpb.Metric{Name: name, Value: v, Unit: "%", Labels: labels}
}

func TestConvertKeepsGoodItemsAndNamesBadOnes(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	ts := now.Unix()
	b := &monitorpb.Batch{Seq: 7, Snapshots: []*monitorpb.Snapshot{
		{HostId: "web-1", Timestamp: ts, Tags: map[string]string{"dc": "eu", "bad tag": "x"}, Metrics: []*monitorpb.Metric{
			metric("cpu.usage_percent", 12.5, nil),
			metric("cpu.usage_percent", 13, nil),        // duplicate series
			metric("mem.used_percent", math.NaN(), nil), // NaN
			metric("net.rx_bytes_per_sec", 1, map[string]string{"interface": "eth0"}),
			metric("bad name!", 1, nil), // charset
		}},
		{HostId: "host:with:colons", Timestamp: ts},                     // breaks the key layout
		{HostId: "web-2", Timestamp: ts + int64(time.Hour/time.Second)}, // future
		{HostId: "web-3", Timestamp: ts},                                // over the batch limit
	}}
	wide := lim
	wide.MaxSamplesPerSnapshot = 8
	r := Convert(b, now, wide)
	if len(r.Snapshots) != 1 {
		t.Fatalf("stored %d snapshots, want 1: %+v", len(r.Snapshots), r.Snapshots)
	}
	s := r.Snapshots[0]
	if s.HostID != "web-1" || len(s.Samples) != 2 || s.Samples[0].Series != "cpu.usage_percent" || s.Samples[0].Value != 12.5 ||
		s.Samples[1].Series != "net.rx_bytes_per_sec{interface=eth0}" {
		t.Fatalf("kept samples wrong: %+v", s)
	}
	if s.Tags["dc"] != "eu" || len(s.Tags) != 1 {
		t.Fatalf("tags: %+v", s.Tags)
	}
	if r.Samples != 2 {
		t.Fatalf("samples = %d", r.Samples)
	}
	wants := []string{"label name \"bad tag\"", "appears twice", "not a finite number", "metric name \"bad name!\"",
		"host id \"host:with:colons\" has ':'", "ahead of the broker's clock", "batch has 4 snapshots, the limit is 3"}
	if len(r.Rejections) != len(wants) {
		t.Fatalf("got %d rejections, want %d: %v", len(r.Rejections), len(wants), r.Rejections)
	}
	for _, w := range wants {
		found := false
		for _, rej := range r.Rejections {
			if strings.Contains(rej.GetReason(), w) && rej.GetSeq() == 7 {
				found = true
			}
		}
		if !found {
			t.Errorf("no rejection mentions %q: %v", w, r.Rejections)
		}
	}
}

func TestConvertTooManySamplesAndTooOld(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	var ms []*monitorpb.Metric
	for _, n := range []string{"a", "b", "c", "d", "e", "f"} {
		ms = append(ms, metric(n, 1, nil))
	}
	r := Convert(&monitorpb.Batch{Seq: 1, Snapshots: []*monitorpb.Snapshot{
		{HostId: "h", Timestamp: now.Unix(), Metrics: ms},
		{HostId: "h", Timestamp: now.Add(-8 * 24 * time.Hour).Unix()},
	}}, now, lim)
	if len(r.Snapshots) != 1 || len(r.Snapshots[0].Samples) != 4 {
		t.Fatalf("want 4 samples kept: %+v", r.Snapshots)
	}
	if len(r.Rejections) != 2 || !strings.Contains(r.Rejections[0].Reason, "6 metrics, the limit is 4") || !strings.Contains(r.Rejections[1].Reason, "older than the retention") {
		t.Fatalf("rejections: %v", r.Rejections)
	}
}

func FuzzConvert(f *testing.F) {
	f.Add("web-1", int64(1_800_000_000), "cpu.usage", 1.5, "cpu", "cpu0", "dc", "eu")
	f.Add("a:b", int64(0), "", math.Inf(1), "", "", "", "")
	f.Add("x", int64(-5), "n{a=b}", 0.0, "k", "v,=", "t", "\x00")
	f.Add("0", int64(1_800_000_018), "", 0.0, "", "", "0", "") // an unnamed metric must not read as a whole-snapshot rejection
	f.Fuzz(func(t *testing.T, host string, ts int64, name string, v float64, lk, lv, tk, tv string) {
		b := &monitorpb.Batch{Seq: 1, Snapshots: []*monitorpb.Snapshot{{
			HostId: host, Timestamp: ts, Tags: map[string]string{tk: tv},
			Metrics: []*monitorpb.Metric{{Name: name, Value: v, Labels: map[string]string{lk: lv}}},
		}}}
		r := Convert(b, time.Unix(1_800_000_000, 0), lim)
		if len(r.Snapshots)+countWhole(r) != 1 {
			t.Fatalf("a snapshot must be either kept or rejected as a whole: %+v", r)
		}
		for _, s := range r.Snapshots {
			for _, smp := range s.Samples {
				// ':' may appear in a label value: series live in hash
				// fields, never in key names. A kept series must parse back.
				if _, _, err := storage.ParseSeries(smp.Series); err != nil || math.IsNaN(smp.Value) || math.IsInf(smp.Value, 0) || strings.ContainsAny(smp.Series, "\"\\") {
					t.Fatalf("bad sample kept: %+v (%v)", smp, err)
				}
			}
		}
	})
}

func countWhole(r Result) int {
	n := 0
	for _, rej := range r.Rejections {
		if rej.Metric == "" {
			n++
		}
	}
	return n
}
