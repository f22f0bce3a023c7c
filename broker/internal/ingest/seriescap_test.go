package ingest

import (
	"fmt"
	"strings"
	"sync"
	"testing"
	"time"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// TestSeriesCapStopsABombAndSparesOthers sends, in one batch, a normal host
// and a host that invents new metric names in every snapshot: the bomb
// host's series past the cap are refused with a reason naming the key, its
// known series still pass, the normal host is stored whole, and the count
// starts again in the next hour.
func TestSeriesCapStopsABombAndSparesOthers(t *testing.T) {
	const capN = 100
	c := NewSeriesCap(capN)
	l := Limits{MaxBatchSnapshots: 1000, MaxSamplesPerSnapshot: 1000, MaxFutureSkew: time.Minute, MaxAge: 7 * 24 * time.Hour, Series: c}
	now := time.Unix(1_800_000_000, 0).Truncate(time.Hour).Add(time.Minute)
	normal := func(ts int64) *monitorpb.Snapshot {
		s := &monitorpb.Snapshot{HostId: "normal-1", Timestamp: ts}
		for m := 0; m < 50; m++ {
			s.Metrics = append(s.Metrics, metric(fmt.Sprintf("app.m%02d", m), 1, nil))
		}
		return s
	}
	bombSeries := 0
	bomb := func(ts int64) *monitorpb.Snapshot {
		s := &monitorpb.Snapshot{HostId: "bomb-1", Timestamp: ts}
		s.Metrics = append(s.Metrics, metric("app.known", 1, nil))
		for m := 0; m < 40; m++ {
			s.Metrics = append(s.Metrics, metric(fmt.Sprintf("bomb.m%07d", bombSeries), 1, nil))
			bombSeries++
		}
		return s
	}
	var stored, refused, bombStored int
	for i := 0; i < 10; i++ {
		ts := now.Unix() - int64(10-i)
		r := Convert(&monitorpb.Batch{Seq: uint64(i + 1), Snapshots: []*monitorpb.Snapshot{bomb(ts), normal(ts)}}, now, l)
		for _, s := range r.Snapshots {
			switch s.HostID {
			case "normal-1":
				if len(s.Samples) != 50 {
					t.Fatalf("batch %d: normal host stored %d of 50 samples", i, len(s.Samples))
				}
				stored++
			case "bomb-1":
				bombStored += len(s.Samples)
				if i > 2 && (len(s.Samples) != 1 || s.Samples[0].Series != "app.known") {
					t.Fatalf("batch %d: bomb host past the cap stored %v, want only its known series", i, s.Samples)
				}
			}
		}
		for _, rj := range r.Rejections {
			if rj.GetHostId() != "bomb-1" || !strings.Contains(rj.GetReason(), "ingest.max_series_per_host") || !strings.HasPrefix(rj.GetMetric(), "bomb.") {
				t.Fatalf("unexpected rejection %v", rj)
			}
			refused++
		}
	}
	if stored != 10 {
		t.Fatalf("normal host: %d of 10 snapshots stored", stored)
	}
	// 100 distinct series admitted (app.known + 99 bomb names), the rest of
	// the 400 bomb names refused.
	if want := 400 - (capN - 1); refused != want || c.Refused() != uint64(want) {
		t.Fatalf("refused %d (counter %d), want %d", refused, c.Refused(), want)
	}
	if want := 10 + capN - 1; bombStored != want {
		t.Fatalf("bomb host stored %d samples, want %d", bombStored, want)
	}
	// The next hour starts a new count.
	next := now.Add(time.Hour)
	r := Convert(&monitorpb.Batch{Seq: 99, Snapshots: []*monitorpb.Snapshot{bomb(next.Unix())}}, next, l)
	if len(r.Rejections) != 0 || len(r.Snapshots[0].Samples) != 41 {
		t.Fatalf("next hour: %d rejections, %d samples stored", len(r.Rejections), len(r.Snapshots[0].Samples))
	}
}

// TestSeriesCapConcurrentHosts runs many hosts at once (the race detector
// checks the stripes) and checks each is capped on its own.
func TestSeriesCapConcurrentHosts(t *testing.T) {
	c := NewSeriesCap(30)
	now := time.Unix(1_800_000_000, 0)
	var wg sync.WaitGroup
	for h := 0; h < 16; h++ {
		wg.Add(1)
		go func() {
			defer wg.Done()
			l := Limits{MaxBatchSnapshots: 10, MaxSamplesPerSnapshot: 100, MaxFutureSkew: time.Minute, MaxAge: time.Hour, Series: c}
			s := &monitorpb.Snapshot{HostId: fmt.Sprintf("h-%d", h), Timestamp: now.Unix()}
			for m := 0; m < 50; m++ {
				s.Metrics = append(s.Metrics, metric(fmt.Sprintf("x.m%d", m), 1, nil))
			}
			r := Convert(&monitorpb.Batch{Seq: 1, Snapshots: []*monitorpb.Snapshot{s}}, now, l)
			if len(r.Snapshots[0].Samples) != 30 || len(r.Rejections) != 20 {
				t.Errorf("host %d: %d stored, %d refused", h, len(r.Snapshots[0].Samples), len(r.Rejections))
			}
		}()
	}
	wg.Wait()
	if c.Refused() != 16*20 {
		t.Fatalf("refused counter %d, want %d", c.Refused(), 16*20)
	}
	if NewSeriesCap(0) != nil || (*SeriesCap)(nil).Refused() != 0 {
		t.Fatal("a cap of 0 must be off")
	}
}

func BenchmarkSeriesCapAdmit(b *testing.B) {
	c := NewSeriesCap(10000)
	now := time.Unix(1_800_000_000, 0)
	s := &monitorpb.Snapshot{HostId: "h-1", Timestamp: now.Unix()}
	for m := 0; m < 100; m++ {
		s.Metrics = append(s.Metrics, metric(fmt.Sprintf("x.m%d", m), 1, nil))
	}
	batch := &monitorpb.Batch{Seq: 1, Snapshots: []*monitorpb.Snapshot{s}}
	l := Limits{MaxBatchSnapshots: 10, MaxSamplesPerSnapshot: 1000, MaxFutureSkew: time.Minute, MaxAge: time.Hour, Series: c}
	b.ReportAllocs()
	for b.Loop() {
		Convert(batch, now, l)
	}
}
