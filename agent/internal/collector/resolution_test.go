package collector

import (
	"context"
	"math"
	"path/filepath"
	"testing"
	"time"

	"github.com/monitorhq/monitor/pkg/storage"
)

func TestRound(t *testing.T) {
	for _, c := range []struct {
		name string
		v    float64
		d    int
		want float64
	}{
		{"NaN passes through", math.NaN(), 2, math.NaN()},
		{"+Inf passes through", math.Inf(1), 2, math.Inf(1)},
		{"-Inf passes through", math.Inf(-1), -3, math.Inf(-1)},
		{"division noise goes", 100.0 / 3, 2, 33.33},
		{"rounds to nearest", 2.0 / 3, 2, 0.67},
		{"a short decimal stays", 0.1, 2, 0.1},
		{"an integer stays", 42, 2, 42},
		{"negative", -100.0 / 3, 2, -33.33},
		{"negative to tens", -1234.5, -1, -1230},
		{"tiny to zero", 1e-9, 2, 0},
		{"tiny negative to +0, not -0", -1e-9, 2, 0},
		{"-0 to +0", math.Copysign(0, -1), 2, 0},
		{"tiny kept at its scale", 1.0 / 3 * 1e-6, 9, 0.000000333},
		{"large rate to hundreds", 3200012345.678, -2, 3200012300},
		{"large rate to tens of thousands", 3200012345.678, -4, 3200010000},
		{"too large for the decimals asked: unchanged", 1e17 + 64, 2, 1e17 + 64},
		{"decimals clamped to 15", 1.0 / 3, 40, 0.333333333333333},
		{"decimals clamped to -15", 4e14, -40, 0},
		{"a value below half the step goes to 0", 499, -3, 0},
		{"a value above half the step rounds up", 501, -3, 1000},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := round(c.v, c.d)
			if math.IsNaN(c.want) {
				if !math.IsNaN(got) {
					t.Fatalf("round(%v, %d) = %v, want NaN", c.v, c.d, got)
				}
				return
			}
			if got != c.want || math.Signbit(got) != math.Signbit(c.want) {
				t.Fatalf("round(%v, %d) = %v, want %v", c.v, c.d, got, c.want)
			}
			// What the rounding is for: storage codes it as a decimal.
			if k := min(max(c.d, 0), maxDecimals); math.Abs(got) < 1<<53 && got != c.v {
				if _, ok := storage.DecimalAt(got, k); !ok {
					t.Fatalf("round(%v, %d) = %v is not a decimal with %d digits", c.v, c.d, got, k)
				}
			}
		})
	}
}

func TestDecimals(t *testing.T) {
	for _, c := range []struct {
		name string
		q    float64
		want int
	}{
		{"one jiffy of 2 CPUs over 5 s (0.1 %): 0.001", 0.1, 3},
		{"one jiffy of a CPU over 5 s (0.2 %): 0.01", 0.2, 2},
		{"one count over 1 s: 0.01", 1, 2},
		{"one count over 5 s: 0.01", 0.2, 2},
		{"one count over 60 s: 0.001", 1.0 / 60, 3},
		{"one count over an hour: 0.00001", 1.0 / 3600, 5},
		{"one sector over 5 s (102.4 B/s): 1", 512.0 / 5, 0},
		{"one page over 2 s (2048 B/s): 100", 2048, -2},
		{"huge quantum clamped", 1e30, -maxDecimals},
		{"tiny quantum clamped", 1e-30, maxDecimals},
		{"zero: no span, keep all", 0, maxDecimals},
		{"negative: keep all", -1, maxDecimals},
		{"NaN: keep all", math.NaN(), maxDecimals},
		{"+Inf: keep all", math.Inf(1), maxDecimals},
	} {
		t.Run(c.name, func(t *testing.T) {
			if got := decimals(c.q); got != c.want {
				t.Fatalf("decimals(%v) = %d, want %d", c.q, got, c.want)
			}
		})
	}
}

