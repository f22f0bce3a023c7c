// Package analysis flags anomalies in the live stream and fits trends over
// stored history.
//
// Detection is streaming and per (host, series): an EWMA of the values is
// the expected value of the next one, and the residual (value − expected)
// is scored against the standard deviation of the last Window residuals
// (pkg/algorithm's EWMA and MovingStats): z = residual / max(σ, floor),
// floor = MinStdDev + RelMinStdDev·|expected| so a perfectly flat series
// does not divide by zero. After MinPoints values, |z| ≥ Threshold starts
// an anomaly (severity "warning", "critical" from CriticalZ); it ends after
// ExitPoints consecutive values with |z| < ExitThreshold. Residuals of
// anomalous values are kept out of the window, so a spike does not widen
// the band that judges the next values; a level shift still ends, because
// the EWMA moves to the new level. docs/analysis.md has the parameters.
//
// State is bounded: at most MaxSeries detectors, least recently updated
// evicted first, and detectors idle for SeriesTTL dropped; both counted.
// An active anomaly whose detector goes is resolved ("evicted").
//
// Events are published as kind "anomaly" (payload Event) when an anomaly
// starts, changes severity, and ends. GET /api/v1/anomalies lists the
// active ones (HandleAnomalies); GET /api/v1/hosts/{id}/trend fits a
// least-squares line to a host's series over a window read through a
// RangeReader (Trend.Handle).
//
// Concurrency: every method is safe for concurrent use; Observe calls are
// serialised by the caller (the live feed) but may run alongside the
// handlers. The package starts no goroutines.
package analysis

import (
	"container/list"
	"fmt"
	"math"
	"slices"
	"strings"
	"sync"
	"sync/atomic"
	"time"

	"github.com/monitorhq/monitor/pkg/algorithm"
	"github.com/monitorhq/monitor/pkg/storage"
)

// Options configure a Detector; zero fields take the defaults in Defaults.
type Options struct {
	Alpha         float64       // EWMA smoothing factor in (0, 1]; default 0.3
	Window        int           // residuals in the sliding window, ≥ 2; default 30
	MinPoints     int           // values before a series is scored; default 10
	Threshold     float64       // |z| that starts an anomaly; default 4
	CriticalZ     float64       // |z| for severity "critical"; default 8
	ExitThreshold float64       // |z| below which a value counts as normal again; default 2
	ExitPoints    int           // consecutive normal values that end an anomaly; default 3
	MinStdDev     float64       // absolute floor of σ; default 1e-9
	RelMinStdDev  float64       // floor of σ relative to |expected|; default 0.001
	MaxSeries     int           // detectors held at most; default 100000
	SeriesTTL     time.Duration // a detector idle this long is dropped; default 1 h
	// Metrics selects the series analysed by prefix (e.g. "cpu.",
	// "mem.used_percent"); empty: all.
	Metrics []string
	// Publish receives "anomaly" events; nil: none. Called without the
	// detector's lock held; it must not block for long.
	Publish func(kind string, payload any)
	// Now is the clock for idle eviction; nil means time.Now.
	Now func() time.Time
}

// Defaults are the values zero Options fields take.
var Defaults = Options{
	Alpha: 0.3, Window: 30, MinPoints: 10, Threshold: 4, CriticalZ: 8, ExitThreshold: 2, ExitPoints: 3,
	MinStdDev: 1e-9, RelMinStdDev: 0.001, MaxSeries: 100_000, SeriesTTL: time.Hour,
}

// Severity grades an anomaly.
type Severity string

// Severities.
const (
	Warning  Severity = "warning"
	Critical Severity = "critical"
)

// Anomaly is one active (or just ended) anomaly of a host's series.
type Anomaly struct {
	Host     string   `json:"host"`
	Series   string   `json:"series"`
	Value    float64  `json:"value"`    // latest value
	Expected float64  `json:"expected"` // EWMA before the latest value
	Z        float64  `json:"z"`        // z-score of the latest value
	MaxZ     float64  `json:"max_z"`    // largest |z| since it started
	Started  int64    `json:"started"`  // timestamp (Unix s) of the first anomalous value
	Updated  int64    `json:"updated"`  // timestamp of the latest value
	Severity Severity `json:"severity"`
}

// Event states.
const (
	StateStarted  = "started"
	StateUpdated  = "updated" // severity changed
	StateResolved = "resolved"
	StateEvicted  = "evicted" // the detector was dropped (idle or over MaxSeries)
)

// Event is the payload of an "anomaly" event.
type Event struct {
	State   string  `json:"state"`
	Anomaly Anomaly `json:"anomaly"`
}

// Stats counts the detector's work.
type Stats struct {
	Series    int    `json:"series"`    // detectors held
	Active    int    `json:"active"`    // active anomalies
	Points    uint64 `json:"points"`    // values scored or warming up
	Skipped   uint64 `json:"skipped"`   // NaN/Inf values ignored
	Evicted   uint64 `json:"evicted"`   // detectors dropped over MaxSeries
	Expired   uint64 `json:"expired"`   // detectors dropped after SeriesTTL idle
	Anomalies uint64 `json:"anomalies"` // anomalies started
}

