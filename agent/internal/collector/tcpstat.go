package collector

import (
	"bytes"
	"context"
	"errors"
	"fmt"
	"io/fs"
	"time"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// TCP reports the main TCP figures from the kernel's counters, in constant
// time whatever the number of sockets: established connections, TIME_WAIT,
// sockets in use and orphaned (/proc/net/sockstat, sockstat6), and
// connection opens and retransmissions per second (/proc/net/snmp). The
// exact count per state is the tcp_states collector's, at a higher cost.
type TCP struct {
	paths Paths
	now   func() time.Time
	fr    fileReader
	rates *counterRates[string]
}

// NewTCP returns the tcp collector; rates span window.
func NewTCP(paths Paths, window time.Duration) *TCP {
	return &TCP{paths: paths, now: time.Now, rates: newCounterRates[string](window)}
}

// Name implements Collector.
func (*TCP) Name() string { return "tcp" }

// Collect implements Collector.
func (c *TCP) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	n, low := monitorpb.Priority_PRIORITY_NORMAL, monitorpb.Priority_PRIORITY_LOW
	var out []*monitorpb.Metric

	snmp, err := c.fr.read(c.paths.proc("net", "snmp"))
	if err != nil {
		return nil, fmt.Errorf("read tcp counters: %w", err)
	}
	// Two "Tcp:" lines: the column names, then the values.
	var names, vals []byte
	lines(snmp, func(line []byte) bool {
		if rest, ok := bytes.CutPrefix(line, []byte("Tcp: ")); ok {
			if names == nil {
				names = rest
			} else {
				vals = rest
				return false
			}
		}
		return true
	})
	var est uint64
	var counters [3]uint64 // ActiveOpens, PassiveOpens, RetransSegs
	have := 0
	for i := 0; ; i++ {
		name := field(names, i)
		if name == nil {
			break
		}
		v, ok := atou(field(vals, i))
		if !ok {
			continue // MaxConn is -1
		}
		switch string(name) {
		case "CurrEstab":
			est = v
			have++
		case "ActiveOpens":
			counters[0] = v
		case "PassiveOpens":
			counters[1] = v
		case "RetransSegs":
			counters[2] = v
		}
	}
	if have == 0 {
		return nil, fmt.Errorf("/proc/net/snmp has no Tcp CurrEstab")
	}
	out = add(out, "net.tcp_established", "", n, float64(est))
	c.rates.Begin(c.now())
	for i, name := range []string{"net.tcp_active_opens_per_sec", "net.tcp_passive_opens_per_sec", "net.tcp_retransmits_per_sec"} {
		if rate, ok := c.rates.Rate(name, counters[i], 1); ok {
			out = add(out, name, "1/s", n, rate)
		}
	}
	c.rates.Commit()

	// "TCP: inuse 52 orphan 0 tw 599 alloc 57 mem 44"; sockstat6: "TCP6: inuse 3".
	var inuse, orphan, tw uint64
	b, err := c.fr.read(c.paths.proc("net", "sockstat"))
	if err != nil {
		return out, fmt.Errorf("read socket counts: %w", err)
	}
	lines(b, func(line []byte) bool {
		if bytes.HasPrefix(line, []byte("TCP: ")) {
			inuse, orphan, tw = keyed(line, "inuse"), keyed(line, "orphan"), keyed(line, "tw")
		}
		return true
	})
	if b, err := c.fr.read(c.paths.proc("net", "sockstat6")); err == nil {
		lines(b, func(line []byte) bool {
			if bytes.HasPrefix(line, []byte("TCP6: ")) {
				inuse += keyed(line, "inuse")
			}
			return true
		})
	} else if !errors.Is(err, fs.ErrNotExist) {
		return out, fmt.Errorf("read socket counts: %w", err)
	}
	out = add(out, "net.tcp_time_wait", "", n, float64(tw))
	out = add(out, "net.tcp_inuse", "", n, float64(inuse))
	out = add(out, "net.tcp_orphan", "", low, float64(orphan))
	return out, nil
}

// keyed returns the number after key in "NAME: key1 v1 key2 v2 …".
func keyed(line []byte, key string) uint64 {
	for i := 1; ; i += 2 {
		k := field(line, i)
		if k == nil {
			return 0
		}
		if string(k) == key {
			v, _ := atou(field(line, i+1))
			return v
		}
	}
}
