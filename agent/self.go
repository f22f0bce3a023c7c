package agent

import (
	"encoding/json"
	"math"
	"net/http"
	"os"
	"slices"
	"strconv"
	"strings"
	"syscall"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promcollectors "github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// The agent's own figures go two ways: as Prometheus metrics on /metrics
// (names monitor_agent_*, docs/agent.md) and as agent.* metrics in every
// snapshot it sends (docs/metrics.md). Both read the same counters (Stats);
// only the two histograms are fed directly.

// snapshotDropReasons and metricDropReasons are every reason, so each
// series exists (at 0) from the first snapshot.
var (
	snapshotDropReasons = []string{DropRingFull, DropRingBytes, DropSpoolFull, DropSpoolCorrupt, DropShutdown}
	metricDropReasons   = []string{DropLowPriority, DropNormPriority}
)

func (a *Agent) registerMetrics() {
	a.collectTime = prometheus.NewHistogramVec(prometheus.HistogramOpts{
		Name:    "monitor_agent_collector_duration_seconds",
		Help:    "Time each collector call took (calls that overran their deadline included, when they returned).",
		Buckets: []float64{.0001, .00025, .0005, .001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5},
	}, []string{"collector"})
	a.sendLatency = prometheus.NewHistogram(prometheus.HistogramOpts{
		Name:    "monitor_agent_send_latency_seconds",
		Help:    "Time from sending a batch to its acknowledgement by the broker (stored).",
		Buckets: []float64{.001, .0025, .005, .01, .025, .05, .1, .25, .5, 1, 2.5, 5, 10, 30},
	})
	a.reg.MustRegister(a.collectTime, a.sendLatency, statsCollector{a},
		promcollectors.NewGoCollector(), promcollectors.NewProcessCollector(promcollectors.ProcessCollectorOpts{}))
}

func (a *Agent) observeCollect(name string, took time.Duration) {
	a.collectTime.WithLabelValues(name).Observe(took.Seconds())
}

func (a *Agent) observeAck(latency time.Duration) {
	a.lastLatency.Store(int64(latency))
	a.sendLatency.Observe(latency.Seconds())
}

// statsCollector exposes Stats as Prometheus metrics at scrape time.
type statsCollector struct{ a *Agent }

var (
	descCollected      = desc("snapshots_collected_total", "Snapshots built and queued.")
	descSent           = desc("snapshots_sent_total", "Snapshots sent to a broker, resends included.")
	descAcked          = desc("snapshots_acked_total", "Snapshots a broker acknowledged as stored.")
	descRejected       = desc("rejected_items_total", "Items a broker refused (listed in its acks).")
	descDropped        = desc("dropped_snapshots_total", "Snapshots lost, by reason.", "reason")
	descDroppedMetrics = desc("dropped_metrics_total", "Metrics stripped from queued snapshots under the ring's byte budget, by reason.", "reason")
	descEmpty          = desc("empty_rounds_total", "Rounds in which no collector returned metrics.")
	descRingDepth      = desc("ring_depth", "Snapshots in the ring between collection and the spool.")
	descRingCap        = desc("ring_capacity", "Slots of the ring.")
	descRingBytes      = desc("ring_bytes", "Encoded size of the snapshots in the ring.")
	descSpoolRecords   = desc("spool_snapshots", "Snapshots in the spool not yet acknowledged.")
	descSpoolBytes     = desc("spool_bytes", "Size of the spool's segments.")
	descSpoolSegments  = desc("spool_segments", "Segments of the spool.")
	descSpoolMemory    = desc("spool_memory_segments", "Spool segments held in memory (no data_dir, or after disk errors).")
	descSpoolErrors    = desc("spool_write_errors_total", "Spool writes or fsyncs that failed.")
	descSpoolReplayed  = desc("spool_replayed_snapshots", "Unacknowledged snapshots found in the spool at start.")
	descBatches        = desc("batches_sent_total", "Batches sent on the ingest stream, resends included.")
	descReconnects     = desc("reconnects_total", "Broker connections lost or refused.")
	descMoves          = desc("broker_moves_total", "Streams handed over to another broker after a change of the cluster's broker list.")
	descFlow           = desc("flow_controls_total", "Flow-control messages from brokers.")
	descConnected      = desc("connected", "1 while an ingest stream to a broker is up.", "broker")
	descErrors         = desc("collector_errors_total", "Collector calls that returned an error.", "collector")
	descTimeouts       = desc("collector_timeouts_total", "Collector calls that missed collector_timeout.", "collector")
	descSkips          = desc("collector_skips_total", "Rounds a collector was skipped because its previous call still ran.", "collector")
)

func desc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("monitor_agent_"+name, help, labels, nil)
}

