package loadgen

import (
	"fmt"
	"math"

	"github.com/monitorhq/monitor/pkg/storage"
	monitorpb "github.com/monitorhq/monitor/proto"
)

// metricDef is one series of a simulated host: the agent's real names,
// units, labels and priorities (docs/metrics.md), with how its value moves.
type metricDef struct {
	name     string
	unit     string
	labels   map[string]string // shared by every snapshot; never modified
	priority monitorpb.Priority
	lo, hi   float64 // range of the value
	step     float64 // largest move per snapshot, as a share of hi-lo
	constant bool    // totals: the same every time
}

const (
	gib = float64(1 << 30)
	mib = float64(1 << 20)
)

// catalog returns n metric definitions: the agent's catalogue for a host
// with two mounts, two disks and one interface, then one
// cpu.core_usage_percent per core until there are n.
func catalog(n int) []metricDef {
	high, normal, low := monitorpb.Priority_PRIORITY_HIGH, monitorpb.Priority_PRIORITY_NORMAL, monitorpb.Priority_PRIORITY_LOW
	pct := func(name string, p monitorpb.Priority, lo, hi float64, labels map[string]string) metricDef {
		return metricDef{name: name, unit: "%", labels: labels, priority: p, lo: lo, hi: hi, step: 0.05}
	}
	var out []metricDef
	out = append(out,
		pct("cpu.usage_percent", high, 2, 95, nil),
		pct("cpu.user_percent", normal, 1, 70, nil),
		pct("cpu.system_percent", normal, 0.5, 25, nil),
		pct("cpu.iowait_percent", normal, 0, 10, nil),
		pct("cpu.steal_percent", normal, 0, 3, nil),
		pct("cpu.idle_percent", normal, 5, 98, nil),
		metricDef{name: "load.1", priority: high, lo: 0, hi: 16, step: 0.08},
		metricDef{name: "load.5", priority: normal, lo: 0, hi: 12, step: 0.03},
		metricDef{name: "load.15", priority: normal, lo: 0, hi: 10, step: 0.01},
		metricDef{name: "mem.total_bytes", unit: "bytes", priority: normal, lo: 16 * gib, hi: 16 * gib, constant: true},
		metricDef{name: "mem.used_bytes", unit: "bytes", priority: high, lo: 2 * gib, hi: 15 * gib, step: 0.01},
		metricDef{name: "mem.available_bytes", unit: "bytes", priority: high, lo: 1 * gib, hi: 14 * gib, step: 0.01},
		pct("mem.used_percent", high, 10, 95, nil),
		metricDef{name: "swap.total_bytes", unit: "bytes", priority: normal, lo: 2 * gib, hi: 2 * gib, constant: true},
		metricDef{name: "swap.used_bytes", unit: "bytes", priority: normal, lo: 0, hi: 512 * mib, step: 0.005},
		pct("swap.used_percent", normal, 0, 25, nil),
	)
	for _, mount := range []string{"/", "/var"} {
		l := map[string]string{"mount": mount}
		out = append(out,
			metricDef{name: "disk.total_bytes", unit: "bytes", labels: l, priority: normal, lo: 200 * gib, hi: 200 * gib, constant: true},
			metricDef{name: "disk.used_bytes", unit: "bytes", labels: l, priority: normal, lo: 20 * gib, hi: 190 * gib, step: 0.0005},
			pct("disk.used_percent", normal, 10, 95, l),
			pct("disk.inodes_used_percent", low, 1, 60, l),
		)
	}
	for _, dev := range []string{"sda", "nvme0n1"} {
		l := map[string]string{"device": dev}
		out = append(out,
			metricDef{name: "disk.read_bytes_per_sec", unit: "bytes/s", labels: l, priority: normal, lo: 0, hi: 200 * mib, step: 0.1},
			metricDef{name: "disk.write_bytes_per_sec", unit: "bytes/s", labels: l, priority: normal, lo: 0, hi: 150 * mib, step: 0.1},
			metricDef{name: "disk.reads_per_sec", unit: "ops/s", labels: l, priority: normal, lo: 0, hi: 5000, step: 0.1},
			metricDef{name: "disk.writes_per_sec", unit: "ops/s", labels: l, priority: normal, lo: 0, hi: 4000, step: 0.1},
		)
	}
	eth := map[string]string{"interface": "eth0"}
	out = append(out,
		metricDef{name: "net.rx_bytes_per_sec", unit: "bytes/s", labels: eth, priority: normal, lo: 0, hi: 120 * mib, step: 0.1},
		metricDef{name: "net.tx_bytes_per_sec", unit: "bytes/s", labels: eth, priority: normal, lo: 0, hi: 120 * mib, step: 0.1},
		metricDef{name: "net.rx_packets_per_sec", unit: "packets/s", labels: eth, priority: normal, lo: 0, hi: 90000, step: 0.1},
		metricDef{name: "net.tx_packets_per_sec", unit: "packets/s", labels: eth, priority: normal, lo: 0, hi: 90000, step: 0.1},
		metricDef{name: "net.rx_errors_per_sec", unit: "packets/s", labels: eth, priority: low, lo: 0, hi: 2, step: 0.2},
		metricDef{name: "net.tx_errors_per_sec", unit: "packets/s", labels: eth, priority: low, lo: 0, hi: 2, step: 0.2},
		metricDef{name: "net.rx_drops_per_sec", unit: "packets/s", labels: eth, priority: low, lo: 0, hi: 5, step: 0.2},
		metricDef{name: "net.tx_drops_per_sec", unit: "packets/s", labels: eth, priority: low, lo: 0, hi: 5, step: 0.2},
	)
	for core := 0; len(out) < n; core++ {
		out = append(out, pct("cpu.core_usage_percent", normal, 0, 100, map[string]string{"cpu": fmt.Sprintf("cpu%d", core)}))
	}
	return out[:n]
}

