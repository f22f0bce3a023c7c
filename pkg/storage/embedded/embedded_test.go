package embedded

import (
	"context"
	"errors"
	"fmt"
	"log/slog"
	"math"
	"path/filepath"
	"regexp"
	"strings"
	"testing"
	"time"

	bolt "go.etcd.io/bbolt"
	"go.uber.org/goleak"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/chunk"
	"github.com/monitorhq/monitor/pkg/storage/storagetest"
)

func TestMain(m *testing.M) { goleak.VerifyTestMain(m) }

func ctxT(t testing.TB) context.Context {
	ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
	t.Cleanup(cancel)
	return ctx
}

func openT(t testing.TB, dir string, opts Options) *Store {
	t.Helper()
	s, err := Open(dir, opts, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatalf("Open: %v", err)
	}
	return s
}

func TestConformance(t *testing.T) {
	storagetest.Run(t, func(t *testing.T, clock *storagetest.Clock) storage.Store {
		return openT(t, t.TempDir(), Options{Retention: storagetest.Retention, HostTTL: storagetest.Retention, SweepInterval: time.Minute,
			Rollups: storagetest.Rollups(), Now: clock.Now})
	})
}

func TestRestartSurvives(t *testing.T) {
	dir := t.TempDir()
	ctx := ctxT(t)
	now := time.Now().Unix()
	snap := storage.Snapshot{HostID: "web-01", Timestamp: now, Tags: map[string]string{"env": "prod"},
		Samples: []storage.Sample{{Series: "cpu.usage_percent", Value: 12.5, Unit: "%"}, {Series: "net.rx{iface=eth0}", Value: 1 << 40, Unit: "bytes"}}}
	s := openT(t, dir, Options{})
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{snap}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterHost(ctx, storage.Host{ID: "web-01", Hostname: "web", Labels: map[string]string{"a": "b"}}, time.Unix(now-10, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.Heartbeat(ctx, "web-01", time.Unix(now-5, 0)); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatal(err)
	}
	if err := s.Close(); err != nil {
		t.Fatalf("second Close: %v", err)
	}

	s = openT(t, dir, Options{})
	defer s.Close()
	got, err := s.Range(ctx, storage.RangeQuery{HostID: "web-01", From: 0, To: now})
	if err != nil {
		t.Fatal(err)
	}
	if len(got) != 1 || fmt.Sprint(got[0]) != fmt.Sprint(snap) {
		t.Fatalf("after reopen Range = %+v, want %+v", got, snap)
	}
	hs, err := s.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if len(hs) != 1 || hs[0].Hostname != "web" || hs[0].FirstSeen != now-10 || hs[0].LastHeartbeat != now-5 || hs[0].LastData != now || hs[0].Labels["a"] != "b" {
		t.Fatalf("after reopen Hosts = %+v", hs)
	}
}

func TestSecondOpenRefused(t *testing.T) {
	dir := t.TempDir()
	s := openT(t, dir, Options{})
	defer s.Close()
	_, err := Open(dir, Options{}, nil)
	if err == nil || !strings.Contains(err.Error(), "locked") {
		t.Fatalf("second Open = %v, want a locked-file error", err)
	}
}

func TestOpenRefusesOptions(t *testing.T) {
	for _, o := range []Options{{Retention: -1}, {SweepInterval: -time.Second}, {HostTTL: time.Millisecond}} {
		if s, err := Open(t.TempDir(), o, nil); err == nil {
			s.Close()
			t.Fatalf("Open(%+v) succeeded", o)
		}
	}
}

func TestFormatVersionChecked(t *testing.T) {
	dir := t.TempDir()
	openT(t, dir, Options{}).Close()
	rawUpdate(t, dir, func(tx *bolt.Tx) error { return tx.Bucket(bucketMeta).Put(keyFormat, []byte{9}) })
	_, err := Open(dir, Options{}, nil)
	if err == nil || !strings.Contains(err.Error(), "layout version") {
		t.Fatalf("Open of a newer layout = %v, want a version error", err)
	}
}

func rawUpdate(t *testing.T, dir string, fn func(tx *bolt.Tx) error) {
	t.Helper()
	db, err := bolt.Open(filepath.Join(dir, FileName), 0o600, &bolt.Options{Timeout: time.Second})
	if err != nil {
		t.Fatal(err)
	}
	defer db.Close()
	if err := db.Update(fn); err != nil {
		t.Fatal(err)
	}
}

// TestCorruptedValue: garbage in a value is an error naming the snapshot,
// never a panic, and does not break listing hosts.
func TestCorruptedValue(t *testing.T) {
	now := time.Now().Unix()
	good := storage.Snapshot{HostID: "h", Timestamp: now, Samples: []storage.Sample{{Series: "v", Value: 1.5, Unit: "u"}}}
	encoded := chunk.AppendRecord(nil, &good)
	for _, tc := range []struct {
		name string
		val  []byte
	}{
		{"empty", nil},
		{"wrong version", append([]byte{7}, encoded[1:]...)},
		{"truncated", encoded[:len(encoded)-3]},
		{"trailing bytes", append(append([]byte{}, encoded...), 0)},
		{"huge count", []byte{chunk.RecordVersion, 0xff, 0xff, 0xff, 0xff, 0x0f}},
		{"length past end", []byte{chunk.RecordVersion, 0, 1, 50, 'x'}},
		{"unknown kind", []byte{chunk.RecordVersion, 0, 1, 1, 'v', 0, 9, 0}},
		{"bad varint", []byte{chunk.RecordVersion, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80, 0x80}},
	} {
		t.Run(tc.name, func(t *testing.T) {
			dir := t.TempDir()
			ctx := ctxT(t)
			s := openT(t, dir, Options{})
			if err := s.WriteSnapshots(ctx, []storage.Snapshot{good}); err != nil {
				t.Fatal(err)
			}
			s.Close()
			rawUpdate(t, dir, func(tx *bolt.Tx) error {
				return tx.Bucket(bucketSnapshots).Bucket([]byte("h")).Put(tsKey(nil, now), tc.val)
			})
			s = openT(t, dir, Options{})
			defer s.Close()
			_, err := s.Range(ctx, storage.RangeQuery{HostID: "h", From: 0, To: now})
			if !errors.Is(err, chunk.ErrCorrupt) || !strings.Contains(err.Error(), fmt.Sprint(now)) {
				t.Fatalf("Range over a corrupt value = %v, want a corrupt-value error naming %d", err, now)
			}
			if _, _, err := s.Latest(ctx, "h"); !errors.Is(err, chunk.ErrCorrupt) {
				t.Fatalf("Latest over a corrupt value = %v", err)
			}
			if hs, err := s.Hosts(ctx); err != nil || len(hs) != 1 {
				t.Fatalf("Hosts = %v, %v", hs, err)
			}
			// Rewriting repairs it.
			if err := s.WriteSnapshots(ctx, []storage.Snapshot{good}); err != nil {
				t.Fatal(err)
			}
			if _, ok, err := s.Latest(ctx, "h"); err != nil || !ok {
				t.Fatalf("Latest after rewrite = %v, %v", ok, err)
			}
		})
	}
}

// TestSweeper: the sweeper deletes old snapshots, emptied host buckets and
// lapsed host records, and keeps the rest.
func TestSweeper(t *testing.T) {
	s := openT(t, t.TempDir(), Options{Retention: time.Hour, SweepInterval: 20 * time.Millisecond})
	defer s.Close()
	ctx := ctxT(t)
	now := time.Now().Unix()
	old := now - 2*3600
	mk := func(id string, ts int64) storage.Snapshot {
		return storage.Snapshot{HostID: id, Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: 1}}}
	}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{mk("mixed", old), mk("mixed", old+1), mk("mixed", now), mk("gone", old)}); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterHost(ctx, storage.Host{ID: "lapsed"}, time.Unix(old, 0)); err != nil {
		t.Fatal(err)
	}
	if _, err := s.RegisterHost(ctx, storage.Host{ID: "live"}, time.Unix(now, 0)); err != nil {
		t.Fatal(err)
	}
	deadline := time.Now().Add(10 * time.Second)
	for {
		var state string
		err := s.db.View(func(tx *bolt.Tx) error {
			var keys []int64
			if b := tx.Bucket(bucketSnapshots).Bucket([]byte("mixed")); b != nil {
				_ = b.ForEach(func(k, _ []byte) error { keys = append(keys, keyTS(k)-now); return nil })
			}
			gone := tx.Bucket(bucketSnapshots).Bucket([]byte("gone")) == nil
			lapsed := tx.Bucket(bucketHosts).Get([]byte("lapsed")) == nil
			live := tx.Bucket(bucketHosts).Get([]byte("live")) != nil
			state = fmt.Sprintf("mixed=%v gone-removed=%v lapsed-removed=%v live-kept=%v", keys, gone, lapsed, live)
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		if state == "mixed=[0] gone-removed=true lapsed-removed=true live-kept=true" {
			break
		}
		if time.Now().After(deadline) {
			t.Fatalf("sweeper did not finish: %s", state)
		}
		time.Sleep(10 * time.Millisecond)
	}
	if known, err := s.Heartbeat(ctx, "lapsed", time.Now()); err != nil || known {
		t.Fatalf("Heartbeat(lapsed) = %v, %v; want unknown", known, err)
	}
}

// TestLapsedRegistration: a registration with no activity for HostTTL is
// gone for reads even before the sweeper runs, as a Redis key would expire.
func TestLapsedRegistration(t *testing.T) {
	s := openT(t, t.TempDir(), Options{HostTTL: time.Hour, SweepInterval: time.Hour})
	defer s.Close()
	ctx := ctxT(t)
	now := time.Now()
	if _, err := s.RegisterHost(ctx, storage.Host{ID: "h", Hostname: "x"}, now.Add(-2*time.Hour)); err != nil {
		t.Fatal(err)
	}
	if known, err := s.Heartbeat(ctx, "h", now); err != nil || known {
		t.Fatalf("Heartbeat after HostTTL = %v, %v; want unknown", known, err)
	}
	got, err := s.RegisterHost(ctx, storage.Host{ID: "h"}, now)
	if err != nil {
		t.Fatal(err)
	}
	if got.FirstSeen != now.Unix() {
		t.Fatalf("re-registration after lapse FirstSeen = %d, want %d", got.FirstSeen, now.Unix())
	}
}

func TestCodecRoundTrip(t *testing.T) {
	values := []float64{0, math.Copysign(0, -1), 1, -1, 63, 64, -64, -65, 1 << 52, -(1 << 52), 1<<53 - 1, 1 << 53, 1 << 62,
		0.5, 1e-9, 1e15, 1e21, math.MaxFloat64, math.SmallestNonzeroFloat64, -123.456}
	s := storage.Snapshot{Tags: map[string]string{"a": "", "b": "x y"}}
	for i, v := range values {
		s.Samples = append(s.Samples, storage.Sample{Series: fmt.Sprintf("s%02d", i), Value: v, Unit: "°"})
	}
	enc := chunk.AppendRecord(nil, &s)
	var got storage.Snapshot
	if err := chunk.NewDecoder().DecodeRecord(enc, nil, &got); err != nil {
		t.Fatal(err)
	}
	if len(got.Samples) != len(values) || len(got.Tags) != 2 || got.Tags["b"] != "x y" {
		t.Fatalf("decoded %+v", got)
	}
	for i, v := range values {
		if math.Float64bits(got.Samples[i].Value) != math.Float64bits(v) || got.Samples[i].Unit != "°" {
			t.Errorf("value %v came back as %v", v, got.Samples[i].Value)
		}
	}
	// Integral values take the short form.
	small := storage.Snapshot{Samples: []storage.Sample{{Series: "v", Value: 3}}}
	if n := len(chunk.AppendRecord(nil, &small)); n != 8 {
		t.Errorf("one small integer sample encodes to %d bytes, want 8", n)
	}
}

func TestSampleOrder(t *testing.T) {
	in := []storage.Sample{{Series: "b", Value: 1}, {Series: "a", Value: 2}, {Series: "b", Value: 3}, {Series: "c", Value: 4}, {Series: "a", Value: 5}}
	order := chunk.SampleOrder(in, nil)
	var got []string
	for _, i := range order {
		got = append(got, fmt.Sprintf("%s=%v", in[i].Series, in[i].Value))
	}
	if fmt.Sprint(got) != "[a=5 b=3 c=4]" {
		t.Fatalf("SampleOrder = %v", got)
	}
	if chunk.SampleOrder([]storage.Sample{{Series: "a"}, {Series: "b"}}, nil) != nil {
		t.Fatal("sorted input was reordered")
	}
}

// FuzzDecode: any bytes decode to a snapshot or an error, never a panic;
// what decodes re-encodes to something that decodes to the same.
func FuzzDecode(f *testing.F) {
	s := storage.Snapshot{Tags: map[string]string{"env": "prod"}, Samples: []storage.Sample{
		{Series: "cpu", Value: 12.5, Unit: "%"}, {Series: "n{a=b}", Value: 42},
	}}
	f.Add(chunk.AppendRecord(nil, &s))
	f.Add([]byte{chunk.RecordVersion, 0, 0})
	f.Add([]byte{chunk.RecordVersion, 0xff, 0xff, 0xff, 0xff, 0x0f})
	f.Add(append([]byte{chunk.RecordVersionSchema}, "000000000000000000000000000000000000000000000000000000000000"...))
	f.Fuzz(func(t *testing.T, data []byte) {
		var a storage.Snapshot
		if err := chunk.NewDecoder().DecodeRecord(data, nil, &a); err != nil {
			// A schema record (version 2, the Redis head's) names a schema
			// this decoder was not given: not corrupt, but not readable here.
			if !errors.Is(err, chunk.ErrCorrupt) && !errors.Is(err, chunk.ErrNoSchema) {
				t.Fatalf("error %v wraps neither chunk.ErrCorrupt nor chunk.ErrNoSchema", err)
			}
			return
		}
		var b storage.Snapshot
		if err := chunk.NewDecoder().DecodeRecord(chunk.AppendRecord(nil, &a), nil, &b); err != nil {
			t.Fatalf("re-encoded value does not decode: %v", err)
		}
		if len(a.Samples) != len(b.Samples) || len(a.Tags) != len(b.Tags) {
			t.Fatalf("round trip changed %+v into %+v", a, b)
		}
		for i := range a.Samples {
			if a.Samples[i].Series != b.Samples[i].Series || math.Float64bits(a.Samples[i].Value) != math.Float64bits(b.Samples[i].Value) {
				t.Fatalf("round trip changed sample %d: %+v -> %+v", i, a.Samples[i], b.Samples[i])
			}
		}
	})
}

// TestSweeperRollups moves the clock and sweeps: seen bitmaps go once their
// hour no longer accepts data, minute and hour buckets after their own
// retentions, and emptied host buckets with them.
func TestSweeperRollups(t *testing.T) {
	clock := &storagetest.Clock{}
	s := openT(t, t.TempDir(), Options{Retention: time.Hour, SweepInterval: time.Hour, Now: clock.Now,
		Rollups: storage.RollupRetention{Minute: 3 * time.Hour, Hour: 6 * time.Hour}})
	defer s.Close()
	ctx := ctxT(t)
	ts := time.Now().Unix() - 600
	if ts%3600 == 3599 {
		ts-- // the bitmap must outlive the snapshot by at least a second
	}
	if err := s.WriteSnapshots(ctx, []storage.Snapshot{{HostID: "h", Timestamp: ts, Samples: []storage.Sample{{Series: "v", Value: 1}}}}); err != nil {
		t.Fatal(err)
	}
	state := func() string {
		var out []string
		err := s.db.View(func(tx *bolt.Tx) error {
			for _, name := range [][]byte{bucketSnapshots, bucketRollupSeen, bucketRollupMinute, bucketRollupHour} {
				n := 0
				if b := tx.Bucket(name).Bucket([]byte("h")); b != nil {
					n = b.Stats().KeyN
				}
				if string(name) == string(bucketSnapshots) { // records or a chunk, sealed or not
					if b := tx.Bucket(bucketChunks).Bucket([]byte("h")); b != nil {
						n += b.Stats().KeyN
					}
				}
				out = append(out, fmt.Sprintf("%s=%d", name, n))
			}
			return nil
		})
		if err != nil {
			t.Fatal(err)
		}
		return strings.Join(out, " ")
	}
	hour, minute := ts-ts%3600, ts-ts%60
	for _, step := range []struct {
		at   int64 // the clock's new time, Unix seconds
		want string
	}{
		{ts, "snapshots=1 rollup_seen=1 rollup_1m=1 rollup_1h=1"},
		// Past the retention: a chunk sealed before may stay until its
		// window's last second is (reads skip the snapshot either way).
		{ts + 3601, "snapshots=[01] rollup_seen=1 rollup_1m=1 rollup_1h=1"},
		{hour + 7201, "snapshots=0 rollup_seen=0 rollup_1m=1 rollup_1h=1"},
		{minute + 3*3600 + 1, "snapshots=0 rollup_seen=0 rollup_1m=0 rollup_1h=1"},
		{hour + 6*3600 + 1, "snapshots=0 rollup_seen=0 rollup_1m=0 rollup_1h=0"},
	} {
		if d := time.Unix(step.at, 0).Sub(clock.Now()); d > 0 {
			clock.Advance(d)
		}
		if err := s.sweep(); err != nil {
			t.Fatal(err)
		}
		if got := state(); !regexp.MustCompile("^" + step.want + "$").MatchString(got) {
			t.Fatalf("at %d (snapshot at %d): %s, want %s", step.at, ts, got, step.want)
		}
		if got, err := s.Range(ctx, storage.RangeQuery{HostID: "h", From: 0, To: ts}); err != nil || (len(got) == 1) != (step.at == ts) {
			t.Fatalf("at %d: Range = %d snapshots, %v", step.at, len(got), err)
		}
	}
}
