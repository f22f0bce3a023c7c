package topk

import (
	"math"
	"time"

	"github.com/monitorhq/monitor/visualization/topkshm"
)

// goCore is the pure-Go twin of the C++ engine (visualization/internal/cpp/
// topk.cc): the same structures — per metric a host index and two ordered
// sets, here treaps — the same change detection and the same shared-memory
// export, so both pass one test suite and produce identical segments.
type goCore struct {
	k          int
	ttl        int64 // nanoseconds
	maxMetrics int
	metrics    map[string]*gmetric
	byID       []*gmetric
	shm        *topkshm.Writer
	anyDirty   bool
}

type entry struct {
	host    string
	value   float64
	ts      int64
	inTop   bool
	byValue tnode
	byTime  tnode
}

type gmetric struct {
	name    string
	id      uint32
	hosts   map[string]*entry
	byValue treap   // best first: higher value, then lower host id
	byTime  treap   // oldest first, then lower host id
	cache   []Entry // the exported top K
	dirty   bool
}

func lessValue(a, b *entry) bool {
	if a.value != b.value {
		return a.value > b.value
	}
	return a.host < b.host
}

func lessTime(a, b *entry) bool {
	if a.ts != b.ts {
		return a.ts < b.ts
	}
	return a.host < b.host
}

func newGoCore(k int, ttl time.Duration, maxMetrics int, shmName string) (*goCore, error) {
	c := &goCore{k: k, ttl: int64(ttl), maxMetrics: maxMetrics, metrics: map[string]*gmetric{}}
	if shmName != "" {
		w, err := topkshm.Create(shmName, k, maxMetrics, ttl)
		if err != nil {
			return nil, err
		}
		c.shm = w
	}
	return c, nil
}

func (c *goCore) expired(ts, now int64) bool {
	// ts + ttl <= now, in nanoseconds, without overflow for any int64 ts.
	if ts > math.MaxInt64/int64(time.Second) {
		return false
	}
	if ts < math.MinInt64/int64(time.Second) {
		return true
	}
	return ts*int64(time.Second) <= now-c.ttl
}

func (c *goCore) update(metric, host string, value float64, ts, now int64) int64 {
	if math.IsNaN(value) || math.IsInf(value, 0) || metric == "" || len(metric) > maxMetricLen || host == "" || len(host) > maxHostLen {
		return resInvalid
	}
	if c.expired(ts, now) {
		return resStale
	}
	m := c.metrics[metric]
	if m == nil {
		if len(c.byID) >= c.maxMetrics {
			return resMetricsFull
		}
		m = &gmetric{name: metric, id: uint32(len(c.byID)), hosts: map[string]*entry{},
			byValue: newTreap(lessValue), byTime: newTreap(lessTime)}
		c.metrics[metric] = m
		c.byID = append(c.byID, m)
	}
	if e := m.hosts[host]; e != nil && ts < e.ts {
		return resStale
	}
	changed := c.expireMetric(m, now)
	e := m.hosts[host]
	wasTop := false
	if e == nil {
		e = &entry{host: host}
		e.byValue.e, e.byTime.e = e, e
		m.hosts[host] = e
	} else {
		wasTop = e.inTop
		m.byValue.remove(e)
		m.byTime.remove(e)
	}
	e.value, e.ts = value, ts
	m.byValue.insert(&e.byValue)
	m.byTime.insert(&e.byTime)
	if wasTop || c.ranksInTop(m, e) {
		changed = c.rebuild(m) || changed
	}
	res := int64(m.id) << 1
	if changed {
		res |= 1
	}
	return res
}

func (c *goCore) ranksInTop(m *gmetric, e *entry) bool {
	if len(m.cache) < c.k {
		return true
	}
	last := m.cache[len(m.cache)-1]
	if e.value != last.Value {
		return e.value > last.Value
	}
	return e.host < last.Host
}

// rebuild recomputes m's cache and reports whether it changed.
func (c *goCore) rebuild(m *gmetric) bool {
	for _, x := range m.cache {
		if e := m.hosts[x.Host]; e != nil {
			e.inTop = false
		}
	}
	next := make([]Entry, 0, c.k)
	m.byValue.ascend(func(e *entry) bool {
		e.inTop = true
		next = append(next, Entry{Host: e.host, Value: e.value, TS: e.ts})
		return len(next) < c.k
	})
	if equalCache(next, m.cache) {
		return false
	}
	m.cache = next
	m.dirty = true
	c.anyDirty = true
	return true
}

func equalCache(a, b []Entry) bool {
	if len(a) != len(b) {
		return false
	}
	for i := range a {
		if a[i] != b[i] {
			return false
		}
	}
	return true
}

func (c *goCore) expireMetric(m *gmetric, now int64) bool {
	touched := false
	for e := m.byTime.first(); e != nil && c.expired(e.ts, now); e = m.byTime.first() {
		touched = touched || e.inTop
		m.byTime.remove(e)
		m.byValue.remove(e)
		delete(m.hosts, e.host)
	}
	return touched && c.rebuild(m)
}

func (c *goCore) expire(now int64, changed []uint32) []uint32 {
	changed = changed[:0]
	for _, m := range c.byID {
		if c.expireMetric(m, now) {
			changed = append(changed, m.id)
		}
	}
	return changed
}

func (c *goCore) publish(now int64) {
	if c.shm == nil || !c.anyDirty {
		return
	}
	if c.shm.Begin() != nil {
		return // closed
	}
	for _, m := range c.byID {
		if !m.dirty {
			continue
		}
		m.dirty = false
		if len(m.name) > topkshm.NameWidth {
			continue // not exportable; the slot stays empty
		}
		// Cannot fail: ids are below maxMetrics, names and hosts fit, the
		// cache holds at most k entries.
		_ = c.shm.WriteSlot(int(m.id), m.name, m.cache)
	}
	c.shm.End(time.Unix(0, now))
	c.anyDirty = false
}

// Hosts the engine accepts fit the segment's host field.
var _ = [1]struct{}{}[max(0, maxHostLen-topkshm.HostWidth)]

func (c *goCore) top(id uint32, k int, dst []Entry) []Entry {
	if int(id) >= len(c.byID) || k <= 0 {
		return dst
	}
	n := 0
	c.byID[id].byValue.ascend(func(e *entry) bool {
		dst = append(dst, Entry{Host: e.host, Value: e.value, TS: e.ts})
		n++
		return n < k
	})
	return dst
}

func (c *goCore) hosts(id uint32) int {
	if int(id) >= len(c.byID) {
		return 0
	}
	return len(c.byID[id].hosts)
}

func (c *goCore) close() error {
	if c.shm == nil {
		return nil
	}
	return c.shm.Close()
}
