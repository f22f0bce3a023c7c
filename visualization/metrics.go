package visualization

// The server's own figures on GET /metrics (names monitor_visualization_*,
// docs/metrics.md "Visualization metrics"), with /healthz and /readyz, on
// their own listener, metrics_listen (empty: not served). They are apart
// from the API port because a Prometheus scrape carries no JWT: the routes
// are open, so they belong on an address only the monitoring network
// reaches. Everything is read from the parts' counters at scrape time (the
// live feed, the push hub, the engines) into a registry of this server —
// never the global one — plus the push hub's latency histogram and the Go
// and process collectors.
//
// /healthz is liveness: 200 while the process serves (restarting it does not
// fix a broker outage). /readyz is 200 when the server can show live data:
// at least one broker answers, and the live feed holds an open stream to
// every broker it follows (each broker pushes only what it stored itself,
// so a missing stream is a hole in the live view); 503 with the problems
// otherwise.

import (
	"context"
	"encoding/json"
	"fmt"
	"log/slog"
	"net"
	"net/http"
	"slices"
	"time"

	"github.com/prometheus/client_golang/prometheus"
	promcollectors "github.com/prometheus/client_golang/prometheus/collectors"
	"github.com/prometheus/client_golang/prometheus/promhttp"

	"github.com/monitorhq/monitor/pkg/connlimit"
)

func vdesc(name, help string, labels ...string) *prometheus.Desc {
	return prometheus.NewDesc("monitor_visualization_"+name, help, labels, nil)
}

var (
	descBrokers          = vdesc("brokers", "Brokers the live feed follows.")
	descBrokersConnected = vdesc("brokers_connected", "Followed brokers with an open Subscribe stream.")
	descLiveBatches      = vdesc("live_batches_total", "StoredBatch messages received from the brokers.")
	descLiveSnapshots    = vdesc("live_snapshots_total", "Snapshots delivered to the observers (push, engines).")
	descLiveSamples      = vdesc("live_samples_total", "Samples delivered to the observers.")
	descLiveBrokerDrops  = vdesc("live_broker_dropped_total", "Batches the brokers dropped for this server (it read too slowly); caught up by query.")
	descLiveLate         = vdesc("live_late_total", "Snapshots not newer than their host's last one: not delivered.")
	descLiveInvalid      = vdesc("live_invalid_total", "Metrics whose series could not be keyed: skipped.")
	descLiveReconnects   = vdesc("live_reconnects_total", "Broker streams re-opened after a break.")
	descCatchups         = vdesc("live_catchups_total", "Catch-up pulls run after a reconnect.")
	descCatchupSnapshots = vdesc("live_catchup_snapshots_total", "Snapshots delivered by catch-up pulls.")
	descCatchupErrors    = vdesc("live_catchup_errors_total", "Host queries of a catch-up that failed.")
	descPushClients      = vdesc("push_clients", "Connected live-update clients, by transport.", "transport")
	descPushPublished    = vdesc("push_published_total", "Messages queued to clients.")
	descPushFolded       = vdesc("push_folded_total", "Messages that found a client's queue full and were folded into the latest value.")
	descPushReplaced     = vdesc("push_replaced_total", "Folded values overwritten by a newer one before sending.")
	descPushDropped      = vdesc("push_dropped_total", "Folded values discarded at the pending limit.")
	descPushGaps         = vdesc("push_gaps_total", "Gap markers sent to clients that fell behind.")
	descTopKUpdates      = vdesc("topk_updates_total", "Values accepted by the Top-K engine.")
	descTopKRefused      = vdesc("topk_refused_total", "Values the Top-K engine refused, by reason.", "reason")
	descTopKEvents       = vdesc("topk_events_total", "Top-K change events published.")
	descAnomalySeries    = vdesc("anomaly_series", "Series the anomaly detector holds.")
	descAnomalyActive    = vdesc("anomaly_active", "Active anomalies.")
	descAnomalyPoints    = vdesc("anomaly_points_total", "Values scored (or warming up) by the anomaly detector.")
	descAnomalySkipped   = vdesc("anomaly_skipped_total", "NaN/Inf values the anomaly detector ignored.")
	descAnomalyDropped   = vdesc("anomaly_series_dropped_total", "Detector series dropped, by reason (evicted over the limit, expired idle).", "reason")
	descAnomalies        = vdesc("anomalies_total", "Anomalies started.")
	descAlertRules       = vdesc("alert_rules", "Alert rules loaded.")
	descAlerts           = vdesc("alerts", "Alerts pending, firing or stale.")
	descAlertEvals       = vdesc("alert_evaluations_total", "Alert rule evaluations.")
	descAlertsFired      = vdesc("alerts_fired_total", "Alerts that started firing.")
	descAlertsResolved   = vdesc("alerts_resolved_total", "Alerts resolved.")
	descAlertRefreshErrs = vdesc("alert_rule_refresh_errors_total", "Failed reloads of the alert rules from the brokers.")
	descAlertInvalid     = vdesc("alert_rules_invalid_total", "Stored alert rules refused by validation (skipped).")
	descAlertWebhooks    = vdesc("alert_webhooks_total", "Alert webhook deliveries, by result (sent, retry, failed, dropped).", "result")
	descHTTPConns        = vdesc("http_connections", "Open connections of the HTTP listener (WebSockets included).")
	descHTTPConnsRefused = vdesc("http_connections_refused_total", "Connections closed at accept, by limit (max_connections, max_connections_per_ip).", "reason")
	descLoginRefused     = vdesc("login_refused_total", "Refused logins and token refreshes, by reason (rate limit per address or per user, bad credentials, bad refresh token).", "reason")
)

