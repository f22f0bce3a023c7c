package wspush

import (
	"bytes"
	"context"
	"fmt"
	"net/http/httptest"
	"sync"
	"sync/atomic"
	"testing"
	"time"

	"github.com/coder/websocket"

	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/visualization/internal/push"
)

// BenchmarkFanout is the push path of one visualization server: one
// snapshot (5 samples) observed by the hub is written by the WebSocket
// handler to every one of 500 clients (real connections on loopback,
// read in this process). One op is one snapshot delivered to every
// client; profile it with
//
//	go test -run '^$' -bench Fanout -cpuprofile /tmp/push.prof ./visualization/internal/wspush/
func BenchmarkFanout(b *testing.B) {
	const clients = 500
	hub := push.New(push.Options{QueueSize: 256, MaxClients: clients + 10})
	h, err := New(Options{Hub: hub, Heartbeat: 30 * time.Second, ReadLimit: 1 << 14,
		Verify: func(string) (Identity, error) {
			return Identity{User: "bench", Role: "viewer", Expires: time.Now().Add(time.Hour)}, nil
		}})
	if err != nil {
		b.Fatal(err)
	}
	srv := httptest.NewServer(h)
	defer func() {
		hub.Close()
		h.Wait()
		srv.Close()
	}()
	url := "ws" + srv.URL[len("http"):]
	var got atomic.Int64
	per := make([]atomic.Int64, clients) // sample messages per client
	var wg sync.WaitGroup
	conns := make([]*websocket.Conn, clients)
	for i := range conns {
		c, _, err := websocket.Dial(context.Background(), url, &websocket.DialOptions{Subprotocols: []string{Protocol, BearerPrefix + "token"}})
		if err != nil {
			b.Fatal(err)
		}
		conns[i] = c
		wg.Go(func() {
			for {
				_, data, err := c.Read(context.Background())
				if err != nil {
					return
				}
				if bytes.HasPrefix(data, []byte(`{"type":"sample"`)) {
					got.Add(1)
					per[i].Add(1)
				}
			}
		})
	}
	defer func() {
		for _, c := range conns {
			c.CloseNow()
		}
		wg.Wait()
	}()
	for hub.Stats().Clients < clients {
		time.Sleep(5 * time.Millisecond)
	}
	samples := make([]storage.Sample, 5)
	for i := range samples {
		samples[i] = storage.Sample{Series: fmt.Sprintf("cpu.core_usage_percent{core=%d}", i), Value: float64(i), Unit: "%"}
	}
	ts := time.Now().Unix()
	n := 0
	b.ResetTimer()
	for b.Loop() {
		ts++
		n++
		hub.Observe("bench-host", nil, ts, samples)
		// Keep the queues (256) from overflowing, folding is another
		// path: at most 128 snapshots ahead of the slowest reader.
		for i := 0; i < clients; i++ {
			for int64(n)-per[i].Load() > 128 {
				time.Sleep(50 * time.Microsecond)
			}
		}
	}
	deadline := time.Now().Add(30 * time.Second)
	for got.Load() < int64(n*clients) && time.Now().Before(deadline) {
		time.Sleep(time.Millisecond)
	}
	b.StopTimer()
	if st := hub.Stats(); st.Folded > 0 || got.Load() != int64(n*clients) {
		b.Fatalf("delivered %d of %d messages (folded %d)", got.Load(), n*clients, st.Folded)
	}
	b.ReportMetric(float64(b.Elapsed().Nanoseconds())/float64(n*clients), "ns/delivery")
}
