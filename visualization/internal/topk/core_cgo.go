//go:build cgo

package topk

import (
	"time"

	"github.com/monitorhq/monitor/visualization/internal/cpp"
)

// Implementation names the engine New uses in this build ("c++17" or "go").
const Implementation = "c++17"

func newCore(k int, ttl time.Duration, maxMetrics int, shmName string) (core, error) {
	e, err := cpp.New(k, ttl, maxMetrics, shmName)
	if err != nil {
		return nil, err
	}
	return &cppCore{e: e}, nil
}

// cppCore adapts the C++ engine's binding to core.
type cppCore struct{ e *cpp.Engine }

func (c *cppCore) update(metric, host string, value float64, ts, now int64) int64 {
	return c.e.Update(metric, host, value, ts, now)
}

func (c *cppCore) expire(now int64, changed []uint32) []uint32 { return c.e.Expire(now, changed) }
func (c *cppCore) publish(now int64)                           { c.e.Publish(now) }
func (c *cppCore) hosts(id uint32) int                         { return c.e.Len(id) }
func (c *cppCore) close() error                                { c.e.Close(); return nil }

func (c *cppCore) top(id uint32, k int, dst []Entry) []Entry {
	c.e.Top(id, k, func(host []byte, value float64, ts int64) {
		dst = append(dst, Entry{Host: string(host), Value: value, TS: ts})
	})
	return dst
}

// The result codes are one contract between the two engines.
var _ = [1]struct{}{}[resInvalid-cpp.ErrInvalid]
var _ = [1]struct{}{}[resStale-cpp.ErrStale]
var _ = [1]struct{}{}[resMetricsFull-cpp.ErrMetricsFull]
var _ = [1]struct{}{}[maxHostLen-cpp.MaxHostLen]
var _ = [1]struct{}{}[maxMetricLen-cpp.MaxMetricLen]