var allVizDescs = []*prometheus.Desc{descBrokers, descBrokersConnected, descLiveBatches, descLiveSnapshots, descLiveSamples,
	descLiveBrokerDrops, descLiveLate, descLiveInvalid, descLiveReconnects, descCatchups, descCatchupSnapshots,
	descCatchupErrors, descPushClients, descPushPublished, descPushFolded, descPushReplaced, descPushDropped, descPushGaps,
	descTopKUpdates, descTopKRefused, descTopKEvents, descAnomalySeries, descAnomalyActive, descAnomalyPoints,
	descAnomalySkipped, descAnomalyDropped, descAnomalies, descAlertRules, descAlerts, descAlertEvals, descAlertsFired,
	descAlertsResolved, descAlertRefreshErrs, descAlertInvalid, descAlertWebhooks, descHTTPConns, descHTTPConnsRefused,
	descLoginRefused}

// pushTransports are always exposed, also at 0 clients, so a dashboard
// has a series from the start.
var pushTransports = []string{"websocket", "webtransport"}

type vizCollector struct{ s *Server }

func (vizCollector) Describe(ch chan<- *prometheus.Desc) {
	for _, d := range allVizDescs {
		ch <- d
	}
}

func (c vizCollector) Collect(ch chan<- prometheus.Metric) {
	counter := func(d *prometheus.Desc, v uint64, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.CounterValue, float64(v), labels...)
	}
	gauge := func(d *prometheus.Desc, v int, labels ...string) {
		ch <- prometheus.MustNewConstMetric(d, prometheus.GaugeValue, float64(v), labels...)
	}
	st := c.s.Stats()
	l := st.Live
	gauge(descBrokers, l.Brokers)
	gauge(descBrokersConnected, l.Connected)
	counter(descLiveBatches, l.Batches)
	counter(descLiveSnapshots, l.Snapshots)
	counter(descLiveSamples, l.Samples)
	counter(descLiveBrokerDrops, l.BrokerDropped)
	counter(descLiveLate, l.Late)
	counter(descLiveInvalid, l.Invalid)
	counter(descLiveReconnects, l.Reconnects)
	counter(descCatchups, l.Catchups)
	counter(descCatchupSnapshots, l.CatchupSnapshots)
	counter(descCatchupErrors, l.CatchupErrors)

	p := st.Push
	transports := slices.Clone(pushTransports)
	for t := range p.Transports {
		if !slices.Contains(transports, t) {
			transports = append(transports, t)
		}
	}
	for _, t := range transports {
		gauge(descPushClients, p.Transports[t], t)
	}
	counter(descPushPublished, p.Published)
	counter(descPushFolded, p.Folded)
	counter(descPushReplaced, p.Replaced)
	counter(descPushDropped, p.Dropped)
	counter(descPushGaps, p.Gaps)

	e := c.s.engines
	tk := e.topk.Stats()
	counter(descTopKUpdates, tk.Updates)
	counter(descTopKRefused, tk.Invalid, "invalid")
	counter(descTopKRefused, tk.Stale, "stale")
	counter(descTopKRefused, tk.MetricsFull, "metrics_full")
	counter(descTopKEvents, tk.Events)

	an := e.anomaly.Stats()
	gauge(descAnomalySeries, an.Series)
	gauge(descAnomalyActive, an.Active)
	counter(descAnomalyPoints, an.Points)
	counter(descAnomalySkipped, an.Skipped)
	counter(descAnomalyDropped, an.Evicted, "evicted")
	counter(descAnomalyDropped, an.Expired, "expired")
	counter(descAnomalies, an.Anomalies)

	al := e.alerting.Stats()
	gauge(descAlertRules, al.Rules)
	gauge(descAlerts, al.Alerts)
	counter(descAlertEvals, al.Evaluations)
	counter(descAlertsFired, al.Fired)
	counter(descAlertsResolved, al.Resolved)
	counter(descAlertRefreshErrs, al.RefreshErrors)
	counter(descAlertInvalid, al.InvalidStored)
	counter(descAlertWebhooks, al.WebhookSent, "sent")
	counter(descAlertWebhooks, al.WebhookRetries, "retry")
	counter(descAlertWebhooks, al.WebhookFailed, "failed")
	counter(descAlertWebhooks, al.WebhookDropped, "dropped")

	gauge(descHTTPConns, st.HTTP.Open)
	counter(descHTTPConnsRefused, st.HTTP.RefusedMax, connlimit.ReasonMax)
	counter(descHTTPConnsRefused, st.HTTP.RefusedPerIP, connlimit.ReasonPerIP)
	counter(descLoginRefused, st.Auth.LimitedAddr, "rate_limited_addr")
	counter(descLoginRefused, st.Auth.LimitedUser, "rate_limited_user")
	counter(descLoginRefused, st.Auth.BadCredentials, "bad_credentials")
	counter(descLoginRefused, st.Auth.BadRefresh, "bad_refresh")
}

