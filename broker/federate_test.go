package broker

import (
	"context"
	"errors"
	"io"
	"log/slog"
	"net/http"
	"strings"
	"testing"
	"time"

	dto "github.com/prometheus/client_model/go"
	"github.com/prometheus/common/expfmt"
	"github.com/prometheus/common/model"
	"go.uber.org/goleak"
	"google.golang.org/grpc"
	"google.golang.org/grpc/credentials/insecure"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// startReadyBroker runs a cluster of one on embedded storage and waits for
// /readyz.
func startReadyBroker(t *testing.T) *Broker {
	t.Helper()
	cfg := DefaultConfig()
	cfg.GRPCListen, cfg.HTTPListen, cfg.Raft.Listen, cfg.DataDir = "127.0.0.1:0", "127.0.0.1:0", "127.0.0.1:0", t.TempDir()
	b, err := New(context.Background(), cfg, slog.New(slog.NewTextHandler(io.Discard, nil)))
	if err != nil {
		t.Fatal(err)
	}
	ctx, stop := context.WithCancel(context.Background())
	done := make(chan error, 1)
	go func() { done <- b.Run(ctx) }()
	t.Cleanup(func() {
		stop()
		if err := <-done; err != nil {
			t.Error(err)
		}
	})
	deadline := time.Now().Add(20 * time.Second)
	for {
		code, body := httpGet(t, "http://"+b.HTTPAddr()+"/readyz")
		if code == http.StatusOK {
			return b
		}
		if time.Now().After(deadline) {
			t.Fatalf("not ready after 20s: %s", body)
		}
		time.Sleep(20 * time.Millisecond)
	}
}

func httpGet(t *testing.T, url string) (int, string) {
	t.Helper()
	resp, err := http.Get(url)
	if err != nil {
		t.Fatal(err)
	}
	defer resp.Body.Close()
	body, _ := io.ReadAll(resp.Body)
	return resp.StatusCode, string(body)
}

// ingestBatch registers hosts and streams one batch through the Ingest RPC, as
// an agent does, and waits for its ack.
func ingestBatch(t *testing.T, addr string, hosts []*monitorpb.HostInfo, snaps []*monitorpb.Snapshot) {
	t.Helper()
	ctx, cancel := context.WithTimeout(context.Background(), 10*time.Second)
	defer cancel()
	conn, err := grpc.NewClient(addr, grpc.WithTransportCredentials(insecure.NewCredentials()))
	if err != nil {
		t.Fatal(err)
	}
	defer conn.Close()
	mc := monitorpb.NewMonitorServiceClient(conn)
	for _, h := range hosts {
		if _, err := mc.Register(ctx, &monitorpb.RegisterRequest{Host: h}); err != nil {
			t.Fatalf("register %s: %v", h.GetHostId(), err)
		}
	}
	stream, err := mc.Ingest(ctx)
	if err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Hello{Hello: &monitorpb.Hello{AgentId: "federate-test"}}}); err != nil {
		t.Fatal(err)
	}
	if err := stream.Send(&monitorpb.IngestRequest{Kind: &monitorpb.IngestRequest_Batch{Batch: &monitorpb.Batch{Seq: 1, Snapshots: snaps}}}); err != nil {
		t.Fatal(err)
	}
	resp, err := stream.Recv()
	if err != nil {
		t.Fatal(err)
	}
	ack := resp.GetAck()
	if ack.GetAckedSeq() != 1 || int(ack.GetStoredSnapshots()) != len(snaps) || len(ack.GetRejections()) > 0 {
		t.Fatalf("ingest answered %v, want every snapshot of seq 1 stored", resp)
	}
	_ = stream.CloseSend()
}

func parseExposition(t *testing.T, body string) map[string]*dto.MetricFamily {
	t.Helper()
	p := expfmt.NewTextParser(model.LegacyValidation)
	fams, err := p.TextToMetricFamilies(strings.NewReader(body))
	if err != nil {
		t.Fatalf("not valid exposition text: %v\n%s", err, body)
	}
	return fams
}