type key struct{ host, series string }

type series struct {
	key      key
	ewma     algorithm.EWMA
	resid    *algorithm.MovingStats
	n        int
	seen     time.Time // engine clock at the last value, for idle eviction
	active   *Anomaly
	normalRn int // consecutive normal values while active
	elem     *list.Element
}

// Detector runs the streaming detection.
type Detector struct {
	opts Options

	mu     sync.Mutex
	series map[key]*series
	lru    *list.List // front: most recently updated
	active map[key]*series

	points, skipped, evicted, expired, started atomic.Uint64
}

// New returns a detector; invalid options are an error naming the field.
func New(opts Options) (*Detector, error) {
	d := Defaults
	if opts.Alpha == 0 {
		opts.Alpha = d.Alpha
	}
	if opts.Window == 0 {
		opts.Window = d.Window
	}
	if opts.MinPoints == 0 {
		opts.MinPoints = d.MinPoints
	}
	if opts.Threshold == 0 {
		opts.Threshold = d.Threshold
	}
	if opts.CriticalZ == 0 {
		opts.CriticalZ = d.CriticalZ
	}
	if opts.ExitThreshold == 0 {
		opts.ExitThreshold = d.ExitThreshold
	}
	if opts.ExitPoints == 0 {
		opts.ExitPoints = d.ExitPoints
	}
	if opts.MinStdDev == 0 {
		opts.MinStdDev = d.MinStdDev
	}
	if opts.RelMinStdDev == 0 {
		opts.RelMinStdDev = d.RelMinStdDev
	}
	if opts.MaxSeries == 0 {
		opts.MaxSeries = d.MaxSeries
	}
	if opts.SeriesTTL == 0 {
		opts.SeriesTTL = d.SeriesTTL
	}
	if opts.Now == nil {
		opts.Now = time.Now
	}
	switch {
	case !(opts.Alpha > 0 && opts.Alpha <= 1):
		return nil, fmt.Errorf("analysis: alpha %v is outside (0, 1]", opts.Alpha)
	case opts.Window < 2:
		return nil, fmt.Errorf("analysis: window %d is below 2", opts.Window)
	case opts.MinPoints < 2:
		return nil, fmt.Errorf("analysis: min points %d is below 2", opts.MinPoints)
	case !(opts.ExitThreshold > 0 && opts.ExitThreshold <= opts.Threshold && opts.Threshold <= opts.CriticalZ):
		return nil, fmt.Errorf("analysis: want 0 < exit threshold (%v) <= threshold (%v) <= critical z (%v)", opts.ExitThreshold, opts.Threshold, opts.CriticalZ)
	case opts.ExitPoints < 1:
		return nil, fmt.Errorf("analysis: exit points %d is below 1", opts.ExitPoints)
	case opts.MinStdDev < 0 || opts.RelMinStdDev < 0:
		return nil, fmt.Errorf("analysis: min std dev %v and relative min std dev %v must not be negative", opts.MinStdDev, opts.RelMinStdDev)
	case opts.MaxSeries < 1:
		return nil, fmt.Errorf("analysis: max series %d is below 1", opts.MaxSeries)
	case opts.SeriesTTL < 0:
		return nil, fmt.Errorf("analysis: series ttl %s is negative", opts.SeriesTTL)
	}
	return &Detector{opts: opts, series: map[key]*series{}, lru: list.New(), active: map[key]*series{}}, nil
}

// Observe scores one stored snapshot from the live path (it satisfies
// live.Observer; live.Sample is storage.Sample).
func (d *Detector) Observe(hostID string, labels map[string]string, ts int64, samples []storage.Sample) {
	var evs []Event
	d.mu.Lock()
	now := d.opts.Now()
	evs = d.expireIdle(now, evs) // first, so idle detectors go before live ones are evicted
	for _, s := range samples {
		if d.selected(s.Series) {
			evs = d.add(key{hostID, s.Series}, s.Value, ts, now, evs)
		}
	}
	d.mu.Unlock()
	d.send(evs)
}

// Add scores one value of host's series at ts (Unix seconds).
func (d *Detector) Add(host, series string, value float64, ts int64) {
	d.mu.Lock()
	now := d.opts.Now()
	evs := d.expireIdle(now, nil)
	evs = d.add(key{host, series}, value, ts, now, evs)
	d.mu.Unlock()
	d.send(evs)
}

func (d *Detector) selected(s string) bool {
	if len(d.opts.Metrics) == 0 {
		return true
	}
	for _, p := range d.opts.Metrics {
		if strings.HasPrefix(s, p) {
			return true
		}
	}
	return false
}

