package api

import (
	"net/url"
	"testing"
	"time"
)

// FuzzParseRangeQuery feeds raw query strings of GET
// /api/v1/hosts/{id}/metrics to the parameter parser: it must never panic,
// every refusal names something, and what it accepts respects the limits —
// from ≤ to, the span within max_range, at most max_points per series, every
// name a valid selector.
func FuzzParseRangeQuery(f *testing.F) {
	for _, q := range []string{
		"names=cpu.usage_percent&from=1800000000&to=1800003600&step=60",
		"names=net.rx_bytes_per_sec{interface=eth0},cpu.*&from=2026-01-01T00:00:00Z&to=now",
		"names=cpu.usage_percent&step=1m&from=-1h",
		"names=%7B%7D&from=9223372036854775807&to=-9223372036854775808&step=-1",
		"names=a,,b&step=0",
		"",
	} {
		f.Add("web-1", q)
	}
	f.Add("bad:host", "names=x")
	const maxRange, maxPoints = 7 * 24 * time.Hour, 11000
	now := time.Unix(1_800_000_000, 0)
	a := &API{cfg: Options{MaxRange: maxRange, MaxPoints: maxPoints, Now: func() time.Time { return now }}}
	f.Fuzz(func(t *testing.T, id, raw string) {
		q, err := url.ParseQuery(raw)
		if err != nil {
			return
		}
		rq, err := a.parseRangeQuery(id, q)
		if err != nil {
			if err.Error() == "" {
				t.Fatal("an error without a message")
			}
			return
		}
		if rq.from > rq.to || rq.to-rq.from > int64(maxRange/time.Second) || rq.step < 0 {
			t.Fatalf("%q accepted as from %d to %d step %d", raw, rq.from, rq.to, rq.step)
		}
		points := rq.to - rq.from + 1
		if rq.step > 0 {
			points = ceilDiv(rq.to-rq.from, rq.step) + 1
		}
		if points > maxPoints {
			t.Fatalf("%q accepted with %d points per series", raw, points)
		}
		for _, n := range rq.names {
			if err := checkSelector(n); err != nil {
				t.Fatalf("%q accepted name %q: %v", raw, n, err)
			}
		}
	})
}