// labelsOf returns the labels of m as a map.
func labelsOf(m *dto.Metric) map[string]string {
	out := map[string]string{}
	for _, l := range m.GetLabel() {
		out[l.GetName()] = l.GetValue()
	}
	return out
}

// TestFederate feeds a real broker through Ingest and reads /federate back
// as Prometheus would: valid text, sanitized names, the series' labels plus
// host and the registered labels, the snapshot's time, and the filters.
func TestFederate(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	b := startReadyBroker(t)
	now := time.Now().Unix()
	ingestBatch(t, b.GRPCAddr(),
		[]*monitorpb.HostInfo{
			{HostId: "web-1", Hostname: "web-1.example", Labels: map[string]string{"role": "web", "dc": "eu \"1\""}},
			{HostId: "db-1", Hostname: "db-1.example", Labels: map[string]string{"role": "db", "interface": "not-this"}},
		},
		[]*monitorpb.Snapshot{
			{HostId: "web-1", Timestamp: now - 1, Metrics: []*monitorpb.Metric{
				{Name: "cpu.usage_percent", Value: 12.5, Unit: "%"},
				{Name: "net.rx_bytes_per_sec", Value: 1000, Unit: "bytes/s", Labels: map[string]string{"interface": "eth0"}},
			}},
			{HostId: "web-1", Timestamp: now, Metrics: []*monitorpb.Metric{
				{Name: "cpu.usage_percent", Value: 25, Unit: "%"},
				{Name: "net.rx_bytes_per_sec", Value: 2000, Unit: "bytes/s", Labels: map[string]string{"interface": "eth0"}},
			}},
			{HostId: "db-1", Timestamp: now, Metrics: []*monitorpb.Metric{
				{Name: "cpu.usage_percent", Value: 50, Unit: "%"},
				{Name: "net.rx_bytes_per_sec", Value: 3, Unit: "bytes/s", Labels: map[string]string{"interface": "eth1", "host": "peer"}},
			}},
		})
	base := "http://" + b.HTTPAddr() + "/federate"

	code, body := httpGet(t, base)
	if code != http.StatusOK {
		t.Fatalf("/federate = %d %s", code, body)
	}
	fams := parseExposition(t, body)
	cpu := fams["monitor_cpu_usage_percent"]
	if cpu == nil || len(cpu.GetMetric()) != 2 {
		t.Fatalf("monitor_cpu_usage_percent = %v, want one sample per host\n%s", cpu, body)
	}
	got := map[string]*dto.Metric{}
	for _, m := range cpu.GetMetric() {
		got[labelsOf(m)["host"]] = m
	}
	web := got["web-1"]
	if web == nil || web.GetUntyped().GetValue() != 25 || web.GetTimestampMs() != now*1000 {
		t.Errorf("web-1 cpu = %v, want the newest value 25 at %d ms", web, now*1000)
	}
	if l := labelsOf(web); l["role"] != "web" || l["dc"] != `eu "1"` {
		t.Errorf("web-1 labels = %v, want the registered role and dc", l)
	}
	rx := fams["monitor_net_rx_bytes_per_sec"]
	if rx == nil || len(rx.GetMetric()) != 2 {
		t.Fatalf("monitor_net_rx_bytes_per_sec = %v\n%s", rx, body)
	}
	for _, m := range rx.GetMetric() {
		l := labelsOf(m)
		if l["host"] == "db-1" {
			// The series' own interface wins over the registered label; its
			// "host" label is kept as exported_host.
			if l["interface"] != "eth1" || l["exported_host"] != "peer" || l["role"] != "db" || m.GetUntyped().GetValue() != 3 {
				t.Errorf("db-1 rx = %v", l)
			}
		}
	}
	if h := fams["monitor_federate_hosts"]; h == nil || h.GetMetric()[0].GetGauge().GetValue() != 2 {
		t.Errorf("monitor_federate_hosts = %v, want 2", h)
	}
	if e := fams["monitor_federate_errors"]; e == nil || e.GetMetric()[0].GetGauge().GetValue() != 0 {
		t.Errorf("monitor_federate_errors = %v, want 0", e)
	}

	// Filters: one host by prefix, one family by prefix.
	_, body = httpGet(t, base+"?host=db*&name=net.*")
	fams = parseExposition(t, body)
	if _, ok := fams["monitor_cpu_usage_percent"]; ok {
		t.Errorf("name=net.* returned cpu samples:\n%s", body)
	}
	rx = fams["monitor_net_rx_bytes_per_sec"]
	if rx == nil || len(rx.GetMetric()) != 1 || labelsOf(rx.GetMetric()[0])["host"] != "db-1" {
		t.Errorf("host=db* name=net.* = %v, want db-1's one series", rx)
	}

	// max_age leaves out hosts with old data (here: every host, with 1ns).
	_, body = httpGet(t, base+"?max_age=1ns")
	fams = parseExposition(t, body)
	if len(fams) != 3 || fams["monitor_federate_old_hosts"].GetMetric()[0].GetGauge().GetValue() != 2 {
		t.Errorf("max_age=1ns returned\n%s", body)
	}

	for _, bad := range []string{"?max_age=soon", "?host=a*b*", "?match[]=up", "?name="} {
		if code, body := httpGet(t, base+bad); code != http.StatusBadRequest {
			t.Errorf("/federate%s = %d %s, want 400", bad, code, body)
		}
	}
}

