package analysis

import (
	"fmt"
	"math/rand/v2"
	"testing"

	"github.com/monitorhq/monitor/pkg/storage"
)

// BenchmarkObserve scores snapshots of 50 series for 1,000 hosts.
func BenchmarkObserve(b *testing.B) {
	d, err := New(Options{})
	if err != nil {
		b.Fatal(err)
	}
	rng := rand.New(rand.NewPCG(1, 1))
	samples := make([]storage.Sample, 50)
	for i := range samples {
		samples[i] = storage.Sample{Series: fmt.Sprintf("m.%d", i), Value: rng.Float64()}
	}
	hosts := make([]string, 1000)
	for i := range hosts {
		hosts[i] = fmt.Sprintf("host-%04d", i)
	}
	b.ReportAllocs()
	for i := 0; b.Loop(); i++ {
		for j := range samples {
			samples[j].Value = 50 + rng.NormFloat64()
		}
		d.Observe(hosts[i%len(hosts)], nil, int64(i/len(hosts)), samples)
	}
	b.ReportMetric(float64(b.N*len(samples))/b.Elapsed().Seconds(), "samples/s")
}
