package topk

import (
	"encoding/json"
	"fmt"
	"net/http"
	"strconv"
	"strings"

	"github.com/monitorhq/monitor/pkg/storage"
)

// Observe feeds one stored snapshot from the live path (it satisfies
// live.Observer; live.Sample is storage.Sample): every sample whose series
// is selected by Options.Metrics becomes an update of that series for
// hostID, and the shared segment is published once for the snapshot.
func (e *Engine) Observe(hostID string, labels map[string]string, ts int64, samples []storage.Sample) {
	e.mu.Lock()
	now := e.opts.Now()
	var pend []uint32
	for _, s := range samples {
		if e.selected(s.Series) {
			pend = e.apply(s.Series, hostID, s.Value, ts, now.UnixNano(), pend)
		}
	}
	pend = e.lazySweep(now, pend)
	e.core.publish(now.UnixNano())
	evs := e.pendingEvents(pend, now)
	e.mu.Unlock()
	e.send(evs)
}

func (e *Engine) selected(series string) bool {
	if len(e.opts.Metrics) == 0 {
		return true
	}
	for _, p := range e.opts.Metrics {
		if strings.HasPrefix(series, p) {
			return true
		}
	}
	return false
}

// TopKResponse is the body of GET /api/v1/topk?metric=M.
type TopKResponse struct {
	Metric  string  `json:"metric"`
	K       int     `json:"k"`
	Entries []Entry `json:"entries"` // best first; empty for an unknown metric
}

// MetricsResponse is the body of GET /api/v1/topk without a metric.
type MetricsResponse struct {
	K       int      `json:"k"`
	Metrics []string `json:"metrics"` // metrics with at least one live host, sorted
}

// HandleTopK serves GET /api/v1/topk?metric=&k= from memory: with a metric,
// its best k entries (k defaults to K, 1..MaxK); without one, the list of
// metrics. A bad k is 400 {"error": ...}; an unknown metric is an empty
// list, not an error (its hosts may just have expired).
func (e *Engine) HandleTopK(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	k := e.opts.K
	if v := q.Get("k"); v != "" {
		n, err := strconv.Atoi(v)
		if err != nil || n < 1 || n > MaxK {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("parameter k=%q: want an integer in [1, %d]", v, MaxK))
			return
		}
		k = n
	}
	metric := q.Get("metric")
	if metric == "" {
		writeJSON(w, http.StatusOK, MetricsResponse{K: e.opts.K, Metrics: nonNil(e.Metrics())})
		return
	}
	if len(metric) > maxMetricLen {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("parameter metric is %d bytes, the limit is %d", len(metric), maxMetricLen))
		return
	}
	writeJSON(w, http.StatusOK, TopKResponse{Metric: metric, K: k, Entries: nonNil(e.Top(metric, k))})
}

func nonNil[T any](s []T) []T {
	if s == nil {
		return []T{}
	}
	return s
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
