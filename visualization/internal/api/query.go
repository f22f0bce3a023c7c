package api

import (
	"fmt"
	"math"
	"net/http"
	"net/url"
	"strconv"
	"strings"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// maxNames bounds the series selectors of one query.
const maxNames = 64

// defaultRange is the range of a query that gives no from.
const defaultRange = time.Hour

// rangeQuery is a parsed GET /api/v1/hosts/{id}/metrics.
type rangeQuery struct {
	hostID   string
	names    []string
	from, to int64 // Unix seconds, inclusive
	step     int64 // seconds; 0 = raw samples
}

// parseRangeQuery reads and checks the parameters; every error names the
// parameter and what is allowed.
func (a *API) parseRangeQuery(id string, q url.Values) (rangeQuery, error) {
	rq := rangeQuery{hostID: id}
	if err := storage.ValidateHostID(id); err != nil {
		return rq, paramErr("host id", "%v", err)
	}
	names, err := parseNames(q["names"])
	if err != nil {
		return rq, err
	}
	rq.names = names

	rq.to = a.cfg.Now().Unix()
	if v := q.Get("to"); v != "" {
		if rq.to, err = parseTime("to", v); err != nil {
			return rq, err
		}
	}
	rq.from = max(0, rq.to-int64(defaultRange/time.Second))
	if v := q.Get("from"); v != "" {
		if rq.from, err = parseTime("from", v); err != nil {
			return rq, err
		}
	}
	if rq.from > rq.to {
		return rq, paramErr("from", "%d is after to %d; from must not be later than to", rq.from, rq.to)
	}
	span := rq.to - rq.from
	if maxSpan := int64(a.cfg.MaxRange / time.Second); span > maxSpan {
		return rq, paramErr("from", "the range %s … %s is %s, longer than max_range %s; ask for a shorter range",
			unixString(rq.from), unixString(rq.to), time.Duration(span)*time.Second, a.cfg.MaxRange)
	}

	// Timestamps are whole seconds and unique per host, so raw samples
	// give at most span+1 points per series; a step gives at most
	// ceil(span/step)+1 (buckets may be aligned to multiples of step).
	maxPoints := int64(a.cfg.MaxPoints)
	minStep := ceilDiv(span, maxPoints-1)
	v := q.Get("step")
	if v == "" {
		// No step: raw samples when they cannot exceed max_points, else
		// the smallest step that fits.
		if span+1 > maxPoints {
			rq.step = minStep
		}
		return rq, nil
	}
	if rq.step, err = parseStep(v); err != nil {
		return rq, err
	}
	points := span + 1
	if rq.step > 0 {
		points = ceilDiv(span, rq.step) + 1
	}
	if points > maxPoints {
		return rq, paramErr("step", "%q over %ds gives up to %d points per series, more than max_points %d; use step=%d (seconds) or more, or a shorter range",
			v, span, points, maxPoints, minStep)
	}
	return rq, nil
}

// parseNames splits the names parameters (repeatable, comma-separated; a
// comma inside {labels} does not split) and checks each selector: a family
// "cpu.usage_percent", an exact series "net.rx_bytes_per_sec{interface=eth0}"
// with labels sorted by name, or a prefix ending in "*".
func parseNames(values []string) ([]string, error) {
	var names []string
	for _, v := range values {
		depth, start := 0, 0
		for i := 0; i <= len(v); i++ {
			if i < len(v) {
				switch v[i] {
				case '{':
					depth++
					continue
				case '}':
					depth--
					continue
				case ',':
					if depth > 0 {
						continue
					}
				default:
					continue
				}
			}
			if n := strings.TrimSpace(v[start:i]); n != "" {
				names = append(names, n)
			}
			start = i + 1
		}
	}
	if len(names) > maxNames {
		return nil, paramErr("names", "%d selectors, the limit is %d", len(names), maxNames)
	}
	for _, n := range names {
		if err := checkSelector(n); err != nil {
			return nil, paramErr("names", "%q: %v; allowed are a metric name (cpu.usage_percent), a series with sorted labels (net.rx_bytes_per_sec{interface=eth0}) or a prefix ending in * (net.*)", n, err)
		}
	}
	return names, nil
}

func checkSelector(n string) error {
	if prefix, ok := strings.CutSuffix(n, "*"); ok {
		family, _, _ := strings.Cut(prefix, "{")
		if family == "" {
			if prefix == "" {
				return nil // "*": every series
			}
			return fmt.Errorf("no metric name before {")
		}
		if strings.ContainsAny(prefix, "*\"\\") {
			return fmt.Errorf("only one trailing * is allowed")
		}
		return storage.ValidateMetricName(family)
	}
	if strings.Contains(n, "{") {
		_, _, err := storage.ParseSeries(n)
		return err
	}
	return storage.ValidateMetricName(n)
}

// parseTime accepts Unix seconds (fractions are cut) or RFC 3339.
func parseTime(name, v string) (int64, error) {
	if sec, err := strconv.ParseInt(v, 10, 64); err == nil {
		if sec < 0 {
			return 0, paramErr(name, "%d is before 1970; use Unix seconds or RFC 3339", sec)
		}
		return sec, nil
	}
	if f, err := strconv.ParseFloat(v, 64); err == nil && !math.IsNaN(f) && !math.IsInf(f, 0) {
		if f < 0 || f > math.MaxInt64/2 {
			return 0, paramErr(name, "%q is out of range; use Unix seconds or RFC 3339", v)
		}
		return int64(f), nil
	}
	t, err := time.Parse(time.RFC3339Nano, v)
	if err != nil {
		return 0, paramErr(name, "%q is not a time; use Unix seconds (1700000000) or RFC 3339 (2023-11-14T22:13:20Z)", v)
	}
	if t.Unix() < 0 {
		return 0, paramErr(name, "%q is before 1970", v)
	}
	return t.Unix(), nil
}

// parseStep accepts whole seconds ("60") or a Go duration of whole seconds
// ("60s", "5m"); 0 means raw samples.
func parseStep(v string) (int64, error) {
	const allowed = "use 0 for raw samples, whole seconds (60) or a duration (60s, 5m)"
	if sec, err := strconv.ParseInt(v, 10, 64); err == nil {
		if sec < 0 {
			return 0, paramErr("step", "%d is negative; %s", sec, allowed)
		}
		return sec, nil
	}
	d, err := time.ParseDuration(v)
	if err != nil {
		return 0, paramErr("step", "%q is not a step; %s", v, allowed)
	}
	if d < 0 {
		return 0, paramErr("step", "%s is negative; %s", d, allowed)
	}
	if d%time.Second != 0 {
		return 0, paramErr("step", "%s is not a whole number of seconds; %s", d, allowed)
	}
	return int64(d / time.Second), nil
}

// ceilDiv is ⌈a/b⌉ for a >= 0, b > 0, without overflow for any b.
func ceilDiv(a, b int64) int64 {
	if a == 0 {
		return 0
	}
	return (a-1)/b + 1
}

func unixString(ts int64) string { return time.Unix(ts, 0).UTC().Format(time.RFC3339) }

type seriesJSON struct {
	Name   string            `json:"name"`
	Labels map[string]string `json:"labels"`
	Unit   string            `json:"unit"`
	Points points            `json:"points"`
}

type metricsBody struct {
	HostID string `json:"host_id"`
	From   int64  `json:"from"`
	To     int64  `json:"to"`
	Step   int64  `json:"step"`
	// Resolution is what the broker read: "raw", "1m" or "1h" (rollups);
	// absent from a broker that does not say.
	Resolution string       `json:"resolution,omitempty"`
	Series     []seriesJSON `json:"series"`
}

// resolutionNames are the JSON names of the broker's resolutions.
var resolutionNames = map[monitorpb.Resolution]string{
	monitorpb.Resolution_RESOLUTION_RAW: "raw",
	monitorpb.Resolution_RESOLUTION_1M:  "1m",
	monitorpb.Resolution_RESOLUTION_1H:  "1h",
}

func (a *API) metrics(w http.ResponseWriter, r *http.Request) {
	rq, err := a.parseRangeQuery(r.PathValue("id"), r.URL.Query())
	if err != nil {
		writeError(w, http.StatusBadRequest, err.Error())
		return
	}
	resp, err := a.brokers.QueryRange(r.Context(), &monitorpb.QueryRangeRequest{
		HostId: rq.hostID, Names: rq.names, From: rq.from, To: rq.to, Step: rq.step,
	})
	if err != nil {
		a.brokerError(w, r, err)
		return
	}
	body := metricsBody{HostID: rq.hostID, From: rq.from, To: rq.to, Step: rq.step, Resolution: resolutionNames[resp.GetResolution()],
		Series: make([]seriesJSON, 0, len(resp.GetSeries()))}
	// The broker may read coarser than asked (rollups over a long range):
	// step then says how far apart the points really are.
	if s := resp.GetStep(); s > body.Step {
		body.Step = s
	}
	for _, s := range resp.GetSeries() {
		body.Series = append(body.Series, seriesJSON{Name: s.GetName(), Labels: nonNil(s.GetLabels()), Unit: s.GetUnit(), Points: s.GetPoints()})
	}
	writeJSON(w, http.StatusOK, body)
}

// points encodes as [[timestamp, value], ...], the compact form charting
// libraries take, without an intermediate [][2]any per point.
type points []*monitorpb.Point

func (ps points) MarshalJSON() ([]byte, error) {
	b := make([]byte, 0, 2+len(ps)*24)
	b = append(b, '[')
	for i, p := range ps {
		v := p.GetValue()
		if math.IsNaN(v) || math.IsInf(v, 0) {
			return nil, fmt.Errorf("the broker returned %v at %d, which JSON cannot carry", v, p.GetTimestamp())
		}
		if i > 0 {
			b = append(b, ',')
		}
		b = append(b, '[')
		b = strconv.AppendInt(b, p.GetTimestamp(), 10)
		b = append(b, ',')
		format := byte('f')
		if abs := math.Abs(v); abs != 0 && (abs < 1e-6 || abs >= 1e21) {
			format = 'e'
		}
		b = strconv.AppendFloat(b, v, format, -1, 64)
		b = append(b, ']')
	}
	return append(b, ']'), nil
}
