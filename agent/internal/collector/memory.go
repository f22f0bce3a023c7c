package collector

import (
	"context"
	"fmt"

	"github.com/shirou/gopsutil/v4/mem"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// Memory reports physical memory and swap.
type Memory struct{}

// NewMemory returns the memory collector.
func NewMemory() *Memory { return &Memory{} }

// Name implements Collector.
func (*Memory) Name() string { return "memory" }

// Collect implements Collector. Used memory is total − available, as
// free(1) computes it: page cache the kernel can reclaim is not "used".
func (*Memory) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("read memory: %w", err)
	}
	var out []*monitorpb.Metric
	used := vm.Total - min(vm.Available, vm.Total)
	h, n := monitorpb.Priority_PRIORITY_HIGH, monitorpb.Priority_PRIORITY_NORMAL
	out = add(out, "mem.total_bytes", "bytes", n, float64(vm.Total))
	out = add(out, "mem.used_bytes", "bytes", h, float64(used))
	out = add(out, "mem.available_bytes", "bytes", h, float64(vm.Available))
	out = add(out, "mem.used_percent", "%", h, percent(float64(used), float64(vm.Total)))

	sw, err := mem.SwapMemoryWithContext(ctx)
	if err != nil {
		return out, fmt.Errorf("read swap: %w", err)
	}
	out = add(out, "swap.total_bytes", "bytes", n, float64(sw.Total))
	out = add(out, "swap.used_bytes", "bytes", n, float64(sw.Used))
	swapPct := 0.0
	if sw.Total > 0 {
		swapPct = percent(float64(sw.Used), float64(sw.Total))
	}
	out = add(out, "swap.used_percent", "%", n, swapPct)
	return out, nil
}
