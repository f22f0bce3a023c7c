package main

import (
	"context"
	"fmt"
	"math"
	"slices"
	"time"

	"github.com/redis/go-redis/v9"

	"github.com/monitorhq/monitor/pkg/loadgen"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
)

// compactLayouts measures the two Redis layouts side by side
// (docs/storage.md): bytes per sample (INFO used_memory, rollups off, so
// only the raw layout is counted; a sealed window and an open one apart),
// ingest through WriteSnapshots with rollups on as a broker writes (the
// compact rate as a ratio of the seed's), and the p50/p99 of a 1 h range
// ending now (the open head plus one sealed chunk in the compact layout).
// The data is pkg/loadgen's Template: its 50 series with independent
// draws per snapshot, the hardest case for any encoding (each value costs
// the entropy of its range); bytes per sample are also measured on a walk
// of the same series (walker), closer to what hosts send.
func (h *harness) compactLayouts(ctx context.Context) error {
	tpl, err := loadgen.NewTemplate(h.p.Metrics)
	if err != nil {
		return err
	}
	rdb := redis.NewClient(&redis.Options{Addr: h.redis.Addr, Protocol: 2})
	defer rdb.Close()
	hosts, per := h.p.MemHosts, h.p.MemPerHost
	cmd := fmt.Sprintf("go run ./bench (compact.go: %d hosts × %d snapshots at 5 s, 50 series, per layout)", hosts, per)
	open := func(layout redisstore.Layout, rollups bool) (*redisstore.Store, error) {
		return redisstore.New(ctx, redisstore.Config{Shards: []redisstore.ShardConfig{{Addr: h.redis.Addr}}, Layout: layout, NoRollups: !rollups}, nil)
	}
	hour := int64(3600)
	now := time.Now().Unix()
	// Whole windows in the past: all of them sealed by Seal.
	sealedStart := (now/hour - 1 - int64((per*5+3599)/3600)) * hour
	// writeData writes hosts × n snapshots at 5 s from start, batches of
	// the broker's flush size, and returns the snapshots per second; walk
	// selects the walker's data over the template's draws.
	writeData := func(store *redisstore.Store, start int64, n int, walk bool) (float64, error) {
		var buf []storage.Snapshot
		w := newWalker()
		t0 := time.Now()
		seq := 0
		for i := 0; i < n; i++ {
			for k := 0; k < hosts; k++ {
				sn := tpl.Snapshot(fmt.Sprintf("cl-%03d", k), start+int64(i)*5, uint64(seq))
				if walk {
					sn = w.next(sn)
				}
				buf = append(buf, sn)
				seq++
				if len(buf) == h.p.FlushSize || (i == n-1 && k == hosts-1) {
					if err := store.WriteSnapshots(ctx, buf); err != nil {
						return 0, fmt.Errorf("compact bench: write: %w", err)
					}
					buf = buf[:0]
				}
			}
		}
		return float64(n*hosts) / time.Since(t0).Seconds(), nil
	}
	write := func(store *redisstore.Store, start int64, n int) (float64, error) {
		return writeData(store, start, n, false)
	}
	bytesPer := map[redisstore.Layout]float64{}
	walkPer := map[redisstore.Layout]float64{}
	for _, walk := range []bool{false, true} {
		for _, layout := range []redisstore.Layout{redisstore.LayoutSeed, redisstore.LayoutCompact} {
			if err := h.flush(ctx, rdb); err != nil {
				return err
			}
			store, err := open(layout, false)
			if err != nil {
				return err
			}
			before, err := usedMemory(ctx, rdb)
			if err != nil {
				store.Close()
				return err
			}
			if _, err := writeData(store, sealedStart, per, walk); err != nil {
				store.Close()
				return err
			}
			if layout == redisstore.LayoutCompact {
				for k := 0; k < hosts; k++ {
					if _, err := store.Seal(ctx, fmt.Sprintf("cl-%03d", k)); err != nil {
						store.Close()
						return err
					}
				}
			}
			after, err := usedMemory(ctx, rdb)
			store.Close()
			if err != nil {
				return err
			}
			b := float64(after-before) / float64(hosts*per*h.p.Metrics)
			note := "seed layout: a HASH per snapshot and its index"
			if layout == redisstore.LayoutCompact {
				note = "compact layout, every window sealed (a week is 167 sealed hours and one open)"
			}
			name := fmt.Sprintf("%s layout: redis bytes per sample", layout)
			if walk {
				walkPer[layout] = b
				name += ", walking values"
				note += "; each series walks as a host's do (walker)"
			} else {
				bytesPer[layout] = b
				note += "; independent draws per snapshot"
			}
			h.add(figure{Name: name, Unit: "bytes", Value: b, Command: cmd,
				Note: fmt.Sprintf("%s; rollups off; used_memory +%d bytes", note, after-before)})
		}
	}
	// The open window: records in heads, before sealing.
	if err := h.flush(ctx, rdb); err != nil {
		return err
	}
	// The store's clock stands at the window's start: nothing is sealed.
	frozen := time.Unix(sealedStart, 0)
	store, err := redisstore.New(ctx, redisstore.Config{Shards: []redisstore.ShardConfig{{Addr: h.redis.Addr}}, Layout: redisstore.LayoutCompact,
		NoRollups: true, Now: func() time.Time { return frozen }}, nil)
	if err != nil {
		return err
	}
	before, _ := usedMemory(ctx, rdb)
	openN := min(per, 700)
	if _, err := write(store, sealedStart, openN); err != nil {
		store.Close()
		return err
	}
	after, _ := usedMemory(ctx, rdb)
	store.Close()
	headBytes := float64(after-before) / float64(hosts*openN*h.p.Metrics)
	h.add(figure{Name: "compact layout: redis bytes per sample, open window", Unit: "bytes", Value: headBytes, Command: cmd,
		Note: "raw records in the hour's head, before it is sealed"})
	h.add(figure{Name: "compact layout: redis bytes per sample over a 7-day retention", Unit: "bytes",
		Value: (167*bytesPer[redisstore.LayoutCompact] + headBytes) / 168, Command: cmd,
		Note: fmt.Sprintf("(167 sealed hours + 1 open) / 168, independent draws; seed layout %.1f", bytesPer[redisstore.LayoutSeed])})
	h.add(figure{Name: "compact layout: redis bytes per sample over a 7-day retention, walking values", Unit: "bytes",
		Value: (167*walkPer[redisstore.LayoutCompact] + headBytes) / 168, Command: cmd,
		Note: fmt.Sprintf("(167 sealed hours of walking values + 1 open hour of independent draws, an upper bound) / 168; seed layout %.1f", walkPer[redisstore.LayoutSeed])})

	// Ingest with rollups on, as a broker writes; then 1 h range latency.
	rates := map[redisstore.Layout][]float64{}
	lat := map[redisstore.Layout][2]float64{}
	for run := 0; run < h.p.Runs; run++ {
		for _, layout := range []redisstore.Layout{redisstore.LayoutSeed, redisstore.LayoutCompact} {
			if err := h.flush(ctx, rdb); err != nil {
				return err
			}
			store, err := open(layout, true)
			if err != nil {
				return err
			}
			n := min(per, 2*720)
			rate, err := write(store, now-int64(n)*5, n)
			if err != nil {
				store.Close()
				return err
			}
			rates[layout] = append(rates[layout], rate)
			if run == 0 {
				var d []time.Duration
				for i := 0; i < 300; i++ {
					t0 := time.Now()
					got, err := store.Range(ctx, storage.RangeQuery{HostID: "cl-000", From: now - 3600, To: now})
					if err != nil {
						store.Close()
						return err
					}
					if len(got) == 0 {
						h.fail("compact bench: %s layout: the 1 h range returned nothing", layout)
					}
					d = append(d, time.Since(t0))
				}
				slices.Sort(d)
				lat[layout] = [2]float64{float64(d[len(d)/2].Microseconds()) / 1000, float64(d[len(d)*99/100].Microseconds()) / 1000}
			}
			store.Close()
		}
	}
	for _, layout := range []redisstore.Layout{redisstore.LayoutSeed, redisstore.LayoutCompact} {
		h.add(figure{Name: fmt.Sprintf("%s layout: WriteSnapshots, rollups on", layout), Unit: "snapshots/s", Runs: rates[layout], Command: cmd,
			Note: fmt.Sprintf("one client, batches of %d", h.p.FlushSize)})
		h.add(figure{Name: fmt.Sprintf("%s layout: 1 h range p50", layout), Unit: "ms", Value: lat[layout][0], Command: cmd, Note: "300 queries of the last hour of one host, every series"})
		h.add(figure{Name: fmt.Sprintf("%s layout: 1 h range p99", layout), Unit: "ms", Value: lat[layout][1], Command: cmd, Note: "300 queries of the last hour of one host, every series"})
	}
	h.add(figure{Name: "compact/seed ingest ratio", Unit: "x", Value: median(rates[redisstore.LayoutCompact]) / median(rates[redisstore.LayoutSeed]), Command: cmd})
	return nil
}

// walker turns the template's independent draws into series that walk as
// a host's metrics do: each value moves an eighth of the way from the
// series' previous value towards the template's new draw (so it stays in
// the series' range, with steps of up to about 6 % of it), rounded as the
// load generator rounds (whole numbers for byte and packet counts, else
// 0.01).
type walker struct {
	prev map[string][]float64
}

func newWalker() *walker { return &walker{prev: map[string][]float64{}} }

func (w *walker) next(s storage.Snapshot) storage.Snapshot {
	prev, ok := w.prev[s.HostID]
	if !ok {
		prev = make([]float64, len(s.Samples))
		for k := range s.Samples {
			prev[k] = s.Samples[k].Value
		}
		w.prev[s.HostID] = prev
		return s
	}
	out := s
	out.Samples = slices.Clone(s.Samples)
	for k := range out.Samples {
		v := prev[k] + (out.Samples[k].Value-prev[k])/8
		if math.Abs(v) >= 1000 {
			v = math.Round(v)
		} else {
			v = math.Round(v*100) / 100
		}
		out.Samples[k].Value = v
		prev[k] = v
	}
	return out
}
