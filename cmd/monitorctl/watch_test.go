package main

import (
	"bytes"
	"context"
	"encoding/json"
	"log/slog"
	"net"
	"strings"
	"sync"
	"testing"
	"time"

	"go.uber.org/goleak"
	"golang.org/x/crypto/bcrypt"
	"google.golang.org/grpc"

	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization"
)

// feedBroker is a stand-in broker serving the Subscribe stream the
// visualization server follows; publish stores a batch.
type feedBroker struct {
	monitorpb.UnimplementedMonitorServiceServer
	mu   sync.Mutex
	subs map[chan *monitorpb.StoredBatch]struct{}
}

func (b *feedBroker) Subscribe(_ *monitorpb.SubscribeRequest, stream monitorpb.MonitorService_SubscribeServer) error {
	ch := make(chan *monitorpb.StoredBatch, 64)
	b.mu.Lock()
	b.subs[ch] = struct{}{}
	b.mu.Unlock()
	defer func() { b.mu.Lock(); delete(b.subs, ch); b.mu.Unlock() }()
	for {
		select {
		case <-stream.Context().Done():
			return nil
		case batch := <-ch:
			if err := stream.Send(batch); err != nil {
				return err
			}
		}
	}
}

func (b *feedBroker) publish(batch *monitorpb.StoredBatch) {
	b.mu.Lock()
	defer b.mu.Unlock()
	for ch := range b.subs {
		select {
		case ch <- batch:
		default:
		}
	}
}

// startVisualization runs a visualization server with its QUIC channel on
// free loopback ports, fed by a stand-in broker; user "viewer" has
// password "pw".
func startVisualization(t *testing.T) (*visualization.Server, *feedBroker) {
	t.Helper()
	ln, err := net.Listen("tcp", "127.0.0.1:0")
	if err != nil {
		t.Fatal(err)
	}
	fb := &feedBroker{subs: map[chan *monitorpb.StoredBatch]struct{}{}}
	gs := grpc.NewServer()
	monitorpb.RegisterMonitorServiceServer(gs, fb)
	go func() { _ = gs.Serve(ln) }()
	hash, _ := bcrypt.GenerateFromPassword([]byte("pw"), bcrypt.MinCost)
	cfg := visualization.DefaultConfig()
	cfg.HTTPListen, cfg.QUICListen, cfg.Brokers = "127.0.0.1:0", "127.0.0.1:0", []string{ln.Addr().String()}
	cfg.Auth.JWTSecret = visualization.RandomSecret()
	cfg.Auth.Users = []visualization.UserConfig{{Username: "viewer", PasswordHash: string(hash), Role: "viewer"}}
	cfg.TopK.ShmName = ""
	srv, err := visualization.New(cfg, slog.New(slog.DiscardHandler))
	if err != nil {
		t.Fatal(err)
	}
	ctx, cancel := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- srv.Run(ctx) }()
	t.Cleanup(func() {
		cancel()
		if err := <-done; err != nil {
			t.Errorf("visualization Run: %v", err)
		}
		gs.Stop()
	})
	return srv, fb
}

// TestWatchPrintsSamplesOverQUIC: watch logs in over HTTP, pins the
// certificate from /api/v1/quic and prints N matching samples as JSON
// lines received over native QUIC.
func TestWatchPrintsSamplesOverQUIC(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	srv, fb := startVisualization(t)
	var out, errb bytes.Buffer
	code := make(chan int, 1)
	go func() {
		code <- run([]string{"-user", "viewer", "-password", "pw", "watch", "-addr", srv.QUICAddr(), "-api", "http://" + srv.Addr(),
			"-n", "2", "-host", "w-*", "-metric", "cpu."}, &out, &errb)
	}()
	tick := time.NewTicker(50 * time.Millisecond)
	defer tick.Stop()
	deadline := time.After(30 * time.Second)
	ts := time.Now().Unix()
	var rc int
wait:
	for {
		select {
		case rc = <-code:
			break wait
		case <-tick.C:
			ts++
			fb.publish(&monitorpb.StoredBatch{Snapshots: []*monitorpb.Snapshot{
				{HostId: "db-1", Timestamp: ts, Metrics: []*monitorpb.Metric{{Name: "cpu.usage_percent", Value: 1}}},
				{HostId: "w-1", Timestamp: ts, Metrics: []*monitorpb.Metric{{Name: "cpu.usage_percent", Value: 2}, {Name: "mem.used_percent", Value: 3}}},
			}})
		case <-deadline:
			t.Fatalf("watch did not finish; stderr: %s", errb.String())
		}
	}
	if rc != 0 {
		t.Fatalf("exit %d; stderr: %s", rc, errb.String())
	}
	lines := strings.Split(strings.TrimSpace(out.String()), "\n")
	if len(lines) != 2 {
		t.Fatalf("output %q, want 2 lines", out.String())
	}
	for _, l := range lines {
		var m struct {
			Seq     uint64 `json:"seq"`
			Type    string `json:"type"`
			Host    string `json:"host"`
			Samples []struct {
				Series string `json:"series"`
			} `json:"samples"`
		}
		if err := json.Unmarshal([]byte(l), &m); err != nil || m.Type != "sample" || m.Host != "w-1" || m.Seq == 0 ||
			len(m.Samples) != 1 || m.Samples[0].Series != "cpu.usage_percent" {
			t.Fatalf("line %s: %v; want w-1's cpu sample as a numbered datagram", l, err)
		}
	}
}

func TestWatchRefusesBadCredentials(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	srv, _ := startVisualization(t)
	for _, tc := range []struct {
		name string
		args []string
		want string
	}{
		{"wrong password", []string{"-user", "viewer", "-password", "nope", "watch"}, "401"},
		{"forged token", []string{"watch", "-token", "forged.token.value"}, "4401"},
		{"no credentials", []string{"-password", "", "watch"}, "no credentials"},
	} {
		t.Run(tc.name, func(t *testing.T) {
			t.Setenv("MONITOR_TOKEN", "")
			t.Setenv("MONITOR_PASSWORD", "")
			args := append(tc.args, "-addr", srv.QUICAddr(), "-api", "http://"+srv.Addr())
			var out, errb bytes.Buffer
			if rc := run(args, &out, &errb); rc != 1 || !strings.Contains(errb.String(), tc.want) {
				t.Fatalf("exit %d, stderr %q; want 1 and %q", rc, errb.String(), tc.want)
			}
		})
	}
}
