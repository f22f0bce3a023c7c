package service

import (
	"context"
	"fmt"
	"math"
	"testing"
	"time"

	"google.golang.org/grpc/codes"
	"google.golang.org/grpc/status"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
	monitorpb "github.com/monitorhq/monitor/proto"
)

const (
	hour = int64(3600)
	day  = 24 * hour
)

func TestChooseLevel(t *testing.T) {
	now := time.Unix(1_800_000_000, 0)
	n := now.Unix()
	o := QueryOptions{}.withDefaults() // 2000 points, 5 s, 7 d raw, 30 d minutes, 1 y hours
	raw, minute, hourly := monitorpb.Resolution_RESOLUTION_RAW, monitorpb.Resolution_RESOLUTION_1M, monitorpb.Resolution_RESOLUTION_1H
	auto := monitorpb.Resolution_RESOLUTION_AUTO
	for _, tc := range []struct {
		name     string
		o        QueryOptions
		from, to int64
		step     int64
		want     monitorpb.Resolution
		code     codes.Code
	}{
		{"1 h: 720 raw points", o, n - hour, n, 0, raw, codes.OK},
		{"2.5 h: 1801 raw points", o, n - 9000, n, 0, raw, codes.OK},
		{"3 h: too many raw points", o, n - 3*hour, n, 0, minute, codes.OK},
		{"24 h: 1441 minutes", o, n - day, n, 0, minute, codes.OK},
		{"7 d: 169 hours", o, n - 7*day, n, 0, hourly, codes.OK},
		{"step 60 over 1 h: minutes", o, n - hour, n, 60, minute, codes.OK},
		{"step 59 over 1 h: raw", o, n - hour, n, 59, raw, codes.OK},
		{"step 3600 over 1 h: hours", o, n - hour, n, 3600, hourly, codes.OK},
		{"step 10 over 24 h: raw would read too much", o, n - day, n, 10, minute, codes.OK},
		{"1 h ten days ago: raw is gone", o, n - 10*day - hour, n - 10*day, 0, minute, codes.OK},
		{"1 h forty days ago: minutes are gone", o, n - 40*day - hour, n - 40*day, 0, hourly, codes.OK},
		{"two years ago: nothing covers it, the coarsest", o, n - 730*day - hour, n - 730*day, 0, hourly, codes.OK},
		{"explicit raw over 1 h", o, n - hour, n, 0, raw, codes.OK},
		{"explicit minutes over 1 h", o, n - hour, n, 0, minute, codes.OK},
		{"explicit raw over 7 d", o, n - 7*day, n, 0, raw, codes.InvalidArgument},
		{"explicit minutes over 7 d", o, n - 7*day, n, 0, minute, codes.InvalidArgument},
		{"no rollups: 7 d raw", QueryOptions{NoRollups: true}.withDefaults(), n - 7*day, n, 0, raw, codes.OK},
		{"no rollups: explicit hours", QueryOptions{NoRollups: true}.withDefaults(), n - hour, n, 0, hourly, codes.FailedPrecondition},
		{"max points 100: 1 h at minutes", QueryOptions{MaxPoints: 100}.withDefaults(), n - hour, n, 0, minute, codes.OK},
		{"raw every 30 s: 6 h raw", QueryOptions{RawInterval: 30 * time.Second}.withDefaults(), n - 6*hour, n, 0, raw, codes.OK},
	} {
		t.Run(tc.name, func(t *testing.T) {
			ask := auto
			if len(tc.name) > 9 && tc.name[:9] == "explicit " || tc.code != codes.OK {
				ask = tc.want
			}
			l, err := tc.o.chooseLevel(tc.from, tc.to, tc.step, ask, now)
			if status.Code(err) != tc.code {
				t.Fatalf("chooseLevel = %v, want code %v", err, tc.code)
			}
			if err == nil && l.pb != tc.want {
				t.Fatalf("chooseLevel = %v, want %v", l.pb, tc.want)
			}
		})
	}
}

// written is what the query tests store: one host, two series, every 5 s
// for 3 hours ending at an hour boundary.
type written struct {
	now   time.Time
	from  int64
	snaps []storage.Snapshot
}

func writeHours(t *testing.T, store storage.Store) written {
	t.Helper()
	end := storage.Hour.BucketStart(time.Now().Unix()) // an hour boundary in the past
	w := written{now: time.Unix(end, 0), from: end - 3*hour}
	for ts := w.from; ts < end; ts += 5 {
		k := (ts - w.from) / 5
		w.snaps = append(w.snaps, storage.Snapshot{HostID: "q-1", Timestamp: ts, Samples: []storage.Sample{
			{Series: "cpu.usage_percent", Value: float64(k%40) * 0.25, Unit: "%"},
			{Series: "net.rx_bytes_per_sec{interface=eth0}", Value: float64(k), Unit: "bytes/s"},
		}})
	}
	ctx := context.Background()
	for i := 0; i < len(w.snaps); i += 500 {
		if err := store.WriteSnapshots(ctx, w.snaps[i:min(i+500, len(w.snaps))]); err != nil {
			t.Fatal(err)
		}
	}
	return w
}

