package broker

import (
	"context"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	"go.uber.org/goleak"
)

// TestMetricsAndReadyz starts a broker (a cluster of one on embedded
// storage): /readyz turns 200 once it leads, and /metrics exposes the
// broker's figures from its own registry.
func TestMetricsAndReadyz(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	cfg := DefaultConfig()
	cfg.GRPCListen, cfg.HTTPListen, cfg.Raft.Listen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	b, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	defer func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	}()
	get := func(path string) (int, string) {
		resp, err := http.Get("http://" + b.HTTPAddr() + path)
		if err != nil {
			t.Fatal(err)
		}
		defer resp.Body.Close()
		body, _ := io.ReadAll(resp.Body)
		return resp.StatusCode, string(body)
	}
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := get("/readyz")
		if code == http.StatusOK {
			break
		}
		if code != http.StatusServiceUnavailable || !strings.Contains(body, "problems") {
			t.Fatalf("/readyz = %d %s", code, body)
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 20s: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
	code, body := get("/metrics")
	if code != http.StatusOK {
		t.Fatalf("/metrics = %d", code)
	}
	for _, want := range []string{
		`monitor_broker_raft_state{state="Leader"} 1`,
		"monitor_broker_raft_has_leader 1",
		"monitor_broker_raft_members 1",
		"monitor_broker_snapshots_stored_total 0",
		"monitor_broker_queue_capacity 20000",
		"monitor_broker_queue_write_seconds_count 0",
		"monitor_broker_raft_apply_seconds_count",
		"go_goroutines",
	} {
		if !strings.Contains(body, want) {
			t.Errorf("/metrics lacks %q", want)
		}
	}
}
