package e2e

import (
	"context"
	"errors"
	"fmt"
	"io"
	"log/slog"
	"path/filepath"
	"sync"
	"syscall"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/storage"
	"github.com/monitorhq/monitor/pkg/storage/embedded"
	monitorpb "github.com/monitorhq/monitor/proto"
)

const metricsPerSnapshot = 50

// ingestClient streams batches as fast as acks allow and records which
// sequence numbers the broker acknowledged.
type ingestClient struct {
	base    int64
	mu      sync.Mutex
	acked   uint64
	sentSeq uint64
}

const hostsPerBatch = 10

func (c *ingestClient) batch(seq uint64) *monitorpb.Batch {
	b := &monitorpb.Batch{Seq: seq}
	for h := 0; h < hostsPerBatch; h++ {
		s := &monitorpb.Snapshot{HostId: fmt.Sprintf("sig-%02d", h), Timestamp: c.base + int64(seq), Tags: map[string]string{"run": "sigterm"}}
		for m := 0; m < metricsPerSnapshot; m++ {
			s.Metrics = append(s.Metrics, &monitorpb.Metric{Name: fmt.Sprintf("load.m%02d", m), Value: float64(seq) + float64(m)/100, Unit: "%"})
		}
		b.Snapshots = append(b.Snapshots, s)
	}
	return b
}

// run streams until the broker ends the stream; it returns the highest
// acknowledged sequence and the stream's final error. After afterAcks acks
// it calls onAcks once (to deliver the fault mid-stream).
func (c *ingestClient) run(ctx context.Context, addr string, afterAcks uint64, onAcks func()) (uint64, error) {
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		return 0, err
	}
	defer conn.Close()
	stream, err := monitorpb.NewMonitorServiceClient(conn).Ingest(ctx)
	if err != nil {
		return 0, err
	}
	if err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Hello{Hello: &monitorpb.Hello{AgentId: "e2e"}}}); err != nil {
		return 0, err
	}
	window := make(chan struct{}, 8)
	recvErr := make(chan error, 1)
	go func() {
		fired := false
		for {
			resp, err := stream.Recv()
			if err != nil {
				recvErr <- err
				return
			}
			ack := resp.GetAck()
			if ack == nil {
				recvErr <- fmt.Errorf("unexpected response %v", resp)
				return
			}
			if len(ack.GetRejections()) > 0 {
				recvErr <- fmt.Errorf("rejections: %v", ack.GetRejections())
				return
			}
			c.mu.Lock()
			for s := c.acked; s < ack.GetAckedSeq(); s++ {
				<-window
			}
			c.acked = ack.GetAckedSeq()
			n := c.acked
			c.mu.Unlock()
			if !fired && n >= afterAcks {
				fired = true
				go onAcks()
			}
		}
	}()
	for seq := uint64(1); ; seq++ {
		select {
		case window <- struct{}{}:
		case err := <-recvErr:
			return c.lastAcked(), err
		}
		if err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: c.batch(seq)}}); err != nil {
			return c.lastAcked(), <-recvErr
		}
		c.mu.Lock()
		c.sentSeq = seq
		c.mu.Unlock()
	}
}

func (c *ingestClient) lastAcked() uint64 {
	c.mu.Lock()
	defer c.mu.Unlock()
	return c.acked
}

// TestBrokerSIGTERMLosesNoAckedSnapshot kills the broker with SIGTERM while
// a client streams as fast as it can, then checks every acknowledged
// snapshot in storage, for both backends.
func TestBrokerSIGTERMLosesNoAckedSnapshot(t *testing.T) {
	t.Run("redis", func(t *testing.T) {
		rs := redistest.Start(t)
		acked, base := sigtermRun(t, "redis://"+rs.Addr, t.TempDir())
		rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
		defer rdb.Close()
		ctx := context.Background()
		for seq := uint64(1); seq <= acked; seq++ {
			for h := 0; h < hostsPerBatch; h++ {
				key := fmt.Sprintf("monitor:metrics:sig-%02d:%d", h, base+int64(seq))
				n, err := rdb.HLen(ctx, key).Result()
				if err != nil || n != metricsPerSnapshot+3 { // + host_id, timestamp, tag:run
					t.Fatalf("acked snapshot %s has %d fields (err %v), want %d", key, n, err, metricsPerSnapshot+3)
				}
			}
		}
	})
	t.Run("embedded", func(t *testing.T) {
		data := t.TempDir()
		acked, base := sigtermRun(t, "embedded", data)
		st, err := embedded.Open(filepath.Join(data, "embedded"), embedded.Options{Retention: storage.DefaultRetention, SweepInterval: time.Hour, HostTTL: storage.DefaultRetention}, slog.New(slog.NewTextHandler(io.Discard, nil)))
		if err != nil {
			t.Fatal(err)
		}
		defer st.Close()
		for h := 0; h < hostsPerBatch; h++ {
			snaps, err := st.Range(context.Background(), storage.RangeQuery{HostID: fmt.Sprintf("sig-%02d", h), From: base + 1, To: base + int64(acked)})
			if err != nil {
				t.Fatal(err)
			}
			if uint64(len(snaps)) != acked {
				t.Fatalf("host sig-%02d: %d snapshots stored, %d acknowledged", h, len(snaps), acked)
			}
			for _, s := range snaps {
				if len(s.Samples) != metricsPerSnapshot {
					t.Fatalf("snapshot %d has %d samples", s.Timestamp, len(s.Samples))
				}
			}
		}
	})
}

func sigtermRun(t *testing.T, spec, data string) (acked uint64, base int64) {
	addr := freeAddr(t)
	p := startProc(t, "broker", "-grpc", addr, "-raft", "127.0.0.1:0", "-http", "", "-data", data, "-storage", spec, "-node-id", "sig")
	eventually(t, 15*time.Second, func() error {
		conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
		if err != nil {
			return err
		}
		defer conn.Close()
		ctx, cancel := context.WithTimeout(context.Background(), time.Second)
		defer cancel()
		_, err = monitorpb.NewMonitorServiceClient(conn).ListHosts(ctx, &monitorpb.ListHostsRequest{})
		return err
	})
	c := &ingestClient{base: time.Now().Unix() - 3600}
	ctx, cancel := context.WithTimeout(context.Background(), 60*time.Second)
	defer cancel()
	acked, err := c.run(ctx, addr, 20, func() { _ = p.cmd.Process.Signal(syscall.SIGTERM) })
	if err == nil || errors.Is(err, io.EOF) {
		// EOF would mean the broker ended the stream "successfully"; a
		// drained broker must say Unavailable so the agent fails over.
		t.Fatalf("stream ended with %v, want Unavailable", err)
	}
	if acked < 20 {
		t.Fatalf("only %d batches acknowledged before the stream ended: %v", acked, err)
	}
	select {
	case <-p.exited:
	case <-time.After(20 * time.Second):
		t.Fatal("broker did not exit after SIGTERM")
	}
	if p.err != nil {
		t.Fatalf("broker exited with %v", p.err)
	}
	t.Logf("%s: %d batches (%d snapshots) acknowledged, %d sent, stream ended: %v", spec, acked, acked*hostsPerBatch, c.sentSeq, err)
	return acked, c.base
}