// expect aggregates the written samples of series per step-aligned bucket.
func (w written) expect(series string, from, to, step int64) []*monitorpb.Point {
	var out []*monitorpb.Point
	var agg storage.Aggregate
	var bucket int64
	for _, sn := range w.snaps {
		if sn.Timestamp < from || sn.Timestamp > to {
			continue
		}
		for _, smp := range sn.Samples {
			if smp.Series != series {
				continue
			}
			b := sn.Timestamp - sn.Timestamp%step
			if agg.Count > 0 && b != bucket {
				out = append(out, aggregatePoint(bucket, &agg))
				agg = storage.Aggregate{}
			}
			bucket = b
			agg.Add(sn.Timestamp, smp.Value, smp.Unit)
		}
	}
	if agg.Count > 0 {
		out = append(out, aggregatePoint(bucket, &agg))
	}
	return out
}

func diffPoints(got, want []*monitorpb.Point) string {
	if len(got) != len(want) {
		return fmt.Sprintf("%d points, want %d", len(got), len(want))
	}
	for i := range want {
		g, w := got[i], want[i]
		if g.GetTimestamp() != w.GetTimestamp() || g.GetCount() != w.GetCount() || g.GetMin() != w.GetMin() ||
			g.GetMax() != w.GetMax() || g.GetLast() != w.GetLast() || math.Abs(g.GetValue()-w.GetValue()) > 1e-9 {
			return fmt.Sprintf("point %d = %v, want %v", i, g, w)
		}
	}
	return ""
}

func TestQueryRangeResolutions(t *testing.T) {
	backends := map[string]func(t *testing.T) storage.Store{
		"embedded": openEmbedded,
		"redis": func(t *testing.T) storage.Store {
			srv := redistest.Start(t)
			st, err := redisstore.New(context.Background(), redisstore.Config{Shards: []redisstore.ShardConfig{{Addr: srv.Addr}}}, quiet)
			if err != nil {
				t.Fatal(err)
			}
			t.Cleanup(func() { st.Close() })
			return st
		},
	}
	for name, open := range backends {
		t.Run(name, func(t *testing.T) {
			store := open(t)
			w := writeHours(t, store)
			_, c := serve(t, store, opts(w.now))
			ctx := context.Background()
			end := w.now.Unix()
			const cpu, rx = "cpu.usage_percent", "net.rx_bytes_per_sec{interface=eth0}"
			for _, tc := range []struct {
				name     string
				from     int64
				step     int64
				res      monitorpb.Resolution
				wantRes  monitorpb.Resolution
				wantStep int64
			}{
				{"last hour: raw", end - hour, 0, 0, monitorpb.Resolution_RESOLUTION_RAW, 0},
				{"last hour, step 30: raw in 30 s buckets", end - hour, 30, 0, monitorpb.Resolution_RESOLUTION_RAW, 30},
				{"3 hours: minutes", end - 3*hour, 0, 0, monitorpb.Resolution_RESOLUTION_1M, 60},
				{"3 hours, step 300: minutes merged per 5 minutes", end - 3*hour, 300, 0, monitorpb.Resolution_RESOLUTION_1M, 300},
				{"7 days: hours", end - 7*day, 0, 0, monitorpb.Resolution_RESOLUTION_1H, 3600},
				{"explicit minutes over the last hour", end - hour, 0, monitorpb.Resolution_RESOLUTION_1M, monitorpb.Resolution_RESOLUTION_1M, 60},
			} {
				resp, err := c.QueryRange(ctx, &monitorpb.QueryRangeRequest{HostId: "q-1", From: tc.from, To: end, Step: tc.step, Resolution: tc.res})
				if err != nil {
					t.Fatalf("%s: %v", tc.name, err)
				}
				if resp.GetResolution() != tc.wantRes || resp.GetStep() != tc.wantStep {
					t.Fatalf("%s: resolution %v step %d, want %v step %d", tc.name, resp.GetResolution(), resp.GetStep(), tc.wantRes, tc.wantStep)
				}
				if len(resp.GetSeries()) != 2 || resp.GetSeries()[0].GetName() != "cpu.usage_percent" || resp.GetSeries()[1].GetLabels()["interface"] != "eth0" ||
					resp.GetSeries()[1].GetUnit() != "bytes/s" {
					t.Fatalf("%s: series %v", tc.name, resp.GetSeries())
				}
				for i, series := range []string{cpu, rx} {
					got := resp.GetSeries()[i].GetPoints()
					var want []*monitorpb.Point
					if tc.wantStep == 0 {
						for _, sn := range w.snaps {
							if sn.Timestamp >= tc.from {
								want = append(want, &monitorpb.Point{Timestamp: sn.Timestamp, Value: sn.Samples[i].Value})
							}
						}
					} else {
						// Rollup buckets overlap the range: they start at
						// the bucket of from.
						from := tc.from
						if tc.wantRes != monitorpb.Resolution_RESOLUTION_RAW {
							from = tc.from - tc.from%min(tc.wantStep, 3600)
						}
						want = w.expect(series, from, end, tc.wantStep)
					}
					if d := diffPoints(got, want); d != "" {
						t.Fatalf("%s: %s: %s", tc.name, series, d)
					}
				}
				switch tc.wantRes {
				case monitorpb.Resolution_RESOLUTION_RAW:
					if resp.GetSnapshotsRead() != 720 || resp.GetBucketsRead() != 0 {
						t.Fatalf("%s: read %d snapshots %d buckets", tc.name, resp.GetSnapshotsRead(), resp.GetBucketsRead())
					}
				default:
					if resp.GetSnapshotsRead() != 0 || resp.GetBucketsRead() == 0 {
						t.Fatalf("%s: read %d snapshots %d buckets", tc.name, resp.GetSnapshotsRead(), resp.GetBucketsRead())
					}
				}
			}
			// Matchers reach the rollups.
			resp, err := c.QueryRange(ctx, &monitorpb.QueryRangeRequest{HostId: "q-1", Names: []string{"net.*"}, From: end - 7*day, To: end})
			if err != nil || len(resp.GetSeries()) != 1 || len(resp.GetSeries()[0].GetPoints()) != 3 || resp.GetBucketsRead() != 3 {
				t.Fatalf("7 days of net.*: %v, %v", resp, err)
			}
			if p := resp.GetSeries()[0].GetPoints()[2]; p.GetCount() != 720 || p.GetMin() != 1440 || p.GetMax() != 2159 || p.GetLast() != 2159 || p.GetValue() != 1799.5 {
				t.Fatalf("the last hour of net.rx: %v", p)
			}
			// An explicit resolution that reads too much is refused.
			_, err = c.QueryRange(ctx, &monitorpb.QueryRangeRequest{HostId: "q-1", From: end - 3*hour, To: end, Resolution: monitorpb.Resolution_RESOLUTION_RAW})
			if status.Code(err) != codes.InvalidArgument {
				t.Fatalf("explicit raw over 3 h: %v, want InvalidArgument", err)
			}
		})
	}
}