func (statsCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range []*prometheus.Desc{descCollected, descSent, descAcked, descRejected, descDropped, descDroppedMetrics,
		descEmpty, descRingDepth, descRingCap, descRingBytes, descSpoolRecords, descSpoolBytes, descSpoolSegments,
		descSpoolMemory, descSpoolErrors, descSpoolReplayed, descBatches, descReconnects, descMoves, descFlow, descConnected,
		descErrors, descTimeouts, descSkips} {
		ch <- d
	}
}

func (c statsCollector) Collect(ch chan<- prometheus.Metric) {
	s := c.a.Stats()
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v float64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, v, labels...)
	}
	counter(descCollected, s.Collected)
	counter(descSent, s.Sent)
	counter(descAcked, s.Acked)
	counter(descRejected, s.Rejected)
	for _, r := range snapshotDropReasons {
		counter(descDropped, s.Dropped[r], r)
	}
	for _, r := range metricDropReasons {
		counter(descDroppedMetrics, s.DroppedMetrics[r], r)
	}
	counter(descEmpty, s.EmptyRounds)
	gauge(descRingDepth, float64(s.RingDepth))
	gauge(descRingCap, float64(c.a.queue.Cap()))
	gauge(descRingBytes, float64(s.RingBytes))
	gauge(descSpoolRecords, float64(s.Spool.Records))
	gauge(descSpoolBytes, float64(s.Spool.Bytes))
	gauge(descSpoolSegments, float64(s.Spool.Segments))
	gauge(descSpoolMemory, float64(s.Spool.MemorySegments))
	counter(descSpoolErrors, s.Spool.WriteErrors)
	gauge(descSpoolReplayed, float64(s.Spool.Replayed))
	counter(descBatches, s.BatchesSent)
	counter(descReconnects, s.Reconnects)
	counter(descMoves, s.Moves)
	counter(descFlow, s.FlowControls)
	connected := 0.0
	if s.Connected {
		connected = 1
	}
	gauge(descConnected, connected, s.Broker)
	for name, cs := range s.Collectors {
		counter(descErrors, cs.Errors, name)
		counter(descTimeouts, cs.Timeouts, name)
		counter(descSkips, cs.Skips, name)
	}
}

