package collector

import (
	"context"
	"errors"
	"fmt"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// System reports open file descriptors (system-wide, /proc/sys/fs/file-nr)
// and uptime (/proc/uptime).
type System struct {
	paths Paths
	fr    fileReader
}

// NewSystem returns the system collector.
func NewSystem(paths Paths) *System { return &System{paths: paths} }

// Name implements Collector.
func (*System) Name() string { return "system" }

// Collect implements Collector.
func (c *System) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	var out []*monitorpb.Metric
	var errs []error
	n := monitorpb.Priority_PRIORITY_NORMAL
	if b, err := c.fr.read(c.paths.proc("sys", "fs", "file-nr")); err != nil {
		errs = append(errs, fmt.Errorf("read file handles: %w", err))
	} else {
		// "allocated  unused  max": unused is 0 on kernels since 2.6.
		alloc, ok1 := atou(field(b, 0))
		unused, ok2 := atou(field(b, 1))
		limit, ok3 := atou(field(b, 2))
		if !ok1 || !ok2 || !ok3 {
			errs = append(errs, fmt.Errorf("/proc/sys/fs/file-nr: cannot parse %q", b))
		} else {
			open := alloc - min(unused, alloc)
			out = add(out, "system.open_fds", "", n, float64(open))
			out = add(out, "system.max_fds", "", n, float64(limit))
			out = add(out, "system.fds_used_percent", "%", n, round(percent(float64(open), float64(limit)), gaugePercentDecimals))
		}
	}
	if b, err := c.fr.read(c.paths.proc("uptime")); err != nil {
		errs = append(errs, fmt.Errorf("read uptime: %w", err))
	} else if up, ok := atof(field(b, 0)); !ok {
		errs = append(errs, fmt.Errorf("/proc/uptime: cannot parse %q", b))
	} else {
		out = add(out, "system.uptime_seconds", "seconds", n, up)
	}
	return out, errors.Join(errs...)
}
