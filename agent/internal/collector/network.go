package collector

import (
	"bytes"
	"context"
	"fmt"
	"time"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// Network reports traffic, error and drop rates per network interface
// (loopback excluded) from /proc/net/dev.
type Network struct {
	paths Paths
	now   func() time.Time
	fr    fileReader
	rates *counterRates[netKey]
	f     [][]byte
}

type netKey struct {
	iface string
	col   int
}

// netSeries are the /proc/net/dev columns reported (0-based after the
// interface name: 8 receive columns, then 8 transmit columns).
var netSeries = []struct {
	col        int
	name, unit string
	prio       monitorpb.Priority
}{
	{0, "net.rx_bytes_per_sec", "bytes/s", monitorpb.Priority_PRIORITY_NORMAL},
	{8, "net.tx_bytes_per_sec", "bytes/s", monitorpb.Priority_PRIORITY_NORMAL},
	{1, "net.rx_packets_per_sec", "packets/s", monitorpb.Priority_PRIORITY_NORMAL},
	{9, "net.tx_packets_per_sec", "packets/s", monitorpb.Priority_PRIORITY_NORMAL},
	{2, "net.rx_errors_per_sec", "packets/s", monitorpb.Priority_PRIORITY_LOW},
	{10, "net.tx_errors_per_sec", "packets/s", monitorpb.Priority_PRIORITY_LOW},
	{3, "net.rx_drops_per_sec", "packets/s", monitorpb.Priority_PRIORITY_LOW},
	{11, "net.tx_drops_per_sec", "packets/s", monitorpb.Priority_PRIORITY_LOW},
}

// NewNetwork returns the network collector; rates span window.
func NewNetwork(paths Paths, window time.Duration) *Network {
	return &Network{paths: paths, now: time.Now, rates: newCounterRates[netKey](window)}
}

// Name implements Collector.
func (*Network) Name() string { return "network" }

// Collect implements Collector.
func (c *Network) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	b, err := c.fr.read(c.paths.proc("net", "dev"))
	if err != nil {
		return nil, fmt.Errorf("read network counters: %w", err)
	}
	var out []*monitorpb.Metric
	c.rates.Begin(c.now())
	lines(b, func(line []byte) bool {
		i := bytes.IndexByte(line, ':')
		if i < 0 {
			return true // the two header lines
		}
		name := bytes.TrimSpace(line[:i])
		if string(name) == "lo" || len(name) == 0 {
			return true
		}
		c.f = fieldsInto(c.f, line[i+1:])
		if len(c.f) < 16 {
			return true
		}
		iface := string(name)
		for _, s := range netSeries {
			v, ok := atou(c.f[s.col])
			if !ok {
				continue
			}
			if r, ok := c.rates.Rate(netKey{iface, s.col}, v, 1); ok {
				out = add(out, s.name, s.unit, s.prio, r, "interface", iface)
			}
		}
		return true
	})
	c.rates.Commit()
	return out, nil
}