// selfMetrics appends the agent's own figures (agent.*, docs/metrics.md)
// to a snapshot's metrics.
func (a *Agent) selfMetrics(out []*monitorpb.Metric) []*monitorpb.Metric {
	s := a.Stats()
	h, n, low := monitorpb.Priority_PRIORITY_HIGH, monitorpb.Priority_PRIORITY_NORMAL, monitorpb.Priority_PRIORITY_LOW
	m := func(name, unit string, prio monitorpb.Priority, v float64, labels ...string) {
		metric := &monitorpb.Metric{Name: name, Value: v, Unit: unit, Priority: prio}
		if len(labels) == 2 {
			metric.Labels = map[string]string{labels[0]: labels[1]}
		}
		out = append(out, metric)
	}
	m("agent.collected_total", "", n, float64(s.Collected))
	m("agent.sent_total", "", low, float64(s.Sent))
	m("agent.acked_total", "", n, float64(s.Acked))
	m("agent.rejected_total", "", n, float64(s.Rejected))
	for _, r := range snapshotDropReasons {
		m("agent.dropped_snapshots_total", "", h, float64(s.Dropped[r]), "reason", r)
	}
	for _, r := range metricDropReasons {
		m("agent.dropped_metrics_total", "", h, float64(s.DroppedMetrics[r]), "reason", r)
	}
	m("agent.ring_depth", "", n, float64(s.RingDepth))
	m("agent.ring_bytes", "bytes", low, float64(s.RingBytes))
	m("agent.spool_snapshots", "", n, float64(s.Spool.Records))
	m("agent.spool_bytes", "bytes", n, float64(s.Spool.Bytes))
	m("agent.spool_segments", "", low, float64(s.Spool.Segments))
	m("agent.reconnects_total", "", n, float64(s.Reconnects))
	if s.SendLatency > 0 {
		m("agent.send_latency_seconds", "seconds", n, secondsAt(s.SendLatency, 5))
	}
	names := make([]string, 0, len(s.Collectors))
	for name := range s.Collectors {
		names = append(names, name)
	}
	slices.Sort(names)
	for _, name := range names {
		cs := s.Collectors[name]
		m("agent.collector_duration_seconds", "seconds", low, secondsAt(cs.Last, 5), "collector", name)
		m("agent.collector_errors_total", "", n, float64(cs.Errors), "collector", name)
		m("agent.collector_timeouts_total", "", n, float64(cs.Timeouts), "collector", name)
		m("agent.collector_skips_total", "", n, float64(cs.Skips), "collector", name)
	}
	if rss, ok := a.rss(); ok {
		m("agent.rss_bytes", "bytes", n, float64(rss))
	}
	var ru syscall.Rusage
	if syscall.Getrusage(syscall.RUSAGE_SELF, &ru) == nil {
		cpu := time.Duration(ru.Utime.Nano() + ru.Stime.Nano())
		m("agent.cpu_seconds_total", "seconds", n, secondsAt(cpu, 6)) // getrusage counts microseconds
	}
	return out
}

// secondsAt is d in seconds with at most decimals digits after the point
// (10 µs for timings taken around I/O, whose scheduling noise is larger;
// 1 µs for getrusage, its resolution): the nanosecond digits are noise that
// costs the compact layout 3-8 bytes per sample and tells nobody anything.
func secondsAt(d time.Duration, decimals int) float64 {
	p := math.Pow10(decimals)
	return math.Round(d.Seconds()*p) / p
}

// rss reads the agent's resident set size from <proc>/self/statm ("size
// resident shared …", in pages).
func (a *Agent) rss() (uint64, bool) {
	b, err := os.ReadFile(a.cfg.ProcPath + "/self/statm")
	if err != nil {
		return 0, false
	}
	f := strings.Fields(string(b))
	if len(f) < 2 {
		return 0, false
	}
	pages, err := strconv.ParseUint(f[1], 10, 64)
	return pages * uint64(os.Getpagesize()), err == nil
}

// httpHandler serves /metrics and /healthz.
func (a *Agent) httpHandler() http.Handler {
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(a.reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", a.healthz)
	return mux
}

// healthz answers 200 while the collection loop runs on schedule (a round
// finished within three intervals, or the agent started less than three
// intervals ago), 503 otherwise; the body says why, and how delivery goes.
func (a *Agent) healthz(w http.ResponseWriter, _ *http.Request) {
	s := a.Stats()
	limit := 3 * a.cfg.Interval.D()
	last := time.Unix(0, a.lastRound.Load())
	status, code := "ok", http.StatusOK
	since := a.started
	if a.lastRound.Load() != 0 {
		since = last
	}
	if time.Since(since) > limit {
		status, code = "collection stalled", http.StatusServiceUnavailable
	}
	body := map[string]any{
		"status":          status,
		"host_id":         a.cfg.HostID,
		"connected":       s.Connected,
		"broker":          s.Broker,
		"spool_snapshots": s.Spool.Records,
		"ring_depth":      s.RingDepth,
		"collected":       s.Collected,
		"acked":           s.Acked,
	}
	if a.lastRound.Load() != 0 {
		body["last_round"] = last.UTC().Format(time.RFC3339)
	}
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(body)
}
