package broker

// The broker's own figures on GET /metrics (names monitor_broker_*,
// docs/metrics.md "Broker"), read from the counters the service, the write
// queue and the cluster keep (at scrape time: nothing on the hot path), and
// what /readyz means.

import (
	"context"
	"encoding/json"
	"net/http"
	"strconv"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promcollectors "github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/monitorhq/monitor/broker/internal/control"
	"github.com/monitorhq/monitor/pkg/queue"
)

func bdesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("monitor_broker_"+name, help, labels, nil)
}

var (
	descBatchesAcked    = bdesc("batches_acked_total", "Ingest batches acknowledged.")
	descSnapshots       = bdesc("snapshots_stored_total", "Snapshots stored (acknowledged to agents).")
	descSamples         = bdesc("samples_stored_total", "Samples stored.")
	descRejections      = bdesc("rejected_items_total", "Items refused by validation (the rest of their batch was kept).")
	descWriteFailures   = bdesc("write_failures_total", "Batches not stored because a storage write failed (agents resend after flow control).")
	descQueueFull       = bdesc("queue_full_total", "Batches refused because the write queue was full (agents resend after flow control).")
	descFlowControl     = bdesc("flow_control_total", "FlowControl messages sent to agents.")
	descSeriesCapped    = bdesc("series_cap_rejected_total", "Samples refused because their host already wrote ingest.max_series_per_host distinct series this hour (a cardinality bomb).")
	descIgnored         = bdesc("ignored_after_flow_control_total", "Batches ignored because an earlier one of the stream was not stored (go-back-N).")
	descStreams         = bdesc("ingest_streams", "Open Ingest streams.")
	descSubDrops        = bdesc("subscriber_drops_total", "Stored batches not delivered to a Subscribe stream that read too slowly (the client catches up by query).")
	descQueueDepth      = bdesc("queue_depth", "Snapshots waiting in the write queue.", "lane")
	descQueueInFlight   = bdesc("queue_inflight", "Snapshots being written.")
	descQueueCapacity   = bdesc("queue_capacity", "Snapshots the write queue holds at most.")
	descQueueFlushes    = bdesc("queue_flushes_total", "Storage writes (one pipeline each).")
	descQueueRefused    = bdesc("queue_refused_total", "Snapshots the write queue refused, by reason.", "reason")
	descFlushSize       = bdesc("queue_flush_snapshots", "Snapshots per storage write.")
	descWriteLatency    = bdesc("queue_write_seconds", "Storage write latency (pipeline round trip).")
	descRaftState       = bdesc("raft_state", "1 for this member's Raft state.", "state")
	descRaftTerm        = bdesc("raft_term", "Current Raft term.")
	descRaftCommit      = bdesc("raft_commit_index", "Raft commit index.")
	descRaftApplied     = bdesc("raft_applied_index", "Raft index applied to the control-plane state.")
	descRaftMembers     = bdesc("raft_members", "Members of the Raft configuration.")
	descRaftLeader      = bdesc("raft_has_leader", "1 while this member knows a leader.")
	descRingVersion     = bdesc("ring_version", "Storage ring version of the control plane.")
	descMigRunning      = bdesc("migration_running", "1 while a ring change is moving hosts.")
	descMigTotal        = bdesc("migration_hosts_total", "Hosts the current or last ring change moves.")
	descMigMoved        = bdesc("migration_hosts_moved", "Hosts moved by the current or last ring change.")
	descMigKeys         = bdesc("migration_keys_copied", "Keys copied by the current or last ring change.")
	descRegWritten      = bdesc("registry_writes_total", "Host registrations written to the cluster registry.")
	descRegDropped      = bdesc("registry_dropped_total", "Host registrations not written to the cluster registry because its queue was full (the storage has them).")
	descRegFailures     = bdesc("registry_failures_total", "Host registrations the cluster registry refused or could not take.")
	descRegisteredHosts = bdesc("registered_hosts", "Hosts in the cluster registry.")
	descAuthFailures    = bdesc("auth_failures_total", "gRPC calls refused by authentication or authorization, by reason (docs/security.md).", "reason")
	descConnsOpen       = bdesc("grpc_connections", "Open connections on the gRPC listener.")
	descConnsRefused    = bdesc("grpc_connections_refused_total", "Connections to the gRPC listener closed at once because a limit was reached, by reason (max_connections, max_connections_per_ip).", "reason")
)

type brokerCollector struct{ b *Broker }

func (brokerCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descBatchesAcked, descSnapshots, descSamples, descRejections, descWriteFailures,
		descQueueFull, descFlowControl, descSeriesCapped, descIgnored, descStreams, descSubDrops, descQueueDepth, descQueueInFlight,
		descQueueCapacity, descQueueFlushes, descQueueRefused, descFlushSize, descWriteLatency, descRaftState, descRaftTerm,
		descRaftCommit, descRaftApplied, descRaftMembers, descRaftLeader, descRingVersion, descMigRunning, descMigTotal,
		descMigMoved, descMigKeys, descRegWritten, descRegDropped, descRegFailures, descRegisteredHosts,
		descAuthFailures, descConnsOpen, descConnsRefused} {
		ch <- d
	}
}