// rng is a per-host xorshift64* generator: cheap, no locks.
type rng uint64

func (r *rng) float() float64 {
	x := uint64(*r)
	x ^= x >> 12
	x ^= x << 25
	x ^= x >> 27
	*r = rng(x)
	return float64((x*2685821657736338717)>>11) / (1 << 53)
}

// initial returns a starting value for d somewhere in its range.
func (d *metricDef) initial(r *rng) float64 {
	if d.constant {
		return d.lo
	}
	return d.lo + (d.hi-d.lo)*(0.2+0.5*r.float())
}

// next moves v by a bounded random step, reflecting at the range's ends,
// so series wander like real ones instead of jumping.
func (d *metricDef) next(v float64, r *rng) float64 {
	if d.constant {
		return v
	}
	span := d.hi - d.lo
	v += (r.float() - 0.5) * 2 * d.step * span
	if v < d.lo {
		v = 2*d.lo - v
	}
	if v > d.hi {
		v = 2*d.hi - v
	}
	v = math.Max(d.lo, math.Min(d.hi, v))
	if span >= 1000 {
		v = math.Round(v) // byte and packet counts are whole
	} else {
		v = math.Round(v*100) / 100
	}
	return v
}

// Template makes the storage form of a simulated host's snapshot: the same
// series, units and value ranges the Generator sends over the wire, for
// writing the same data without the wire (the benchmark harness's raw
// Redis loop and direct store writes). It is safe for concurrent use.
type Template struct {
	defs   []metricDef
	series []string
	tags   map[string]string
}

// NewTemplate returns a template of metrics series per snapshot.
func NewTemplate(metrics int) (*Template, error) {
	t := &Template{defs: catalog(metrics), tags: map[string]string{"env": "loadgen"}}
	for _, d := range t.defs {
		key, err := storage.SeriesKey(d.name, d.labels)
		if err != nil {
			return nil, fmt.Errorf("series %s: %w", d.name, err)
		}
		t.series = append(t.series, key)
	}
	return t, nil
}

// Snapshot returns a snapshot of hostID at ts whose values are derived
// from seed (the same seed gives the same values).
func (t *Template) Snapshot(hostID string, ts int64, seed uint64) storage.Snapshot {
	r := rng(seed*0x9E3779B97F4A7C15 | 1)
	s := storage.Snapshot{HostID: hostID, Timestamp: ts, Tags: t.tags, Samples: make([]storage.Sample, len(t.defs))}
	for i := range t.defs {
		d := &t.defs[i]
		s.Samples[i] = storage.Sample{Series: t.series[i], Value: d.next(d.initial(&r), &r), Unit: d.unit}
	}
	return s
}
