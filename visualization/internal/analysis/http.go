package analysis

import (
	"context"
	"encoding/json"
	"errors"
	"fmt"
	"net/http"
	"time"

	"github.com/monitorhq/monitor/pkg/algorithm"
	"github.com/monitorhq/monitor/pkg/storage"
)

// AnomaliesResponse is the body of GET /api/v1/anomalies.
type AnomaliesResponse struct {
	Anomalies []Anomaly `json:"anomalies"`
}

// HandleAnomalies serves GET /api/v1/anomalies?host=&metric=: the active
// anomalies, optionally of one host and of one metric (a series key, a
// metric name matching all its label sets, or a family prefix ending in
// "." such as "cpu.").
func (d *Detector) HandleAnomalies(w http.ResponseWriter, r *http.Request) {
	q := r.URL.Query()
	host, metric := q.Get("host"), q.Get("metric")
	if host != "" {
		if err := storage.ValidateHostID(host); err != nil {
			writeError(w, http.StatusBadRequest, "parameter host: "+err.Error())
			return
		}
	}
	if len(metric) > storage.MaxMetricNameLen*8 {
		writeError(w, http.StatusBadRequest, fmt.Sprintf("parameter metric is %d bytes; too long", len(metric)))
		return
	}
	writeJSON(w, http.StatusOK, AnomaliesResponse{Anomalies: d.Active(host, metric)})
}

// Point is one stored value of a series.
type Point struct {
	TS    int64   // Unix seconds
	Value float64 //
}

// RangeReader reads a host's stored series; the server implements it over
// the broker client. Range returns the points of series (a full series key)
// with from <= TS <= to, oldest first.
type RangeReader interface {
	Range(ctx context.Context, hostID, series string, from, to int64) ([]Point, error)
}

// Trend fits lines over stored history.
type Trend struct {
	reader  RangeReader
	now     func() time.Time
	timeout time.Duration
}

// Trend window limits and default.
const (
	DefaultTrendWindow = time.Hour
	MinTrendWindow     = time.Minute
	MaxTrendWindow     = 7 * 24 * time.Hour
)

// NewTrend returns the trend handler over reader; now nil means time.Now,
// timeout (0: 10 s) bounds one Range call.
func NewTrend(reader RangeReader, now func() time.Time, timeout time.Duration) *Trend {
	if now == nil {
		now = time.Now
	}
	if timeout <= 0 {
		timeout = 10 * time.Second
	}
	return &Trend{reader: reader, now: now, timeout: timeout}
}

// TrendResponse is the body of GET /api/v1/hosts/{id}/trend.
type TrendResponse struct {
	Host           string  `json:"host"`
	Metric         string  `json:"metric"`
	From           int64   `json:"from"` // window start, Unix s
	To             int64   `json:"to"`   // window end (now), Unix s
	Points         int     `json:"points"`
	SlopePerSecond float64 `json:"slope_per_second"`
	SlopePerHour   float64 `json:"slope_per_hour"`
	Intercept      float64 `json:"intercept"` // fitted value at From
	Last           float64 `json:"last"`      // fitted value at To
	R2             float64 `json:"r2"`        // goodness of fit in [0, 1]
}

// Handle serves GET /api/v1/hosts/{id}/trend?metric=&window=: the
// least-squares slope of the series over the last window (a Go duration
// such as "1h" or "30m", or seconds; default 1h, 1m..168h). Bad parameters
// are 400; fewer than two points with distinct timestamps are 422; a
// failed read is 504 on timeout, 502 otherwise.
func (t *Trend) Handle(w http.ResponseWriter, r *http.Request) {
	host := r.PathValue("id")
	if err := storage.ValidateHostID(host); err != nil {
		writeError(w, http.StatusBadRequest, "host id: "+err.Error())
		return
	}
	q := r.URL.Query()
	metric := q.Get("metric")
	if metric == "" {
		writeError(w, http.StatusBadRequest, "parameter metric is required (a series key such as cpu.usage_percent)")
		return
	}
	if err := storage.ValidateSeries(metric); err != nil {
		writeError(w, http.StatusBadRequest, "parameter metric: "+err.Error())
		return
	}
	window := DefaultTrendWindow
	if v := q.Get("window"); v != "" {
		d, err := parseWindow(v)
		if err != nil || d < MinTrendWindow || d > MaxTrendWindow {
			writeError(w, http.StatusBadRequest, fmt.Sprintf("parameter window=%q: want a duration (e.g. 1h, 30m, or seconds) in [%s, %s]", v, MinTrendWindow, MaxTrendWindow))
			return
		}
		window = d
	}
	to := t.now().Unix()
	from := to - int64(window/time.Second)
	ctx, cancel := context.WithTimeout(r.Context(), t.timeout)
	defer cancel()
	pts, err := t.reader.Range(ctx, host, metric, from, to)
	if err != nil {
		code := http.StatusBadGateway
		if errors.Is(err, context.DeadlineExceeded) {
			code = http.StatusGatewayTimeout
		}
		writeError(w, code, fmt.Sprintf("read %s of host %s: %v", metric, host, err))
		return
	}
	xs := make([]float64, 0, len(pts))
	ys := make([]float64, 0, len(pts))
	for _, p := range pts {
		xs = append(xs, float64(p.TS-from)) // relative: keeps precision and makes the intercept the value at From
		ys = append(ys, p.Value)
	}
	fit, err := algorithm.LinearFit(xs, ys)
	if err != nil {
		writeError(w, http.StatusUnprocessableEntity, fmt.Sprintf("trend of %s on host %s over %s: %d points: %v", metric, host, window, len(pts), err))
		return
	}
	writeJSON(w, http.StatusOK, TrendResponse{
		Host: host, Metric: metric, From: from, To: to, Points: fit.N,
		SlopePerSecond: fit.Slope, SlopePerHour: fit.Slope * 3600,
		Intercept: fit.Intercept, Last: fit.Intercept + fit.Slope*float64(to-from), R2: fit.R2,
	})
}

func parseWindow(v string) (time.Duration, error) {
	var secs int64
	if _, err := fmt.Sscanf(v, "%d", &secs); err == nil && fmt.Sprint(secs) == v {
		return time.Duration(secs) * time.Second, nil
	}
	return time.ParseDuration(v)
}

func writeJSON(w http.ResponseWriter, code int, v any) {
	w.Header().Set("Content-Type", "application/json")
	w.WriteHeader(code)
	_ = json.NewEncoder(w).Encode(v)
}

func writeError(w http.ResponseWriter, code int, msg string) {
	writeJSON(w, code, map[string]string{"error": msg})
}
