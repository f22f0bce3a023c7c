package faults

import (
	"context"
	"fmt"
	"io"
	"net/http"
	"regexp"
	"strings"
	"testing"
	"time"

	"github.com/redis/go-redis/v9"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/broker"
	"github.com/monitorhq/monitor/internal/redistest"
	"github.com/monitorhq/monitor/pkg/loadgen"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// TestCardinalityBombIsCappedPerHost streams, on one agent stream, batches
// that each carry a normal host's snapshot and a snapshot of a host that
// invents new metric names every time (the bomb), while simulated agents
// write on other streams. Past ingest.max_series_per_host the bomb's new
// series are rejected (named, with the key in the reason) and counted on
// /metrics; the normal host in the same batches and every other stream are
// stored completely.
func TestCardinalityBombIsCappedPerHost(t *testing.T) {
	noLeaks(t)
	const capN, normalMetrics = 500, 30
	batches, bombPerBatch := 40, 250 // 10,000 names
	if long() {
		batches, bombPerBatch = 100, 10000 // a million names
	}
	rs := redistest.Start(t)
	b := startBroker(t, rs.Addr, func(c *broker.Config) { c.Ingest.MaxSeriesPerHost = capN })
	l := startLoad(t, loadgen.Config{Brokers: []string{b.GRPCAddr()}, Hosts: 20, Interval: 100 * time.Millisecond,
		Conns: 1, Metrics: 50, Prefix: "calm"})

	conn, err := grpc.NewClient(b.GRPCAddr(), grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	ctx, cancel := context.WithTimeout(context.Background(), time.Duration(batches)*10*time.Second)
	defer cancel()
	stream, err := monitorpb.NewMonitorServiceClient(conn).Ingest(ctx, grpc.MaxCallRecvMsgSize(64<<20))
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Hello{Hello: &monitorpb.Hello{AgentId: "bomb"}}}); err != nil {
		t.Fatal(err)
	}
	base := time.Now().Unix() - int64(batches) - 10
	names := 0
	rejected, otherRejections := 0, 0
	for seq := uint64(1); seq <= uint64(batches); seq++ {
		ts := base + int64(seq)
		bomb := &monitorpb.Snapshot{HostId: "bomb-1", Timestamp: ts}
		for i := 0; i < bombPerBatch; i++ {
			bomb.Metrics = append(bomb.Metrics, &monitorpb.Metric{Name: fmt.Sprintf("bomb.m%07d", names), Value: 1, Unit: "1"})
			names++
		}
		normal := &monitorpb.Snapshot{HostId: "normal-1", Timestamp: ts}
		for i := 0; i < normalMetrics; i++ {
			normal.Metrics = append(normal.Metrics, &monitorpb.Metric{Name: fmt.Sprintf("app.m%02d", i), Value: float64(i), Unit: "1"})
		}
		if err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: &monitorpb.Batch{Seq: seq, Snapshots: []*monitorpb.Snapshot{bomb, normal}}}}); err != nil {
			t.Fatal(err)
		}
		// One batch at a time: read until it is acknowledged.
		for {
			resp, err := stream.Recv()
			if err != nil {
				t.Fatalf("batch %d: %v", seq, err)
			}
			ack := resp.GetAck()
			if ack == nil {
				continue // flow control would be retried; none is expected here
			}
			for _, r := range ack.GetRejections() {
				if r.GetHostId() == "bomb-1" && strings.Contains(r.GetReason(), "ingest.max_series_per_host") {
					rejected++
				} else {
					otherRejections++
					t.Errorf("unexpected rejection %v", r)
				}
			}
			if ack.GetAckedSeq() >= seq {
				break
			}
		}
	}
	if err := stream.CloseSend(); err != nil {
		t.Fatal(err)
	}
	l.progress(t, 3, 30*time.Second, "other streams during the bomb")
	res, err := l.finish()
	if err != nil {
		t.Fatal(err)
	}

	// The normal host: every snapshot whole. The bomb host: exactly the cap.
	rdb := redis.NewClient(&redis.Options{Addr: rs.Addr})
	defer rdb.Close()
	bombSeries := 0
	for seq := 1; seq <= batches; seq++ {
		ts := base + int64(seq)
		n, err := rdb.HLen(context.Background(), fmt.Sprintf("monitor:metrics:normal-1:%d", ts)).Result()
		if err != nil || n != normalMetrics+2 {
			t.Fatalf("normal host snapshot %d: %d fields (%v), want %d", ts, n, err, normalMetrics+2)
		}
		m, err := rdb.HLen(context.Background(), fmt.Sprintf("monitor:metrics:bomb-1:%d", ts)).Result()
		if err != nil {
			t.Fatal(err)
		}
		if m > 0 {
			bombSeries += int(m) - 2
		}
	}
	checked, lost := verifyStored(t, rs.Addr, l.log, 50+3)
	metricsText := scrape(t, "http://"+b.HTTPAddr()+"/metrics")
	counter := regexp.MustCompile(`(?m)^monitor_broker_series_cap_rejected_total (\S+)$`).FindStringSubmatch(metricsText)
	figure(t, "cardinality_cap", capN, "series/host/hour")
	figure(t, "cardinality_bomb_names_sent", names, "series")
	figure(t, "cardinality_bomb_series_stored", bombSeries, "series")
	figure(t, "cardinality_bomb_rejected", rejected, "samples")
	figure(t, "cardinality_other_acked", checked, "snapshots")
	figure(t, "cardinality_other_lost", lost+int(res.Lost), "snapshots")
	if bombSeries != capN || rejected != names-capN {
		t.Fatalf("bomb host: %d series stored, %d rejected; want %d and %d", bombSeries, rejected, capN, names-capN)
	}
	if counter == nil || counter[1] != fmt.Sprint(names-capN) {
		t.Fatalf("monitor_broker_series_cap_rejected_total = %v, want %d", counter, names-capN)
	}
	if lost != 0 || res.Lost != 0 || res.Rejected != 0 || otherRejections != 0 {
		t.Fatalf("others hurt: %d lost in storage, loadgen lost %d rejected %d, %d other rejections", lost, res.Lost, res.Rejected, otherRejections)
	}
}

func scrape(t *testing.T, url string) string {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, err := io.ReadAll(resp.Body)
	if err != nil || resp.StatusCode != http.StatusOK {
		t.Fatalf("GET %s: %s %v", url, resp.Status, err)
	}
	return string(body)
}
