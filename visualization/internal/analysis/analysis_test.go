package analysis

import (
	"context"
	"encoding/json"
	"errors"
	"math"
	"math/rand/v2"
	"net/http"
	"net/http/httptest"
	"strings"
	"sync"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

type recorder struct {
	mu  sync.Mutex
	evs []Event
}

func (r *recorder) publish(kind string, payload any) {
	if kind != "anomaly" {
		panic(kind)
	}
	r.mu.Lock()
	r.evs = append(r.evs, payload.(Event))
	r.mu.Unlock()
}

func (r *recorder) states() []string {
	r.mu.Lock()
	defer r.mu.Unlock()
	var out []string
	for _, e := range r.evs {
		out = append(out, e.State)
	}
	return out
}

func newDetector(t *testing.T, o Options) (*Detector, *recorder) {
	t.Helper()
	rec := &recorder{}
	o.Publish = rec.publish
	d, err := New(o)
	if err != nil {
		t.Fatal(err)
	}
	return d, rec
}

// TestStepChangeIsFlaggedAndEnds feeds a noisy level that steps up by 10σ:
// the step must start an anomaly within 2 points and, the EWMA having
// moved to the new level, end within 40.
func TestStepChangeIsFlaggedAndEnds(t *testing.T) {
	d, rec := newDetector(t, Options{})
	rng := rand.New(rand.NewPCG(11, 12))
	const step = 200
	startAt, endAt := -1, -1
	for i := range 400 {
		v := 50 + rng.NormFloat64()
		if i >= step {
			v += 10
		}
		d.Add("h1", "cpu.usage", v, int64(1_700_000_000+i))
		n := len(rec.states())
		if startAt < 0 && n > 0 {
			startAt = i
			if rec.evs[0].State != StateStarted || rec.evs[0].Anomaly.Started != int64(1_700_000_000+i) {
				t.Fatalf("first event %+v", rec.evs[0])
			}
			if got := d.Active("h1", "cpu."); len(got) != 1 || got[0].Expected > 52 {
				t.Fatalf("active %+v", got)
			}
		}
		if endAt < 0 && n > 0 && rec.evs[n-1].State == StateResolved {
			endAt = i
		}
	}
	if startAt < step || startAt > step+1 {
		t.Fatalf("step at %d flagged at %d (events %v)", step, startAt, rec.states())
	}
	if endAt < 0 || endAt > step+40 {
		t.Fatalf("step anomaly ended at %d, want by %d (events %v)", endAt, step+40, rec.states())
	}
	if len(d.Active("", "")) != 0 {
		t.Fatal("anomaly still active")
	}
}

// TestSpikeIsCritical checks a 50σ spike is flagged critical at once and
// resolves when the series returns to normal.
func TestSpikeIsCritical(t *testing.T) {
	d, rec := newDetector(t, Options{})
	rng := rand.New(rand.NewPCG(5, 6))
	for i := range 100 {
		v := 20 + rng.NormFloat64()
		if i == 60 {
			v += 50
		}
		d.Add("h", "mem.used_percent", v, int64(i))
	}
	if len(rec.evs) != 2 || rec.evs[0].State != StateStarted || rec.evs[0].Anomaly.Severity != Critical || rec.evs[1].State != StateResolved {
		t.Fatalf("events %+v", rec.evs)
	}
	if a := rec.evs[0].Anomaly; a.Started != 60 || a.Z < 8 || math.Abs(a.Expected-20) > 2 {
		t.Fatalf("anomaly %+v", a)
	}
}

// TestStationaryNoiseFewFalsePositives bounds the false alarms on 50
// stationary Gaussian series of 2,000 points each (fixed seed): fewer than
// one anomaly per 2,000 points.
func TestStationaryNoiseFewFalsePositives(t *testing.T) {
	d, _ := newDetector(t, Options{})
	rng := rand.New(rand.NewPCG(21, 22))
	const series, points = 50, 2000
	for s := range series {
		level, sd := rng.Float64()*100, 0.1+rng.Float64()*5
		name := "disk.busy{device=d" + string(rune('a'+s%26)) + string(rune('a'+s/26)) + "}"
		for i := range points {
			d.Add("h", name, level+sd*rng.NormFloat64(), int64(i))
		}
	}
	st := d.Stats()
	t.Logf("false positives: %d anomalies in %d points", st.Anomalies, st.Points)
	if st.Anomalies > series*points/2000 {
		t.Fatalf("%d anomalies on stationary noise, want at most %d", st.Anomalies, series*points/2000)
	}
}

func TestStateIsBounded(t *testing.T) {
	clk := time.Unix(1_700_000_000, 0)
	d, rec := newDetector(t, Options{MaxSeries: 3, SeriesTTL: time.Minute, Now: func() time.Time { return clk }})
	// An active anomaly on s0.
	for i := range 20 {
		d.Add("h", "s0", float64(i%2), int64(i))
	}
	d.Add("h", "s0", 1000, 20)
	if got := d.Stats().Active; got != 1 {
		t.Fatalf("active %d", got)
	}
	for _, s := range []string{"s1", "s2", "s3"} { // s3 evicts s0 (least recently updated)
		d.Add("h", s, 1, 0)
	}
	st := d.Stats()
	if st.Series != 3 || st.Evicted != 1 || st.Active != 0 {
		t.Fatalf("stats %+v", st)
	}
	if s := rec.states(); s[len(s)-1] != StateEvicted {
		t.Fatalf("events %v", s)
	}
	d.Add("h", "s1", math.NaN(), 1)
	clk = clk.Add(2 * time.Minute)
	d.Add("h", "s4", 1, 1) // the others are idle past the TTL
	if st := d.Stats(); st.Series != 1 || st.Expired != 3 || st.Skipped != 1 {
		t.Fatalf("stats %+v", st)
	}
}

func TestOptionsAreValidated(t *testing.T) {
	for _, o := range []Options{{Alpha: 2}, {Window: 1}, {MinPoints: 1}, {Threshold: 10, CriticalZ: 5}, {ExitThreshold: 5, Threshold: 4}, {ExitPoints: -1}, {MaxSeries: -1}, {MinStdDev: -1}, {SeriesTTL: -time.Second}} {
		if _, err := New(o); err == nil {
			t.Errorf("options %+v accepted", o)
		}
	}
}

func TestHandleAnomalies(t *testing.T) {
	d, _ := newDetector(t, Options{})
	for _, k := range []struct{ host, series string }{{"a", "cpu.usage"}, {"a", "net.rx{iface=eth0}"}, {"b", "cpu.usage"}} {
		for i := range 20 {
			d.Observe(k.host, nil, int64(i), []storage.Sample{{Series: k.series, Value: float64(i % 2)}})
		}
		d.Observe(k.host, nil, 20, []storage.Sample{{Series: k.series, Value: 100}})
	}
	cases := []struct {
		query string
		code  int
		n     int
	}{
		{"", 200, 3},
		{"host=a", 200, 2},
		{"metric=cpu.", 200, 2},
		{"metric=net.rx", 200, 1},
		{"metric=net.rx{iface=eth0}", 200, 1},
		{"host=b&metric=net.", 200, 0},
		{"host=bad:host", 400, 0},
	}
	for _, c := range cases {
		rec := httptest.NewRecorder()
		d.HandleAnomalies(rec, httptest.NewRequest("GET", "/api/v1/anomalies?"+c.query, nil))
		if rec.Code != c.code {
			t.Fatalf("%s: %d %s", c.query, rec.Code, rec.Body)
		}
		if c.code != 200 {
			continue
		}
		var body AnomaliesResponse
		if err := json.Unmarshal(rec.Body.Bytes(), &body); err != nil || len(body.Anomalies) != c.n {
			t.Fatalf("%s: %s (%v), want %d", c.query, rec.Body, err, c.n)
		}
	}
}

// fakeRange is a RangeReader over a function of time.
type fakeRange struct {
	f    func(ts int64) float64
	step int64
	err  error
	got  [2]int64
}

func (r *fakeRange) Range(_ context.Context, host, series string, from, to int64) ([]Point, error) {
	r.got = [2]int64{from, to}
	if r.err != nil {
		return nil, r.err
	}
	var pts []Point
	for ts := from; ts <= to; ts += r.step {
		pts = append(pts, Point{TS: ts, Value: r.f(ts)})
	}
	return pts, nil
}

func TestTrend(t *testing.T) {
	now := time.Unix(1_700_003_600, 0)
	line := &fakeRange{f: func(ts int64) float64 { return 2.5*float64(ts-1_700_000_000) + 7 }, step: 10}
	cases := []struct {
		name   string
		reader *fakeRange
		path   string
		code   int
		check  func(t *testing.T, r TrendResponse)
	}{
		{"known line", line, "/api/v1/hosts/h1/trend?metric=cpu.usage&window=1h", 200, func(t *testing.T, r TrendResponse) {
			if r.SlopePerSecond != 2.5 || r.SlopePerHour != 9000 || r.Points != 361 || r.From != 1_700_000_000 || math.Abs(r.Intercept-7) > 1e-9 || r.R2 != 1 {
				t.Fatalf("%+v", r)
			}
		}},
		{"seconds window", line, "/api/v1/hosts/h1/trend?metric=cpu.usage&window=600", 200, func(t *testing.T, r TrendResponse) {
			if r.From != 1_700_003_000 || r.SlopePerSecond != 2.5 {
				t.Fatalf("%+v", r)
			}
		}},
		{"default window", line, "/api/v1/hosts/h1/trend?metric=net.rx{iface=eth0}", 200, nil},
		{"no metric", line, "/api/v1/hosts/h1/trend", 400, nil},
		{"bad metric", line, "/api/v1/hosts/h1/trend?metric=cpu{", 400, nil},
		{"bad window", line, "/api/v1/hosts/h1/trend?metric=cpu&window=forever", 400, nil},
		{"window too long", line, "/api/v1/hosts/h1/trend?metric=cpu&window=200h", 400, nil},
		{"bad host", line, "/api/v1/hosts/-h/trend?metric=cpu", 400, nil},
		{"one point", &fakeRange{f: func(int64) float64 { return 1 }, step: 1 << 40}, "/api/v1/hosts/h1/trend?metric=cpu", 422, nil},
		{"reader fails", &fakeRange{err: errors.New("broker down")}, "/api/v1/hosts/h1/trend?metric=cpu", 502, nil},
		{"reader times out", &fakeRange{err: context.DeadlineExceeded}, "/api/v1/hosts/h1/trend?metric=cpu", 504, nil},
	}
	for _, c := range cases {
		t.Run(c.name, func(t *testing.T) {
			mux := http.NewServeMux()
			mux.HandleFunc("GET /api/v1/hosts/{id}/trend", NewTrend(c.reader, func() time.Time { return now }, 0).Handle)
			rec := httptest.NewRecorder()
			mux.ServeHTTP(rec, httptest.NewRequest("GET", c.path, nil))
			if rec.Code != c.code {
				t.Fatalf("%d %s, want %d", rec.Code, rec.Body, c.code)
			}
			if c.code != 200 {
				if !strings.Contains(rec.Body.String(), `"error"`) {
					t.Fatalf("body %s", rec.Body)
				}
				return
			}
			var r TrendResponse
			if err := json.Unmarshal(rec.Body.Bytes(), &r); err != nil {
				t.Fatal(err)
			}
			if c.check != nil {
				c.check(t, r)
			}
		})
	}
}
