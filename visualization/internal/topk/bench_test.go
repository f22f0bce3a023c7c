package topk

import (
	"fmt"
	"math/rand/v2"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

// BenchmarkUpdate measures Update on 10,000 hosts × 8 metrics with random
// values (K = 10, shared segment on), C++ engine against the Go twin.
func BenchmarkUpdate(b *testing.B) {
	const hosts, metrics = 10_000, 8
	hostNames := make([]string, hosts)
	for i := range hostNames {
		hostNames[i] = fmt.Sprintf("host-%05d", i)
	}
	metricNames := make([]string, metrics)
	for i := range metricNames {
		metricNames[i] = fmt.Sprintf("net.rx_bytes_per_sec{iface=eth%d}", i)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	values := make([]float64, 1<<16)
	for i := range values {
		values[i] = rng.Float64() * 100
	}
	for _, im := range engines {
		for _, shm := range []bool{false, true} {
			b.Run(fmt.Sprintf("%s/shm=%v", im.name, shm), func(b *testing.B) {
				now := time.Unix(1_700_000_000, 0)
				o := Options{Now: func() time.Time { return now }}
				if shm {
					o.ShmName = shmName(b)
				}
				e, err := im.make(o)
				if err != nil {
					b.Fatal(err)
				}
				defer e.Close()
				ts := now.Unix()
				for i := range hosts * metrics { // warm: every host holds a value
					e.Update(metricNames[i%metrics], hostNames[i/metrics], values[i%len(values)], ts)
				}
				b.ReportAllocs()
				b.ResetTimer()
				for i := 0; b.Loop(); i++ {
					e.Update(metricNames[i%metrics], hostNames[(i/metrics)%hosts], values[i%len(values)], ts)
				}
			})
		}
	}
}

// BenchmarkObserve measures Observe, the live path's call: one snapshot of
// 50 selected metrics per op, from 10,000 hosts in turn (K = 10, shared
// segment on), C++ engine against the Go twin; ns/op is per snapshot. Every
// sample changes its host's value.
func BenchmarkObserve(b *testing.B) {
	const hosts, metrics = 10_000, 50
	hostNames := make([]string, hosts)
	for i := range hostNames {
		hostNames[i] = fmt.Sprintf("host-%05d", i)
	}
	rng := rand.New(rand.NewPCG(7, 7))
	snaps := make([][]storage.Sample, 64) // value sets, reused across hosts
	for i := range snaps {
		snaps[i] = make([]storage.Sample, metrics)
		for j := range snaps[i] {
			snaps[i][j] = storage.Sample{Series: fmt.Sprintf("net.rx_bytes_per_sec{iface=eth%d}", j), Value: rng.Float64() * 100}
		}
	}
	for _, im := range engines {
		b.Run(im.name, func(b *testing.B) {
			now := time.Unix(1_700_000_000, 0)
			e, err := im.make(Options{Now: func() time.Time { return now }, ShmName: shmName(b)})
			if err != nil {
				b.Fatal(err)
			}
			defer e.Close()
			ts := now.Unix()
			for i := range hosts { // warm: every host holds a value
				e.Observe(hostNames[i], nil, ts, snaps[i%len(snaps)])
			}
			b.ReportAllocs()
			b.ResetTimer()
			for i := 0; b.Loop(); i++ {
				e.Observe(hostNames[i%hosts], nil, ts, snaps[(i/hosts+i+1)%len(snaps)])
			}
			b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(b.N*metrics), "ns/sample")
		})
	}
}