func (d *Detector) add(k key, v float64, ts int64, now time.Time, evs []Event) []Event {
	if math.IsNaN(v) || math.IsInf(v, 0) {
		d.skipped.Add(1)
		return evs
	}
	d.points.Add(1)
	s := d.series[k]
	if s == nil {
		for len(d.series) >= d.opts.MaxSeries {
			evs = d.drop(d.lru.Back().Value.(*series), evs)
			d.evicted.Add(1)
		}
		resid, _ := algorithm.NewMovingStats(d.opts.Window) // Window validated in New
		ew, _ := algorithm.NewEWMA(d.opts.Alpha)
		s = &series{key: k, ewma: *ew, resid: resid}
		s.elem = d.lru.PushFront(s)
		d.series[k] = s
	} else {
		d.lru.MoveToFront(s.elem)
	}
	s.seen = now
	s.n++
	if s.n == 1 {
		s.ewma.Add(v)
		return evs
	}
	expected := s.ewma.Value()
	r := v - expected
	s.ewma.Add(v)
	if s.n <= d.opts.MinPoints {
		s.resid.Add(r)
		return evs
	}
	sigma := max(s.resid.StdDev(), d.opts.MinStdDev+d.opts.RelMinStdDev*math.Abs(expected))
	z := r / sigma
	az := math.Abs(z)
	if s.active == nil {
		if az < d.opts.Threshold {
			s.resid.Add(r)
			return evs
		}
		s.active = &Anomaly{Host: k.host, Series: k.series, Value: v, Expected: expected, Z: z, MaxZ: az,
			Started: ts, Updated: ts, Severity: d.severity(az)}
		s.normalRn = 0
		d.active[k] = s
		d.started.Add(1)
		return append(evs, Event{State: StateStarted, Anomaly: *s.active})
	}
	a := s.active
	a.Value, a.Expected, a.Z, a.Updated = v, expected, z, ts
	a.MaxZ = max(a.MaxZ, az)
	if az < d.opts.ExitThreshold {
		s.resid.Add(r)
		if s.normalRn++; s.normalRn >= d.opts.ExitPoints {
			s.active = nil
			delete(d.active, k)
			return append(evs, Event{State: StateResolved, Anomaly: *a})
		}
		return evs
	}
	s.normalRn = 0
	if sev := d.severity(a.MaxZ); sev != a.Severity {
		a.Severity = sev
		return append(evs, Event{State: StateUpdated, Anomaly: *a})
	}
	return evs
}

func (d *Detector) severity(az float64) Severity {
	if az >= d.opts.CriticalZ {
		return Critical
	}
	return Warning
}

// drop removes s, resolving its anomaly as evicted.
func (d *Detector) drop(s *series, evs []Event) []Event {
	d.lru.Remove(s.elem)
	delete(d.series, s.key)
	if s.active != nil {
		delete(d.active, s.key)
		evs = append(evs, Event{State: StateEvicted, Anomaly: *s.active})
	}
	return evs
}

// expireIdle drops detectors idle longer than SeriesTTL (oldest at the back).
func (d *Detector) expireIdle(now time.Time, evs []Event) []Event {
	for e := d.lru.Back(); e != nil; e = d.lru.Back() {
		s := e.Value.(*series)
		if now.Sub(s.seen) < d.opts.SeriesTTL {
			break
		}
		evs = d.drop(s, evs)
		d.expired.Add(1)
	}
	return evs
}

func (d *Detector) send(evs []Event) {
	if d.opts.Publish == nil {
		return
	}
	for _, ev := range evs {
		d.opts.Publish("anomaly", ev)
	}
}

// Active returns the active anomalies, filtered by host and by series
// (exact name, or a prefix when metric ends in "."), ordered by host then
// series. Empty filters match everything.
func (d *Detector) Active(host, metric string) []Anomaly {
	d.mu.Lock()
	evs := d.expireIdle(d.opts.Now(), nil)
	out := make([]Anomaly, 0, len(d.active))
	for k, s := range d.active {
		if (host == "" || k.host == host) && matchMetric(metric, k.series) {
			out = append(out, *s.active)
		}
	}
	d.mu.Unlock()
	d.send(evs)
	slices.SortFunc(out, func(a, b Anomaly) int {
		if c := strings.Compare(a.Host, b.Host); c != 0 {
			return c
		}
		return strings.Compare(a.Series, b.Series)
	})
	return out
}

// matchMetric matches a series against a filter: "" matches all, a filter
// ending in "." is a family prefix, otherwise the series name without
// labels or the full series key must equal it.
func matchMetric(filter, series string) bool {
	switch {
	case filter == "":
		return true
	case strings.HasSuffix(filter, "."):
		return strings.HasPrefix(series, filter)
	case series == filter:
		return true
	default:
		name, _, _ := strings.Cut(series, "{")
		return name == filter
	}
}

// Stats returns the detector's counters.
func (d *Detector) Stats() Stats {
	d.mu.Lock()
	n, a := len(d.series), len(d.active)
	d.mu.Unlock()
	return Stats{Series: n, Active: a, Points: d.points.Load(), Skipped: d.skipped.Load(),
		Evicted: d.evicted.Load(), Expired: d.expired.Load(), Anomalies: d.started.Load()}
}
