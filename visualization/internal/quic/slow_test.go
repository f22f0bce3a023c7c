package quic

import (
	"context"
	"encoding/json"
	"fmt"
	"runtime"
	"slices"
	"testing"
	"time"

	pq "github.com/monitorhq/monitor/pkg/quic"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/visualization/internal/push"
)

// TestSlowNativeClientIsBoundedOthersUnaffected: a QUIC client that stops
// reading (its stream's flow-control window fills, the server's writes
// stall) while ≈20 MB of samples stream in. A client reading in lockstep
// gets every snapshot in order; the server's memory stays bounded (the
// stalled session's values are folded in the push hub, not queued); when
// the slow client reads again it finds a gap marker and the latest values.
func TestSlowNativeClientIsBoundedOthersUnaffected(t *testing.T) {
	// A long write timeout: this test is about folding, not about closing
	// a stalled session (the 5 s default would close it mid-test on a
	// loaded machine, which is bounded too, but not what is checked here).
	f := start(t, func(o *Options) { o.WriteTimeout = 2 * time.Minute })
	slow, err := dial(t, f, pq.DialOptions{Token: goodToken, NoDatagrams: true, Buffer: 1})
	if err != nil {
		t.Fatal(err)
	}
	fast, err := dial(t, f, pq.DialOptions{Token: goodToken, NoDatagrams: true})
	if err != nil {
		t.Fatal(err)
	}
	subscribed(t, slow, map[string]any{"hosts": []string{"web-*"}})
	subscribed(t, fast, map[string]any{"hosts": []string{"web-*"}})

	const n, series = 2500, 150
	names := make([]string, series)
	for j := range names {
		names[j] = fmt.Sprintf("disk.used_percent{mount=/srv/volume-%03d}", j)
	}
	heap := func() uint64 {
		runtime.GC()
		var ms runtime.MemStats
		runtime.ReadMemStats(&ms)
		return ms.HeapAlloc
	}
	base, peak := heap(), uint64(0)
	var lat []time.Duration
	for i := range n {
		samples := make([]storage.Sample, series)
		for j := range samples {
			samples[j] = storage.Sample{Series: names[j], Value: float64(i)}
		}
		sent := time.Now()
		f.hub.Observe("web-1", nil, int64(i+1), samples)
		m, raw := recv(t, fast)
		lat = append(lat, time.Since(sent))
		if raw.Datagram || m.Type != push.TypeSample || len(m.Samples) != series || m.Samples[0].Value != float64(i) {
			t.Fatalf("fast client, snapshot %d: got %s %q with %d samples (first %v)", i, m.Type, m.Host, len(m.Samples), m.Samples)
		}
		if i%250 == 249 {
			peak = max(peak, heap())
		}
	}
	growth := int64(peak) - int64(base)
	st := f.hub.Stats()
	t.Logf("FIGURE quic_slow_consumer_heap_growth=%.1f MiB (%d snapshots × %d series published, ≈%.1f MB of JSON)", float64(growth)/(1<<20), n, series, float64(n*series*55)/1e6)
	t.Logf("FIGURE quic_slow_consumer_folded=%d messages; fast client lockstep latency p50 %s max %s", st.Folded, percentile(lat, 50), percentile(lat, 100))
	if st.Folded == 0 {
		t.Fatalf("the stalled client was never folded: %+v", st)
	}
	// Bounded: the hub keeps one folded value per series and a short
	// queue, QUIC at most a stream window (quic-go: up to 6 MB) in the
	// stalled client's receive buffer — together well under half of the
	// ≈20 MB sent. A queue that grew with the backlog would hold it all.
	if sent := int64(n * series * 55); growth > sent/2 {
		t.Fatalf("heap grew by %.1f MiB while a client stalled (%.1f MB were sent to it)", float64(growth)/(1<<20), float64(sent)/1e6)
	}
	if a := f.srv.Stats().Active; a != 2 {
		t.Fatalf("active sessions = %d, want 2 (the slow one is folded, not closed)", a)
	}

	// The slow client reads again: somewhere a gap marker, then the latest
	// values of every series.
	gap := false
	latest := map[string]float64{}
	deadline := time.Now().Add(60 * time.Second)
	for len(latest) < series || !allEqual(latest, float64(n-1)) {
		if time.Now().After(deadline) {
			t.Fatalf("slow client: gap %v, %d series, not all at %d after 60 s", gap, len(latest), n-1)
		}
		ctx, cancel := context.WithTimeout(context.Background(), 30*time.Second)
		raw, err := slow.Recv(ctx)
		cancel()
		if err != nil {
			t.Fatalf("slow client: %v", err)
		}
		m := decode(t, raw)
		switch m.Type {
		case push.TypeGap:
			gap = true
		case push.TypeSample:
			for _, s := range m.Samples {
				latest[s.Series] = s.Value
			}
		}
	}
	if !gap {
		t.Fatal("the slow client caught up without a gap marker: it cannot know it missed snapshots")
	}
}

func allEqual(m map[string]float64, v float64) bool {
	for _, x := range m {
		if x != v {
			return false
		}
	}
	return true
}

func percentile(d []time.Duration, p int) time.Duration {
	s := slices.Clone(d)
	slices.Sort(s)
	return s[min(len(s)-1, len(s)*p/100)]
}

func decode(t *testing.T, raw pq.Message) msg {
	t.Helper()
	var m msg
	if err := json.Unmarshal(raw.Data, &m); err != nil {
		t.Fatalf("message %.200s: %v", raw.Data, err)
	}
	return m
}
