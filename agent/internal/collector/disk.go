package collector

import (
	"context"
	"fmt"
	"regexp"
	"time"

	monitorpb "github.com/monitorhq/monitor/proto"
)

// skipDevice matches block devices whose I/O is counted elsewhere
// (partitions, counted in their disk) or is not disk I/O (loop, ram, zram).
var skipDevice = regexp.MustCompile(`^(z?ram|loop|fd|sr|(h|s|v|xv)d[a-z]+|nvme\d+n\d+p|mmcblk\d+p)\d+$`)

// Disk reports I/O rates and utilisation per block device from
// /proc/diskstats (one read, no per-device lookups).
type Disk struct {
	paths Paths
	now   func() time.Time
	fr    fileReader
	rates *counterRates[diskKey]
	f     [][]byte
}

type diskKey struct {
	dev  string
	kind uint8
}

// diskstats columns (0-based, after major, minor, name) and what they
// become.
const (
	dReads        = 3  // reads completed
	dSectorsRead  = 5  // 512-byte sectors, whatever the device's sector size
	dWrites       = 7  // writes completed
	dSectorsWrite = 9  //
	dIOTicks      = 12 // milliseconds spent doing I/O
)

// NewDisk returns the disk collector; rates span window.
func NewDisk(paths Paths, window time.Duration) *Disk {
	return &Disk{paths: paths, now: time.Now, rates: newCounterRates[diskKey](window)}
}

// Name implements Collector.
func (*Disk) Name() string { return "disk" }

// Collect implements Collector.
func (d *Disk) Collect(ctx context.Context) ([]*monitorpb.Metric, error) {
	b, err := d.fr.read(d.paths.proc("diskstats"))
	if err != nil {
		return nil, fmt.Errorf("read disk counters: %w", err)
	}
	var out []*monitorpb.Metric
	n := monitorpb.Priority_PRIORITY_NORMAL
	d.rates.Begin(d.now())
	lines(b, func(line []byte) bool {
		d.f = fieldsInto(d.f, line)
		if len(d.f) <= dIOTicks {
			return true
		}
		var v [dIOTicks + 1]uint64
		for i := dReads; i <= dIOTicks; i++ {
			x, ok := atou(d.f[i])
			if !ok {
				return true
			}
			v[i] = x
		}
		name := d.f[2]
		if skipDevice.Match(name) || v[dReads]+v[dWrites] == 0 {
			return true
		}
		dev := string(name)
		rate := func(kind uint8, x uint64, unit float64) (float64, bool) {
			return d.rates.Rate(diskKey{dev, kind}, x, unit)
		}
		if r, ok := rate(0, v[dSectorsRead]*512, 512); ok {
			out = add(out, "disk.read_bytes_per_sec", "bytes/s", n, r, "device", dev)
		}
		if r, ok := rate(1, v[dSectorsWrite]*512, 512); ok {
			out = add(out, "disk.write_bytes_per_sec", "bytes/s", n, r, "device", dev)
		}
		if r, ok := rate(2, v[dReads], 1); ok {
			out = add(out, "disk.reads_per_sec", "ops/s", n, r, "device", dev)
		}
		if r, ok := rate(3, v[dWrites], 1); ok {
			out = add(out, "disk.writes_per_sec", "ops/s", n, r, "device", dev)
		}
		if r, ok := d.rates.Observe(diskKey{dev, 4}, v[dIOTicks]); ok {
			// ms of I/O per second of wall time: 1000 ms/s is 100 % busy.
			q := rateQuantum(1, r, d.rates.span()) / 10
			out = add(out, "disk.io_busy_percent", "%", n, round(min(100, r/10), decimals(q)), "device", dev)
		}
		return true
	})
	d.rates.Commit()
	return out, nil
}
