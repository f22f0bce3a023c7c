package queue

import (
	"context"
	"fmt"
	"sync"
	"testing"
	"time"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/redisstore"
)

type nopWriter struct{}

func (nopWriter) WriteSnapshots(context.Context, []storage.Snapshot) error { return nil }

// BenchmarkEnqueue is the queue's own cost per one-snapshot batch: admit,
// coalesce, complete (the writer does nothing).
func BenchmarkEnqueue(b *testing.B) {
	q := New(nopWriter{}, Config{Capacity: 1 << 16, FlushSnapshots: 512, FlushInterval: time.Millisecond}, quiet)
	defer q.Close()
	one := snaps("h", 1)
	var wg sync.WaitGroup
	done := func(error) { wg.Done() }
	b.ReportAllocs()
	b.RunParallel(func(pb *testing.PB) {
		for pb.Next() {
			wg.Add(1)
			for q.Enqueue(one, done) != nil {
				wg.Done()
				wg.Add(1)
			}
		}
	})
	wg.Wait()
}

// BenchmarkRedisWrite compares one-snapshot batches of 50 samples written
// through the queue (coalesced into pipelines of up to 512) with the same
// batches written one call each, against a real redis-server.
func BenchmarkRedisWrite(b *testing.B) {
	rs := redistest.Start(b)
	store, err := redisstore.New(context.Background(), redisstore.Config{Shards: []redisstore.ShardConfig{{Addr: rs.Addr}}}, quiet)
	if err != nil {
		b.Fatal(err)
	}
	defer store.Close()
	base := time.Now().Unix() - 3600
	mk := func(i int) []storage.Snapshot {
		s := storage.Snapshot{HostID: fmt.Sprintf("bench-%d", i%1000), Timestamp: base + int64(i/1000)}
		for m := 0; m < 50; m++ {
			s.Samples = append(s.Samples, storage.Sample{Series: fmt.Sprintf("m.metric_%02d", m), Value: float64(i), Unit: "%"})
		}
		return []storage.Snapshot{s}
	}
	batches := make([][]storage.Snapshot, 10000)
	for i := range batches {
		batches[i] = mk(i)
	}
	b.Run("queue", func(b *testing.B) {
		q := New(store, Config{Capacity: 1 << 16}, quiet)
		defer q.Close()
		var wg sync.WaitGroup
		done := func(err error) {
			if err != nil {
				b.Error(err)
			}
			wg.Done()
		}
		b.ReportAllocs()
		b.ResetTimer()
		b.SetParallelism(16) // many streams, as on a broker
		var next int64
		var mu sync.Mutex
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				wg.Add(1)
				for q.Enqueue(batches[i%int64(len(batches))], done) != nil {
					time.Sleep(100 * time.Microsecond) // full: back off as an agent would
				}
			}
		})
		wg.Wait()
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "snapshots/s")
	})
	b.Run("direct", func(b *testing.B) {
		b.ReportAllocs()
		b.SetParallelism(16)
		var next int64
		var mu sync.Mutex
		b.RunParallel(func(pb *testing.PB) {
			for pb.Next() {
				mu.Lock()
				i := next
				next++
				mu.Unlock()
				if err := store.WriteSnapshots(context.Background(), batches[i%int64(len(batches))]); err != nil {
					b.Error(err)
				}
			}
		})
		b.ReportMetric(float64(b.N)/b.Elapsed().Seconds(), "snapshots/s")
	})
}