func (c brokerCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	s := c.b.svc.Stats()
	counter(descBatchesAcked, s.BatchesAcked)
	counter(descSnapshots, s.SnapshotsStored)
	counter(descSamples, s.SamplesStored)
	counter(descRejections, s.Rejections)
	counter(descWriteFailures, s.WriteFailures)
	counter(descQueueFull, s.QueueFull)
	counter(descFlowControl, s.FlowControlSent)
	counter(descIgnored, s.IgnoredAfterFlow)
	counter(descSeriesCapped, c.b.seriesCap.Refused())
	gauge(descStreams, float64(s.IngestStreams))
	counter(descSubDrops, s.SubscriberDrops)
	q := s.Queue
	for i, d := range q.LaneDepth {
		gauge(descQueueDepth, float64(d), strconv.Itoa(i))
	}
	gauge(descQueueInFlight, float64(q.InFlight))
	gauge(descQueueCapacity, float64(q.Capacity))
	counter(descQueueFlushes, q.Flushes)
	for _, r := range []string{queue.ReasonFull, queue.ReasonClosed} {
		counter(descQueueRefused, q.Refused[r], r)
	}
	ch <- constHistogram(descFlushSize, q.FlushSize)
	ch <- constHistogram(descWriteLatency, q.WriteLatency)

	cl := c.b.cluster
	if rs, err := cl.node.Status(); err == nil {
		for _, st := range []string{"Leader", "Follower", "Candidate", "Shutdown"} {
			v := 0.0
			if rs.State == st {
				v = 1
			}
			gauge(descRaftState, v, st)
		}
		gauge(descRaftTerm, float64(rs.Term))
		gauge(descRaftCommit, float64(rs.CommitIndex))
		gauge(descRaftApplied, float64(rs.AppliedIndex))
		gauge(descRaftMembers, float64(len(rs.Servers)))
		gauge(descRaftLeader, boolf(rs.LeaderID != ""))
	}
	st := cl.node.FSM().Cluster()
	gauge(descRingVersion, float64(st.GetRingVersion()))
	m := st.GetMigration()
	gauge(descMigRunning, boolf(control.Migrating(st)))
	gauge(descMigTotal, float64(m.GetHostsTotal()))
	gauge(descMigMoved, float64(m.GetHostsMoved()))
	gauge(descMigKeys, float64(m.GetKeysCopied()))
	counter(descRegWritten, cl.regWritten.Load())
	counter(descRegDropped, cl.regDropped.Load())
	counter(descRegFailures, cl.regFailures.Load())
	gauge(descRegisteredHosts, float64(cl.node.FSM().HostCount()))

	for r, n := range c.b.authz.Failures() {
		counter(descAuthFailures, n, r)
	}
	gauge(descConnsOpen, float64(c.b.connLim.Open()))
	for r, n := range c.b.connLim.Refused() {
		counter(descConnsRefused, n, r)
	}
}

func boolf(b bool) float64 {
	if b {
		return 1
	}
	return 0
}

// constHistogram turns a queue.Histogram (per-bucket counts) into a
// Prometheus histogram (cumulative counts per upper bound).
func constHistogram(d *prometheus.Desc, h queue.Histogram) prometheus.Metric {
	buckets := make(map[float64]uint64, len(h.Bounds))
	var cum uint64
	for i, b := range h.Bounds {
		if i < len(h.Counts) {
			cum += h.Counts[i]
		}
		buckets[b] = cum
	}
	return prometheus.MustNewConstHistogram(d, h.Count, h.Sum, buckets)
}

// newRegistry is the broker's own registry (never the global one).
func (b *Broker) newRegistry() *prometheus.Registry {
	reg := prometheus.NewRegistry()
	reg.MustRegister(brokerCollector{b}, b.cluster.applyLatency,
		promcollectors.NewGoCollector(), promcollectors.NewProcessCollector(promcollectors.ProcessCollectorOpts{}))
	return reg
}

func (b *Broker) metricsHandler() http.Handler {
	return promhttp.HandlerFor(b.newRegistry(), promhttp.HandlerOpts{ErrorLog: nil})
}

// readyz is 200 when this broker can take agents: storage answers, Raft
// knows a leader, and the broker routes by the cluster's storage ring.
func (b *Broker) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), 2*time.Second)
	defer cancel()
	var problems []string
	if err := b.store.Ping(ctx); err != nil {
		problems = append(problems, "storage: "+err.Error())
	}
	if id, _ := b.cluster.node.Leader(); id == "" {
		problems = append(problems, "raft: no leader known")
	}
	select {
	case <-b.cluster.ready:
	default:
		problems = append(problems, "the cluster's storage ring is not applied yet")
	}
	w.Header().Set("Content-Type", "application/json")
	if len(problems) > 0 {
		w.WriteHeader(http.StatusServiceUnavailable)
		_ = json.NewEncoder(w).Encode(map[string]any{"status": "not ready", "problems": problems})
		return
	}
	_ = json.NewEncoder(w).Encode(map[string]string{"status": "ready", "node": b.cfg.NodeID})
}
