package collector

import (
	"context"
	"fmt"
	"sort"
	"time"

	"github.com/shirou/gopsutil/v4/net"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// Network reports traffic, error and drop rates per network interface
// (loopback excluded).
type Network struct {
	r   rates
	now func() time.Time
}

// NewNetwork returns the network collector.
func NewNetwork() *Network { return &Network{now: time.Now} }

// Name implements Collector.
func (*Network) Name() string { return "network" }

// Collect implements Collector.
func (c *Network) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	ifs, err := net.IOCountersWithContext(ctx, true)
	if err != nil {
		return nil, fmt.Errorf("read network counters: %w", err)
	}
	sort.Slice(ifs, func(i, j int) bool { return ifs[i].Name < ifs[j].Name })
	n, low := monitorpb.Priority_PRIORITY_NORMAL, monitorpb.Priority_PRIORITY_LOW
	series := []struct {
		name, unit string
		prio       monitorpb.Priority
		value      func(s *net.IOCountersStat) uint64
	}{
		{"net.rx_bytes_per_sec", "bytes/s", n, func(s *net.IOCountersStat) uint64 { return s.BytesRecv }},
		{"net.tx_bytes_per_sec", "bytes/s", n, func(s *net.IOCountersStat) uint64 { return s.BytesSent }},
		{"net.rx_packets_per_sec", "packets/s", n, func(s *net.IOCountersStat) uint64 { return s.PacketsRecv }},
		{"net.tx_packets_per_sec", "packets/s", n, func(s *net.IOCountersStat) uint64 { return s.PacketsSent }},
		{"net.rx_errors_per_sec", "packets/s", low, func(s *net.IOCountersStat) uint64 { return s.Errin }},
		{"net.tx_errors_per_sec", "packets/s", low, func(s *net.IOCountersStat) uint64 { return s.Errout }},
		{"net.rx_drops_per_sec", "packets/s", low, func(s *net.IOCountersStat) uint64 { return s.Dropin }},
		{"net.tx_drops_per_sec", "packets/s", low, func(s *net.IOCountersStat) uint64 { return s.Dropout }},
	}
	var out []*monitorpb.Metric
	c.r.begin(c.now())
	for i := range ifs {
		s := &ifs[i]
		if s.Name == "lo" {
			continue
		}
		for _, m := range series {
			if r, ok := c.r.rate(s.Name+"/"+m.name, m.value(s)); ok {
				out = add(out, m.name, m.unit, m.prio, r, "interface", s.Name)
			}
		}
	}
	c.r.commit()
	return out, nil
}