// opsServer serves /metrics, /healthz and /readyz on metrics_listen. A nil
// *opsServer (metrics_listen empty) serves nothing.
type opsServer struct {
	ln  net.Listener
	srv *http.Server
	log *slog.Logger
}

// newOps builds the server's registry and binds metrics_listen; it returns
// nil when metrics_listen is empty.
func newOps(s *Server) (*opsServer, error) {
	if s.cfg.MetricsListen == "" {
		return nil, nil
	}
	reg := prometheus.NewRegistry()
	if err := reg.Register(vizCollector{s}); err != nil {
		return nil, fmt.Errorf("register the server's metrics: %w", err)
	}
	if err := reg.Register(s.hub.LatencyHistogram()); err != nil {
		return nil, fmt.Errorf("register the push latency histogram: %w", err)
	}
	if err := reg.Register(promcollectors.NewGoCollector()); err != nil {
		return nil, fmt.Errorf("register the Go collector: %w", err)
	}
	if err := reg.Register(promcollectors.NewProcessCollector(promcollectors.ProcessCollectorOpts{})); err != nil {
		return nil, fmt.Errorf("register the process collector: %w", err)
	}
	mux := http.NewServeMux()
	mux.Handle("GET /metrics", promhttp.HandlerFor(reg, promhttp.HandlerOpts{}))
	mux.HandleFunc("GET /healthz", func(w http.ResponseWriter, _ *http.Request) {
		writeOpsJSON(w, http.StatusOK, map[string]string{"status": "ok"})
	})
	mux.HandleFunc("GET /readyz", s.readyz)
	ln, err := net.Listen("tcp", s.cfg.MetricsListen)
	if err != nil {
		return nil, fmt.Errorf("listen on metrics_listen %s: %w", s.cfg.MetricsListen, err)
	}
	return &opsServer{ln: ln, log: s.logger, srv: &http.Server{
		Handler: mux, ReadHeaderTimeout: readHeaderTimeout, ReadTimeout: readTimeout,
		WriteTimeout: 10 * time.Second, IdleTimeout: idleTimeout, MaxHeaderBytes: maxHeaderBytes,
	}}, nil
}

// serve serves until ctx ends, then shuts down (bounded). A failure to
// serve is logged: the metrics port is not worth stopping the server for.
func (o *opsServer) serve(ctx context.Context) {
	if o == nil {
		return
	}
	errc := make(chan error, 1)
	go func() { errc <- o.srv.Serve(o.ln) }()
	select {
	case err := <-errc:
		o.log.Error("metrics_listen stopped serving", "addr", o.ln.Addr().String(), "err", err)
		return
	case <-ctx.Done():
	}
	sctx, cancel := context.WithTimeout(context.WithoutCancel(ctx), 2*time.Second)
	defer cancel()
	if err := o.srv.Shutdown(sctx); err != nil {
		_ = o.srv.Close()
	}
	<-errc // http.ErrServerClosed
}

// MetricsAddr returns the bound metrics_listen address, or "" when
// metrics_listen is empty.
func (s *Server) MetricsAddr() string {
	if s.ops == nil {
		return ""
	}
	return s.ops.ln.Addr().String()
}

// readyz answers whether the server can show live data (see the top of the
// file).
func (s *Server) readyz(w http.ResponseWriter, r *http.Request) {
	ctx, cancel := context.WithTimeout(r.Context(), min(s.cfg.BrokerTimeout.D(), healthTimeout))
	defer cancel()
	var problems []string
	reachable := s.brokers.Reachable(ctx)
	if reachable == 0 {
		problems = append(problems, fmt.Sprintf("none of the %d brokers is reachable", s.brokers.Len()))
	}
	live := s.feed.Stats()
	switch {
	case live.Brokers == 0:
		problems = append(problems, "the live feed follows no broker")
	case live.Connected < live.Brokers:
		problems = append(problems, fmt.Sprintf("the live feed has a stream to %d of %d brokers", live.Connected, live.Brokers))
	}
	if len(problems) > 0 {
		writeOpsJSON(w, http.StatusServiceUnavailable, map[string]any{"status": "not ready", "problems": problems})
		return
	}
	writeOpsJSON(w, http.StatusOK, map[string]any{"status": "ready", "brokers": reachable, "streams": live.Connected})
}

func writeOpsJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.Header().Set("Cache-Control", "no-store")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}
