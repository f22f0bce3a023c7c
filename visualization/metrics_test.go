package visualization_test

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"

	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization"
	"github.com/monitorhq/monitor/visualization/internal/brokertest"
)

func fetch(t *testing.T, u string) (int, string) {
	t.Helper()
	resp, err := http.Get(u)
	if err != nil {
		t.Fatalf("GET %s: %v", u, err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// waitFor polls u until cond holds for its answer, or fails after 15 s.
func waitFor(t *testing.T, u string, cond func(code int, body string) bool) string {
	t.Helper()
	deadline := time.Now().Add(15 * time.Second)
	for {
		code, body := fetch(t, u)
		if cond(code, body) {
			return body
		}
		if time.Now().After(deadline) {
			t.Fatalf("GET %s: still %d %s after 15s", u, code, body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func TestMetricsListenEmptyServesNothing(t *testing.T) {
	srv, err := visualization.New(testConfig(), slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	r := runServer(t, srv)
	if a := srv.MetricsAddr(); a != "" {
		t.Fatalf("MetricsAddr = %q with metrics_listen empty", a)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
}

// TestMetricsAndReadiness runs the server against a stand-in broker with
// metrics_listen set: /readyz turns 200 once the live stream is open,
// /metrics is valid exposition text with the live path's, the push core's
// (clients by transport, the latency of a sample written to a WebSocket)
// and the engines' figures, the API port does not serve /metrics, and
// /readyz turns 503 (naming the problem) when the broker goes away while
// /healthz stays 200.
func TestMetricsAndReadiness(t *testing.T) {
	b := brokertest.Start(t)
	cfg := testConfig(b)
	cfg.MetricsListen = "127.0.0.1:0"
	srv, err := visualization.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ops := "http://" + srv.MetricsAddr()
	if srv.MetricsAddr() == "" {
		t.Fatal("MetricsAddr is empty with metrics_listen set")
	}
	r := runServer(t, srv)

	waitFor(t, ops+"/readyz", func(code int, _ string) bool { return code == http.StatusOK })
	if code, _ := fetch(t, ops+"/healthz"); code != http.StatusOK {
		t.Fatalf("/healthz = %d", code)
	}
	if code, _ := fetch(t, r.url+"/metrics"); code == http.StatusOK {
		t.Errorf("the API port serves /metrics; it belongs on metrics_listen only")
	}

	ws, _, err := dialWS(t, wsURL(r), r.token, nil, nil)
	if err != nil {
		t.Fatal(err)
	}
	defer ws.CloseNow()
	readMsg(t, ws, 10*time.Second) // hello
	subscribe(t, ws, `{"type":"subscribe","kinds":["sample"]}`)
	b.Publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{{HostId: "m-1", Timestamp: time.Now().Unix(),
		Metrics: []*monitorpb.Metric{{Name: "cpu.usage_percent", Value: 42, Unit: "%"}}}}})
	if m := readMsg(t, ws, 10*time.Second); m.Type != "sample" || m.Host != "m-1" {
		t.Fatalf("message = %+v, want m-1's sample", m)
	}
	// The WebSocket's sender records the sample's latency once it wrote it
	// and is back for more.
	// The live feed counts a snapshot after handing it to the observers,
	// so the client may have it before the counters move: wait for them.
	body := waitFor(t, ops+"/metrics", func(code int, body string) bool {
		if code != http.StatusOK || !strings.Contains(body, "monitor_visualization_push_latency_seconds_count 1") {
			return false
		}
		for _, zero := range []string{"monitor_visualization_live_snapshots_total 0", "monitor_visualization_live_samples_total 0",
			"monitor_visualization_topk_updates_total 0", "monitor_visualization_anomaly_points_total 0"} {
			if strings.Contains(body, zero+"\n") {
				return false
			}
		}
		return true
	})
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("/metrics is not valid exposition text: %v", err)
	}
	for _, want := range []string{
		"monitor_visualization_brokers 1",
		"monitor_visualization_brokers_connected 1",
		`monitor_visualization_push_clients{transport="websocket"} 1`,
		`monitor_visualization_push_clients{transport="webtransport"} 0`,
		"monitor_visualization_push_published_total",
		`monitor_visualization_topk_refused_total{reason="stale"} 0`,
		"monitor_visualization_alert_rules 0",
		`monitor_visualization_alert_webhooks_total{result="failed"} 0`,
		"go_goroutines",
		"process_open_fds",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
	// At least the one sample (a reconnect's catch-up may count it again).
	for _, name := range []string{"monitor_visualization_live_snapshots_total", "monitor_visualization_live_samples_total",
		"monitor_visualization_topk_updates_total", "monitor_visualization_anomaly_points_total"} {
		if f := fams[name]; f == nil || len(f.GetMetric()) == 0 || f.GetMetric()[0].GetCounter().GetValue() < 1 {
			t.Errorf("/metrics: %s = %v, want at least 1", name, f)
		}
	}
	if h := fams["monitor_visualization_push_latency_seconds"]; h == nil || len(h.GetMetric()[0].GetHistogram().GetBucket()) == 0 {
		t.Errorf("push latency histogram = %v", h)
	}

	b.Stop()
	// The stream ends at once; the connection's state follows within its
	// reconnect backoff: wait for both.
	body = waitFor(t, ops+"/readyz", func(code int, body string) bool {
		return code == http.StatusServiceUnavailable && strings.Contains(body, "brokers is reachable") && strings.Contains(body, "stream to 0 of 1 brokers")
	})
	if !strings.Contains(body, "brokers is reachable") || !strings.Contains(body, "stream to 0 of 1 brokers") {
		t.Errorf("/readyz with the broker gone = %s, want both problems named", body)
	}
	if code, _ := fetch(t, ops+"/healthz"); code != http.StatusOK {
		t.Errorf("/healthz = %d with the broker gone; liveness must not depend on brokers", code)
	}
	if err := r.stop(t); err != nil {
		t.Fatal(err)
	}
	if _, err := http.Get(ops + "/metrics"); err == nil {
		t.Error("metrics_listen still serves after Run returned")
	}
}

// runServer runs srv (from New) until the test ends, as start does.
func runServer(t *testing.T, srv *visualization.Server) *running {
	t.Helper()
	ctx, cancel := context.WithCancel(context.Background())
	r := &running{url: "http://" + srv.Addr(), cancel: cancel, done: make(chan error, 1)}
	go func() { r.done <- srv.Run(ctx) }()
	t.Cleanup(func() { _ = r.stop(t) })
	r.token = login(t, r.url, "viewer")
	return r
}
