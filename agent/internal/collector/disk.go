package collector

import (
	"context"
	"errors"
	"fmt"
	"regexp"
	"sort"
	"strings"
	"time"

	"github.com/shirou/gopsutil/v4/disk"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// pseudoFS are filesystem types with no disk behind them (or whose usage
// says nothing about one), as node_exporter's default exclusions plus
// tmpfs/ramfs.
var pseudoFS = map[string]bool{
	"autofs": true, "binfmt_misc": true, "bpf": true, "cgroup": true, "cgroup2": true,
	"configfs": true, "debugfs": true, "devpts": true, "devtmpfs": true, "efivarfs": true,
	"erofs": true, "fuse.lxcfs": true, "fuse.gvfsd-fuse": true, "fuse.portal": true, "fusectl": true,
	"hugetlbfs": true, "iso9660": true, "mqueue": true, "nsfs": true, "overlay": true,
	"proc": true, "procfs": true, "pstore": true, "ramfs": true, "rpc_pipefs": true,
	"securityfs": true, "selinuxfs": true, "squashfs": true, "sysfs": true, "tmpfs": true,
	"tracefs": true, "none": true,
}

// skipMount matches mount points that are views of the system, not storage.
var skipMount = regexp.MustCompile(`^/(dev|proc|sys|run/credentials/.+|var/lib/docker/.+|var/lib/containers/storage/.+)($|/)`)

// skipDevice matches block devices whose I/O is counted elsewhere
// (partitions, counted in their disk) or is not disk I/O (loop, ram, zram).
var skipDevice = regexp.MustCompile(`^(z?ram|loop|fd|sr|(h|s|v|xv)d[a-z]+|nvme\d+n\d+p|mmcblk\d+p)\d+$`)

// Disk reports usage per mounted filesystem and I/O rates per block device.
type Disk struct {
	io  rates
	now func() time.Time
}

// NewDisk returns the disk collector.
func NewDisk() *Disk { return &Disk{now: time.Now} }

// Name implements Collector.
func (*Disk) Name() string { return "disk" }

// Collect implements Collector. A mount whose usage cannot be read (no
// permission, vanished) is left out and reported in the error; the other
// mounts and the I/O rates are still returned.
func (d *Disk) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	var out []*monitorpb.Metric
	var errs []error

	parts, err := disk.PartitionsWithContext(ctx, true)
	if err != nil {
		errs = append(errs, fmt.Errorf("list mounts: %w", err))
	}
	n, low := monitorpb.Priority_PRIORITY_NORMAL, monitorpb.Priority_PRIORITY_LOW
	for _, p := range usageMounts(parts) {
		if ctx.Err() != nil {
			return out, ctx.Err()
		}
		u, err := disk.UsageWithContext(ctx, p.Mountpoint)
		if err != nil {
			errs = append(errs, fmt.Errorf("usage of %s: %w", p.Mountpoint, err))
			continue
		}
		if u.Total == 0 {
			continue
		}
		mp := p.Mountpoint
		out = add(out, "disk.total_bytes", "bytes", n, float64(u.Total), "mount", mp)
		out = add(out, "disk.used_bytes", "bytes", n, float64(u.Used), "mount", mp)
		out = add(out, "disk.used_percent", "%", n, percent(float64(u.Used), float64(u.Used+u.Free)), "mount", mp)
		if u.InodesTotal > 0 {
			out = add(out, "disk.inodes_used_percent", "%", low, percent(float64(u.InodesUsed), float64(u.InodesTotal)), "mount", mp)
		}
	}

	counters, err := disk.IOCountersWithContext(ctx)
	if err != nil {
		errs = append(errs, fmt.Errorf("read disk counters: %w", err))
		return out, errors.Join(errs...)
	}
	names := make([]string, 0, len(counters))
	for name := range counters {
		if !skipDevice.MatchString(name) {
			names = append(names, name)
		}
	}
	sort.Strings(names)
	d.io.begin(d.now())
	for _, name := range names {
		c := counters[name]
		if r, ok := d.io.rate(name+"/rb", c.ReadBytes); ok {
			out = add(out, "disk.read_bytes_per_sec", "bytes/s", n, r, "device", name)
		}
		if r, ok := d.io.rate(name+"/wb", c.WriteBytes); ok {
			out = add(out, "disk.write_bytes_per_sec", "bytes/s", n, r, "device", name)
		}
		if r, ok := d.io.rate(name+"/r", c.ReadCount); ok {
			out = add(out, "disk.reads_per_sec", "ops/s", n, r, "device", name)
		}
		if r, ok := d.io.rate(name+"/w", c.WriteCount); ok {
			out = add(out, "disk.writes_per_sec", "ops/s", n, r, "device", name)
		}
	}
	d.io.commit()
	return out, errors.Join(errs...)
}

// usageMounts keeps the mounts worth a usage reading: real filesystems,
// outside system views, one mount per block device (bind mounts of the
// same filesystem report the same usage; the shortest mount point wins),
// in mount point order.
func usageMounts(parts []disk.PartitionStat) []disk.PartitionStat {
	byKey := map[string]disk.PartitionStat{}
	for _, p := range parts {
		if pseudoFS[p.Fstype] || strings.HasPrefix(p.Fstype, "cgroup") || p.Device == "none" ||
			p.Mountpoint == "" || skipMount.MatchString(p.Mountpoint) {
			continue
		}
		key := p.Mountpoint
		if strings.HasPrefix(p.Device, "/dev/") {
			key = p.Device
		}
		if old, ok := byKey[key]; !ok || len(p.Mountpoint) < len(old.Mountpoint) {
			byKey[key] = p
		}
	}
	out := make([]disk.PartitionStat, 0, len(byKey))
	for _, p := range byKey {
		out = append(out, p)
	}
	sort.Slice(out, func(i, j int) bool { return out[i].Mountpoint < out[j].Mountpoint })
	return out
}