func TestRateQuantum(t *testing.T) {
	for _, c := range []struct {
		name             string
		unit, rate       float64
		span             time.Duration
		want             float64
		wantSignificance int // significant digits the rounded rate keeps, 0: not checked
	}{
		{"one count over 5 s", 1, 100, 5 * time.Second, 0.2, 0},
		{"one sector over 1 s", 512, 1e6, time.Second, 512, 0},
		{"a large rate over 5 s: the read's jitter dominates", 1, 3.2e9, 5 * time.Second, 3.2e9 * 1e-5 / 5, 8},
		{"a large rate over 1 s", 1, 3.2e9, time.Second, 3.2e9 * 1e-5, 7},
		{"a negative rate counts by its size", 1, -3.2e9, 5 * time.Second, 3.2e9 * 1e-5 / 5, 8},
		{"no span: no quantum", 1, 100, 0, math.NaN(), 0},
	} {
		t.Run(c.name, func(t *testing.T) {
			got := rateQuantum(c.unit, c.rate, c.span)
			if math.IsNaN(c.want) != math.IsNaN(got) || (!math.IsNaN(c.want) && math.Abs(got-c.want) > 1e-9*c.want) {
				t.Fatalf("rateQuantum(%v, %v, %s) = %v, want %v", c.unit, c.rate, c.span, got, c.want)
			}
			if c.wantSignificance > 0 {
				d := decimals(got)
				sig := int(math.Floor(math.Log10(math.Abs(c.rate)))) + 1 + d
				if sig != c.wantSignificance {
					t.Fatalf("a rate of %v keeps %d significant digits, want %d", c.rate, sig, c.wantSignificance)
				}
			}
		})
	}
}

// TestCounterRatesSpan checks the span a rate is rounded for: the time
// since the last committed reading, or the window when that is longer.
func TestCounterRatesSpan(t *testing.T) {
	t0 := time.Unix(1000, 0)
	for _, c := range []struct {
		name   string
		window time.Duration
		want   float64 // 7 counts over 3 s
	}{
		{"window 0: the previous reading (one count over 3 s: 0.01)", 0, 2.33},
		{"a 60 s window may span 60 s (0.001)", time.Minute, 2.333},
	} {
		t.Run(c.name, func(t *testing.T) {
			r := newCounterRates[string](c.window)
			r.Begin(t0)
			if _, ok := r.Rate("x", 100, 1); ok {
				t.Fatal("a rate on the first reading")
			}
			if r.span() != 0 {
				t.Fatalf("span on the first reading = %s", r.span())
			}
			r.Commit()
			r.Begin(t0.Add(3 * time.Second))
			got, ok := r.Rate("x", 107, 1)
			if !ok || got != c.want {
				t.Fatalf("rate = %v, %v; want %v", got, ok, c.want)
			}
		})
	}

	// A reading that is not committed (its collector failed) does not
	// count as the previous one.
	r := newCounterRates[string](0)
	r.Begin(t0)
	r.Commit()
	r.Begin(t0.Add(5 * time.Second)) // abandoned
	r.Begin(t0.Add(10 * time.Second))
	if got := r.span(); got != 10*time.Second {
		t.Fatalf("span after an uncommitted reading = %s, want 10s", got)
	}
}

// TestCPUSharesAtTheirResolution: shares whose exact value is a long
// fraction come out rounded to their jiffy's resolution.
func TestCPUSharesAtTheirResolution(t *testing.T) {
	p := tree(t, map[string]string{
		"proc/stat":    "cpu  0 0 0 0 0 0 0 0 0 0\ncpu0 0 0 0 0 0 0 0 0 0 0\nctxt 0\nintr 0\n",
		"proc/loadavg": "0.50 0.25 0.10 3/200 999\n",
	})
	clk := &clock{time.Unix(1000, 0)}
	c := NewCPU(p, 0)
	c.now = clk.now
	if _, err := c.Collect(context.Background()); err != nil {
		t.Fatal(err)
	}
	// 3 s later: 300 jiffies (one is 0.33 %: rounded to 0.01), 1/3 user,
	// 2/3 idle; 7 context switches (one over 3 s is 0.33/s: 0.01).
	write(t, filepath.Dir(p.Proc), map[string]string{"proc/stat": "cpu  100 0 0 200 0 0 0 0 0 0\ncpu0 100 0 0 200 0 0 0 0 0 0\nctxt 7\nintr 0\n"})
	clk.t = clk.t.Add(3 * time.Second)
	ms, err := c.Collect(context.Background())
	if err != nil {
		t.Fatal(err)
	}
	got := values(t, ms)
	for k, want := range map[string]float64{
		"cpu.usage_percent": 33.33, "cpu.user_percent": 33.33, "cpu.idle_percent": 66.67,
		"cpu.core_usage_percent{cpu=cpu0}": 33.33, "cpu.core_idle_percent{cpu=cpu0}": 66.67,
		"cpu.context_switches_per_sec": 2.33,
	} {
		if got[k] != want { // exactly: the float64 nearest the decimal
			t.Errorf("%s = %v, want %v", k, got[k], want)
		}
	}
}

// BenchmarkRound is what rounding adds per derived value: its step from a
// rate's quantum, then the rounding.
func BenchmarkRound(b *testing.B) {
	b.ReportAllocs()
	v := 12345.678901234
	var sink float64
	for b.Loop() {
		sink += round(v, decimals(rateQuantum(512, v, 5*time.Second)))
		v += 0.001
	}
	_ = sink
}
