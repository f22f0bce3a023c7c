package collector

import (
	"context"
	"fmt"
	"runtime"

	"github.com/shirou/gopsutil/v4/cpu"
	"github.com/shirou/gopsutil/v4/host"
	"github.com/shirou/gopsutil/v4/mem"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// HostInfo reads what the agent registers about its host: hostname, OS,
// platform, kernel, architecture, logical CPU count, memory and boot time.
// The caller adds the host id, labels and agent version.
func HostInfo(ctx context.Context) (*monitorpb.HostInfo, error) {
	h, err := host.InfoWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("read host info: %w", err)
	}
	vm, err := mem.VirtualMemoryWithContext(ctx)
	if err != nil {
		return nil, fmt.Errorf("read memory size: %w", err)
	}
	platform := h.Platform
	if h.PlatformVersion != "" {
		platform += " " + h.PlatformVersion
	}
	cpus, err := cpu.CountsWithContext(ctx, true)
	if err != nil || cpus <= 0 {
		cpus = runtime.NumCPU()
	}
	arch := h.KernelArch
	if arch == "" {
		arch = runtime.GOARCH
	}
	return &monitorpb.HostInfo{
		Hostname:    h.Hostname,
		Os:          h.OS,
		Platform:    platform,
		Kernel:      h.KernelVersion,
		Arch:        arch,
		CpuCount:    uint32(cpus),
		MemoryBytes: vm.Total,
		BootTime:    int64(h.BootTime),
	}, nil
}
