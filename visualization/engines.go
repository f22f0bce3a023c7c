package visualization

// The engines fed by the live path: Top-K (internal/topk, C++ under cgo),
// anomaly analysis and trends (internal/analysis), and alert rules
// (internal/alerting, rules kept in the brokers' Raft control plane). Each
// observes every stored snapshot, publishes its events to the push hub
// and serves its routes behind the API's auth.

import (
	"context"
	"fmt"
	"log/slog"
	"net/http"
	"strings"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
	"github.com/monitorhq/monitor/visualization/internal/alerting"
	"github.com/monitorhq/monitor/visualization/internal/analysis"
	"github.com/monitorhq/monitor/visualization/internal/api"
	"github.com/monitorhq/monitor/visualization/internal/brokerclient"
	"github.com/monitorhq/monitor/visualization/internal/live"
	"github.com/monitorhq/monitor/visualization/internal/topk"
)

type engines struct {
	topk     *topk.Engine
	anomaly  *analysis.Detector
	alerting *alerting.Engine
}

func newEngines(cfg Config, brokers *brokerclient.Client, publish func(kind string, payload any), logger *slog.Logger) (*engines, error) {
	tk, err := topk.New(topk.Options{K: cfg.TopK.K, TTL: cfg.TopK.TTL.D(), ShmName: cfg.TopK.ShmName, Publish: publish})
	if err != nil {
		return nil, fmt.Errorf("top-k engine: %w", err)
	}
	det, err := analysis.New(analysis.Options{Publish: publish})
	if err != nil {
		_ = tk.Close()
		return nil, fmt.Errorf("anomaly detector: %w", err)
	}
	al, err := alerting.New(alerting.Options{Store: ruleStore{brokers}, Publish: publish, StoreTimeout: cfg.BrokerTimeout.D(),
		Logger: logger.With("component", "alerting")})
	if err != nil {
		_ = tk.Close()
		return nil, fmt.Errorf("alerting: %w", err)
	}
	logger.Info("engines ready", "topk", tk.Implementation(), "topk_shm", cfg.TopK.ShmName)
	return &engines{topk: tk, anomaly: det, alerting: al}, nil
}

func (e *engines) observers() []live.Observer {
	return []live.Observer{e.topk, e.anomaly, e.alerting}
}

func (e *engines) routes(brokers *brokerclient.Client, timeout time.Duration) []api.Route {
	trend := analysis.NewTrend(rangeReader{brokers}, nil, timeout)
	return []api.Route{
		{Method: http.MethodGet, Path: "/api/v1/topk", Handler: e.topk.HandleTopK},
		{Method: http.MethodGet, Path: "/api/v1/anomalies", Handler: e.anomaly.HandleAnomalies},
		{Method: http.MethodGet, Path: "/api/v1/hosts/{id}/trend", Handler: trend.Handle},
		{Method: http.MethodGet, Path: "/api/v1/alerts", Handler: e.alerting.HandleList},
		{Method: http.MethodPost, Path: "/api/v1/alerts/rules", Admin: true, Handler: e.alerting.HandleCreate},
		{Method: http.MethodPut, Path: "/api/v1/alerts/rules/{id}", Admin: true, Handler: e.alerting.HandleReplace},
		{Method: http.MethodDelete, Path: "/api/v1/alerts/rules/{id}", Admin: true, Handler: e.alerting.HandleDelete},
	}
}

// run runs the engines' housekeeping (Top-K expiry, rule reloads, stale
// hosts, webhooks) until ctx ends.
func (e *engines) run(ctx context.Context) {
	done := make(chan struct{})
	go func() {
		defer close(done)
		_ = e.alerting.Run(ctx)
	}()
	_ = e.topk.Run(ctx)
	<-done
}

func (e *engines) close() error { return e.topk.Close() }

// ruleStore keeps alert rules in the brokers' control plane.
type ruleStore struct{ c *brokerclient.Client }

func (r ruleStore) List(ctx context.Context) ([]*monitorpb.AlertRule, error) {
	return r.c.ListAlertRules(ctx)
}

func (r ruleStore) Put(ctx context.Context, rule *monitorpb.AlertRule) error {
	_, err := r.c.PutAlertRule(ctx, rule)
	return err
}

func (r ruleStore) Delete(ctx context.Context, id string) (bool, error) {
	return r.c.RemoveAlertRule(ctx, id)
}

// rangeReader reads one series' raw points for the trend endpoint.
type rangeReader struct{ c *brokerclient.Client }

func (r rangeReader) Range(ctx context.Context, hostID, series string, from, to int64) ([]analysis.Point, error) {
	name, _, _ := strings.Cut(series, "{")
	resp, err := r.c.QueryRange(ctx, &monitorpb.QueryRangeRequest{HostId: hostID, Names: []string{name}, From: from, To: to,
		Resolution: monitorpb.Resolution_RESOLUTION_AUTO})
	if err != nil {
		return nil, err
	}
	var out []analysis.Point
	for _, s := range resp.GetSeries() {
		if key, err := storage.SeriesKey(s.GetName(), s.GetLabels()); err != nil || key != series {
			continue
		}
		for _, p := range s.GetPoints() {
			out = append(out, analysis.Point{TS: p.GetTimestamp(), Value: p.GetValue()})
		}
		break
	}
	return out, nil
}