// failingStore fails Latest for one host.
type failingStore struct {
	storage.Store
	fail string
}

func (f failingStore) Latest(ctx context.Context, id string) (storage.Snapshot, bool, error) {
	if id == f.fail {
		return storage.Snapshot{}, false, errors.New("shard down")
	}
	return f.Store.Latest(ctx, id)
}

// TestFederateCountsUnreadableHosts: a host whose read fails is left out,
// counted, and its error shown as a comment; the others are still served.
func TestFederateCountsUnreadableHosts(t *testing.T) {
	t.Cleanup(func() { goleak.VerifyNone(t) })
	b := startReadyBroker(t)
	now := time.Now().Unix()
	ingestBatch(t, b.GRPCAddr(), []*monitorpb.HostInfo{{HostId: "a"}, {HostId: "b"}}, []*monitorpb.Snapshot{
		{HostId: "a", Timestamp: now, Metrics: []*monitorpb.Metric{{Name: "mem.used_percent", Value: 1}}},
		{HostId: "b", Timestamp: now, Metrics: []*monitorpb.Metric{{Name: "mem.used_percent", Value: 2}}},
	})
	ctx := context.Background()
	hosts, err := b.store.Hosts(ctx)
	if err != nil {
		t.Fatal(err)
	}
	res := collectFederate(ctx, failingStore{b.store, "b"}, hosts, federateQuery{maxAge: time.Hour}, time.Now())
	var sb strings.Builder
	if err := res.write(&sb); err != nil {
		t.Fatal(err)
	}
	body := sb.String()
	fams := parseExposition(t, body)
	if m := fams["monitor_mem_used_percent"].GetMetric(); len(m) != 1 || labelsOf(m[0])["host"] != "a" {
		t.Errorf("samples = %v, want host a only", m)
	}
	if e := fams["monitor_federate_errors"]; e.GetMetric()[0].GetGauge().GetValue() != 1 {
		t.Errorf("monitor_federate_errors = %v, want 1", e)
	}
	if !strings.Contains(body, `# federate: 1 host(s) could not be read; first: read the latest snapshot of host "b": shard down`) {
		t.Errorf("no error comment in\n%s", body)
	}
}

func TestSanitizeName(t *testing.T) {
	for in, want := range map[string]string{
		"cpu.usage_percent": "cpu_usage_percent",
		"disk.io-time":      "disk_io_time",
		"9lives":            "_lives",
		"ok_name9":          "ok_name9",
		"":                  "_",
	} {
		if got := sanitizeName(in); got != want {
			t.Errorf("sanitizeName(%q) = %q, want %q", in, got, want)
		}
	}
}