// TestRollupStepRounded: a step that is not a multiple of the bucket width
// is rounded up, so each point covers whole buckets.
func TestRollupStepRounded(t *testing.T) {
	store := openEmbedded(t)
	w := writeHours(t, store)
	_, c := serve(t, store, opts(w.now))
	end := w.now.Unix()
	resp, err := c.QueryRange(context.Background(), &monitorpb.QueryRangeRequest{HostId: "q-1", Names: []string{"net.*"}, From: end - 3*hour, To: end, Step: 90})
	if err != nil {
		t.Fatal(err)
	}
	if resp.GetResolution() != monitorpb.Resolution_RESOLUTION_1M || resp.GetStep() != 120 {
		t.Fatalf("step 90 over 3 h: resolution %v step %d, want 1M and 120", resp.GetResolution(), resp.GetStep())
	}
	if d := diffPoints(resp.GetSeries()[0].GetPoints(), w.expect("net.rx_bytes_per_sec{interface=eth0}", end-3*hour, end, 120)); d != "" {
		t.Fatal(d)
	}
}

// TestRollupHugeStep: a step far longer than the range does not overflow.
func TestRollupHugeStep(t *testing.T) {
	store := openEmbedded(t)
	w := writeHours(t, store)
	_, c := serve(t, store, opts(w.now))
	end := w.now.Unix()
	resp, err := c.QueryRange(context.Background(), &monitorpb.QueryRangeRequest{HostId: "q-1", Names: []string{"net.*"}, From: end - 7*day, To: end, Step: math.MaxInt64})
	if err != nil {
		t.Fatal(err)
	}
	var n uint64
	for _, p := range resp.GetSeries()[0].GetPoints() {
		n += p.GetCount()
	}
	if resp.GetResolution() != monitorpb.Resolution_RESOLUTION_1H || resp.GetStep() <= 0 || n != uint64(len(w.snaps)) || len(resp.GetSeries()[0].GetPoints()) > 2 {
		t.Fatalf("huge step: resolution %v step %d, %d points counting %d samples", resp.GetResolution(), resp.GetStep(), len(resp.GetSeries()[0].GetPoints()), n)
	}
}
